"""torchvision.models.segmentation deeplabv3_resnet50/101 and fcn_resnet50/101 -> segjax "deeplab_v3".

Key map of the heads (torch Sequential indices): DeepLabHead classifier.0 = ASPP (convs.0-3 = conv, BN;
convs.4 = pool, conv, BN; project = conv, BN), classifier.1/2 = 3x3 conv, BN, classifier.4 = 1x1; FCNHead
.0/.1 = 3x3 conv, BN, .4 = 1x1 (classifier for fcn_*, aux_classifier for both). torchvision's models take images
normalised by ImageNet's mean and std (their weights' transforms); the config's pixel_mean / pixel_std do that inside
the segjax model, which takes the [0, 1] image. The config carries num_classes (the classifier's), so the model
builds without a data set: `Predictor(*convert("deeplabv3_resnet50", state_dict))`.
"""
from typing import Any, Mapping

import ml_collections
import numpy as np

from segjax.models.deeplab import DeepLabV3
from segjax.ops.image import IMAGENET_MEAN, IMAGENET_STD
from segjax.weights import torchvision as tv

_ASPP = {"aspp_pool_conv": "0.convs.4.1", "aspp_pool_bn": "0.convs.4.2", "project_conv": "0.project.0",
         "project_bn": "0.project.1", "head_conv": "1", "head_bn": "2", "logits": "4",
         **{f"aspp{i}_conv": f"0.convs.{i}.0" for i in range(4)}, **{f"aspp{i}_bn": f"0.convs.{i}.1" for i in range(4)}}
_FCN = {"head_conv": "0", "head_bn": "1", "logits": "4"}


def _convert(state_dict: Mapping[str, Any], depth: int, head: str) -> tuple[ml_collections.ConfigDict, dict]:
  num_classes = int(np.shape(state_dict["classifier.4.weight"])[0])
  aux = "aux_classifier.0.weight" in state_dict
  config = ml_collections.ConfigDict({
      "name": "deeplab_v3", "num_classes": num_classes, "depth": depth, "width": 64, "output_stride": 8, "multi_grid": None, "head": head,
      "rates": (12, 24, 36), "aux": aux, "aux_weight": 0.5, "pixel_mean": IMAGENET_MEAN, "pixel_std": IMAGENET_STD,
      "dtype": "float32"})
  module = DeepLabV3(num_classes=num_classes, depth=depth, head=head, aux=aux)
  heads = {"classifier": _ASPP if head == "aspp" else _FCN, "aux_classifier": _FCN}

  def torch_key(path):
    if path[0] == "backbone":
      return "backbone." + tv.resnet_torch_key(path[1:])
    return f"{path[0]}.{heads[path[0]][path[1]]}.{tv.TORCH_LEAF[path[-1]]}"

  variables, used = tv.fill_variables(tv.abstract_variables(module), state_dict, torch_key)
  tv.check_unexpected(state_dict, used)
  return config, variables


for _depth in (50, 101):
  tv.register(f"deeplabv3_resnet{_depth}")(lambda sd, d=_depth: _convert(sd, d, "aspp"))
  tv.register(f"fcn_resnet{_depth}")(lambda sd, d=_depth: _convert(sd, d, "fcn"))
