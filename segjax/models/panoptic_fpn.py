"""Panoptic FPN (Kirillov et al. CVPR 2019): Mask R-CNN on ResNet-FPN plus a semantic FPN branch, as detectron2's
PanopticFPN.

The semantic branch (Sec. 3.2, Fig. 3) reads P2..P5: from each level, [3x3 conv, GroupNorm(32), ReLU, 2x bilinear
upsampling] repeated until 1/4 scale (one conv without upsampling for P2), `semantic_channels` wide; the four maps
are summed, a 1x1 conv gives the classes, and 4x bilinear upsampling brings them to the input size. Its classes are
the stuff classes 1..S (in category-id order) plus class 0 "other" for every thing pixel, crowds included; VOID is
ignored (detectron2's prepare_panoptic_fpn.py). Training loss: the Mask R-CNN losses plus `semantic_loss_weight`
times the per-pixel cross entropy (Sec. 3.3, lambda). Inference merges the detections and the semantic labels into
one panoptic map with `segjax.ops.panoptic_merge` (Sec. 3.2's heuristic), at the network input size.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from segjax.layers.conv import Conv
from segjax.layers.norms import norm_layer
from segjax.models import mask_rcnn
from segjax.ops.losses import softmax_cross_entropy
from segjax.ops.panoptic import panoptic_merge

TASK = "panoptic"
BATCH_KEYS = mask_rcnn.BATCH_KEYS + ("semantic",)
FORWARD_KEYS = mask_rcnn.FORWARD_KEYS + ("semantic",)
IGNORE_LABEL = 255
SEGMENT_KEYS = ("id", "category", "is_thing", "score", "area", "valid")
_MSRA_FILL = nn.initializers.variance_scaling(2.0, "fan_out", "normal")  # detectron2's c2_msra_fill


def model_config():
  """mask_rcnn.model_config() plus detectron2's Panoptic FPN R50 1x semantic head and merge settings."""
  config = mask_rcnn.model_config()
  config.update({"name": "panoptic_fpn", "semantic_channels": 128, "semantic_loss_weight": 0.5,
                 "overlap_threshold": 0.5, "instance_score_threshold": 0.5, "stuff_area_threshold": 4096})
  return config


def semantic_targets(semantic, is_thing):
  """Semantic train ids [...] (255 ignore) -> the branch's labels: 0 for things, 1..S for the stuff classes in
  train-id order, 255 for ignore. is_thing: bool per train id."""
  table = np.full(256, IGNORE_LABEL, np.int32)
  is_thing = np.asarray(is_thing, bool)
  table[:len(is_thing)] = np.where(is_thing, 0, np.cumsum(~is_thing))
  return jnp.asarray(table)[jnp.clip(semantic, 0, 255)]


def _upsample(x, factor):
  """Bilinear upsampling by an integer factor, torch's F.interpolate(align_corners=False)."""
  n, h, w, c = x.shape
  return jax.image.resize(x.astype(jnp.float32), (n, factor * h, factor * w, c), "linear").astype(x.dtype)


class SemanticFPNHead(nn.Module):
  """[P2, P3, P4, P5] -> logits [N, H/4, W/4, num_classes] (Kirillov et al. 2019, Fig. 3)."""
  num_classes: int
  channels: int = 128
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, levels):
    total = semantic_fpn_features(levels, self.channels, self.dtype)
    return Conv(self.num_classes, (1, 1), kernel_init=_MSRA_FILL, dtype=self.dtype, name="predictor")(total)


def semantic_fpn_features(levels, channels, dtype):
  """Fig. 3's scale heads summed: [P2, P3, P4, P5] -> [N, H/4, W/4, channels]; called inside a compact module,
  whose parameters p{level}_conv{stage} and p{level}_norm{stage} it creates."""
  total = 0.0
  for k, x in enumerate(levels):  # P_{k+2}: k stages of [conv, GN, ReLU, 2x up], P2 one conv
    for stage in range(max(k, 1)):
      x = Conv(channels, (3, 3), use_bias=False, kernel_init=_MSRA_FILL, dtype=dtype, name=f"p{k + 2}_conv{stage}")(x)
      x = nn.relu(norm_layer("group", train=False, dtype=dtype)(name=f"p{k + 2}_norm{stage}")(x))
      if k:
        x = _upsample(x, 2)
    total = total + x
  return total


class PanopticFPN(mask_rcnn.MaskRCNN):
  """module(images, train, targets) -> training: Mask R-CNN's outputs plus "semantic_logits" and
  "semantic_targets"; else the detections, "semantic" labels and the merged panoptic map of `predict`."""
  is_thing: tuple[bool, ...] = ()  # per semantic train id

  @nn.compact
  def __call__(self, images, train=False, targets=None):
    c = self.config
    backbone, levels = self.pyramid(images, train)
    outputs = self.detect(backbone, levels, images.shape[1:3], train, targets)
    num_stuff = len(self.is_thing) - sum(self.is_thing)
    head = SemanticFPNHead(num_stuff + 1, c.semantic_channels, dtype=jnp.dtype(c.dtype), name="semantic_head")
    logits = _upsample(head(levels[:4]).astype(jnp.float32), 4)
    if train:
      return {**outputs, "semantic_logits": logits, "semantic_targets": semantic_targets(targets["semantic"],
                                                                                        self.is_thing)}
    semantic = jnp.argmax(logits, -1).astype(jnp.int32)
    merge = lambda m, s, l, v, sem: panoptic_merge(
        m > 0.5, s, l, v, sem, num_stuff, overlap_threshold=c.overlap_threshold,
        stuff_area_threshold=c.stuff_area_threshold, instance_score_threshold=c.instance_score_threshold)
    panoptic, segments = jax.vmap(merge)(outputs["masks"], outputs["scores"], outputs["labels"], outputs["valid"],
                                         semantic)
    return {**outputs, "semantic": semantic, "panoptic": panoptic,
            **{f"segment_{k}": v for k, v in segments.items()}}


def _config(overrides):
  return mask_rcnn._config(overrides, model_config())  # pylint: disable=protected-access


def build(config, info):
  config = _config(config)
  if not config.mask:
    raise ValueError("config.model.mask: Panoptic FPN needs the mask head (mask=True)")
  if config.backbone != "fpn":
    raise ValueError(f"config.model.backbone: Panoptic FPN's semantic branch reads the FPN; got {config.backbone!r}")
  if config.semantic_channels % 32:
    raise ValueError(f"config.model.semantic_channels must be a multiple of 32 (GroupNorm's 32 groups); got "
                     f"{config.semantic_channels}")
  num_classes = config.num_classes or info.num_thing_classes + 1
  return PanopticFPN(num_classes=num_classes, config=config, is_thing=tuple(bool(c.isthing) for c in info.categories))


def loss(outputs, batch, model_config):
  """Mask R-CNN's losses + semantic_loss_weight * the mean per-pixel cross entropy over non-ignored pixels."""
  total, metrics = mask_rcnn.loss(outputs, batch, model_config)
  semantic = _config(model_config).semantic_loss_weight * softmax_cross_entropy(
      outputs["semantic_logits"], outputs["semantic_targets"], ignore_index=IGNORE_LABEL)
  return total + semantic, {**metrics, "loss_sem_seg": semantic}


def predict(outputs, model_config):
  """Mask R-CNN's detections plus the panoptic map and its K + S segment rows (see segjax.models' contract)."""
  panoptic_keys = ("panoptic", *(f"segment_{k}" for k in SEGMENT_KEYS))
  return {**mask_rcnn.predict(outputs, model_config), **{k: outputs[k] for k in panoptic_keys}}
