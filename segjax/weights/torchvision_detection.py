"""torchvision.models.detection maskrcnn_resnet50_fpn / fasterrcnn_resnet50_fpn -> segjax "mask_rcnn" / "faster_rcnn".

The config reproduces torchvision's defaults (`segjax.models.mask_rcnn.model_config`: its anchors, RPN and RoI
settings, box coder weights, aligned=False RoIAlign, ImageNet normalisation). torchvision also resizes every
image to a short side of 800 (max 1333); segjax models take the batch at its given size, so resize the input
as torchvision would (or compare on an image torchvision leaves at its size). Its labels are COCO's category ids
(config.category_ids = 1..90): with a data set, `segjax.models.thing_label_map` maps them to its thing labels.

Layouts beyond the generic ones: Linear weights [O, I] -> Dense kernels [I, O], fc6 reading the RoI features
flattened (C, H, W) by torch and (H, W, C) here; ConvTranspose2d weight [I, O, 2, 2] -> [2, 2, I, O].
"""
from typing import Any, Mapping

import numpy as np

from segjax.models import mask_rcnn
from segjax.weights import torchvision as tv

_HEADS = {
    "rpn_head": {"conv": "rpn.head.conv.0.0", "cls_logits": "rpn.head.cls_logits", "bbox_pred": "rpn.head.bbox_pred"},
    "box_head": {"fc6": "roi_heads.box_head.fc6", "fc7": "roi_heads.box_head.fc7",
                 "cls_score": "roi_heads.box_predictor.cls_score", "bbox_pred": "roi_heads.box_predictor.bbox_pred"},
    "mask_head": {**{f"mask_fcn{i}": f"roi_heads.mask_head.{i - 1}.0" for i in range(1, 5)},
                  "mask_fcn_logits": "roi_heads.mask_predictor.mask_fcn_logits"},
}
_DECONV = {"conv5_mask_kernel": "roi_heads.mask_predictor.conv5_mask.weight",
           "conv5_mask_bias": "roi_heads.mask_predictor.conv5_mask.bias"}


def torch_key(path: tuple[str, ...]) -> str:
  if path[0] == "backbone":
    return "backbone.body." + tv.resnet_torch_key(path[1:])
  if path[0] == "fpn":
    kind, index = path[1].split("_")
    return f"backbone.fpn.{kind}_blocks.{index}.0.{tv.TORCH_LEAF[path[-1]]}"
  if path[-1] in _DECONV:
    return _DECONV[path[-1]]
  return f"{_HEADS[path[0]][path[1]]}.{tv.TORCH_LEAF[path[-1]]}"


def _flax_layout(state_dict: Mapping[str, Any], mask: bool) -> dict[str, np.ndarray]:
  """A copy of the state dict with the Linear and ConvTranspose2d weights in the layout `fill_variables` reads."""
  out = {k: np.asarray(v, np.float32) for k, v in state_dict.items()}
  fc6 = out["roi_heads.box_head.fc6.weight"]
  channels = fc6.shape[1] // 49
  out["roi_heads.box_head.fc6.weight"] = fc6.reshape(-1, channels, 7, 7).transpose(2, 3, 1, 0).reshape(-1, fc6.shape[0])
  for name in ("box_head.fc7", "box_predictor.cls_score", "box_predictor.bbox_pred"):
    out[f"roi_heads.{name}.weight"] = out[f"roi_heads.{name}.weight"].T
  if mask:  # [I, O, a, b] -> [O, I, a, b], which fill_variables turns into [a, b, I, O]
    out[_DECONV["conv5_mask_kernel"]] = out[_DECONV["conv5_mask_kernel"]].transpose(1, 0, 2, 3)
  return out


def _convert(state_dict: Mapping[str, Any], name: str):
  mask = name == "mask_rcnn"
  config = mask_rcnn.model_config()
  config.name, config.mask = name, mask
  config.num_classes = int(np.shape(state_dict["roi_heads.box_predictor.cls_score.weight"])[0])
  # torchvision's COCO detectors: label k is COCO category id k (91 slots, background and unused ids included).
  config.category_ids = tuple(range(1, config.num_classes))
  module = mask_rcnn.build(config, info=None)
  abstract = tv.abstract_variables(module, (64, 64))
  variables, used = tv.fill_variables(abstract, _flax_layout(state_dict, mask), torch_key)
  tv.check_unexpected(state_dict, used)
  return config, variables


tv.register("maskrcnn_resnet50_fpn")(lambda sd: _convert(sd, "mask_rcnn"))
tv.register("fasterrcnn_resnet50_fpn")(lambda sd: _convert(sd, "faster_rcnn"))
