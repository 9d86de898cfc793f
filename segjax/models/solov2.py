"""SOLOv2 (Wang et al., NeurIPS 2020): instance masks by location, dynamic convolution and Matrix NMS.

Follows the official implementation (WXinlong/SOLO: SOLOv2Head, MaskFeatHead, solov2_target_single, get_seg_single).
The [0, 1] images are normalised by pixel_mean / pixel_std (ImageNet's, as the reference's img_norm_cfg).
The five FPN levels P2..P6 are resized to P3, P3, P4, P5, P5 (P2 bilinearly halved, P6 bilinearly up to P5's
size; strides 8, 8, 16, 32, 32). On each level a head shared by the levels (Sec. 3.2) resizes the features with
two coordinate channels to an S x S grid; the category branch (coordinates dropped) predicts C class logits per
cell and the kernel branch E dynamic 1x1 kernels, each after `stacked_convs` 3x3 conv + GN + ReLU. The unified
mask feature branch (Sec. 3.2.2) brings P2..P5 to 1/4 scale (3x3 conv + GN + ReLU and 2x bilinear upsampling per
octave, coordinates on P5), sums them and projects to E channels; a cell's mask is sigmoid(kernel . features).

Targets are built in jit with static shapes (`solov2_targets`); the number of positive kernels per image is
bounded by `max_positives` (the ones past it, in the reference's order, leave the mask loss; `dropped_positives`
counts them). Boxes are the pipeline's (tight mask extents, x2/y2 exclusive), where the reference's
annotation boxes are x1 + w - 1. Inference keeps the 500 best (cell, class) scores before the masks are computed,
where the reference computes the masks of every score above 0.1 first (identical while at most 500 pass).
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from segjax.backbones.resnet import ResNet
from segjax.layers.conv import Conv
from segjax.layers.fpn import FPN
from segjax.layers.norms import norm_layer
from segjax.models import pixel_normalization
from segjax.models.validation import validated
from segjax.ops.image import IMAGENET_MEAN, IMAGENET_STD, coord_features, normalize_images
from segjax.ops.losses import dice_loss, sigmoid_focal_loss
from segjax.ops.mask_nms import matrix_nms_from_iou
from segjax.ops.masks import mask_iou, masks_to_boxes
from segjax.ops.pooling import resize_bilinear as resize
from segjax.ops.soft_nms import soft_nms

TASK = "instance"
BATCH_KEYS = ("image", "boxes", "masks", "classes", "is_crowd", "instance_valid")
SIZE_DIVISIBILITY = 32  # the reference pads its input to multiples of 32
STRIDES = (8, 8, 16, 32, 32)  # of the five resized levels; the reference's `strides`, the area filter's default
SIGMA = 0.2  # centre region: the box scaled by sigma about the mass centre (Sec. 3.1)
MASK_STRIDE = 4  # mask features and mask targets at 1/4 of the input
DICE_WEIGHT = 3.0  # lambda of Eqn. 1
FOCAL_ALPHA, FOCAL_GAMMA = 0.25, 2.0
# `predict`'s config.model keys and their defaults: the reference's test_cfg (score_thr, mask_thr, nms_pre,
# update_thr, sigma of the Gaussian Matrix NMS, max_per_img) and the area a mask must exceed per level, in 1/4-scale
# pixels (the reference uses the level strides, sized for COCO's ~800-pixel inputs; a config scaled to smaller
# images scales them too).
# `nms` picks the suppression of the paper's NMS ablation: "matrix" (Matrix NMS, `nms_kernel` gaussian or
# linear), "soft" (Soft-NMS on mask IoU, `nms_kernel` gaussian with `soft_nms_sigma` or linear above
# `nms_iou_threshold`) or "hard" (greedy mask NMS at `nms_iou_threshold`).
PREDICT_DEFAULTS = {"score_threshold": 0.1, "mask_threshold": 0.5, "nms_pre": 500, "update_threshold": 0.05,
                    "nms_sigma": 2.0, "detections_per_image": 100, "min_mask_area": STRIDES, "nms": "matrix",
                    "nms_kernel": "gaussian", "soft_nms_sigma": 0.5, "nms_iou_threshold": 0.5}
NMS = ("matrix", "soft", "hard")
INFERENCE_KEYS = frozenset(PREDICT_DEFAULTS)  # read by `predict` only

_HEAD_INIT = nn.initializers.normal(0.01)  # the reference's normal_init(std=0.01) of every head conv
_CATE_PRIOR = float(-np.log((1 - 0.01) / 0.01))  # bias_init_with_prob(0.01)


def _conv_gn_relu(x, features, kernel, dtype, name):
  """mmdet ConvModule with GN(32): conv (no bias), GroupNorm, ReLU."""
  y = Conv(features, (kernel, kernel), padding=kernel // 2, use_bias=False, kernel_init=_HEAD_INIT,
           dtype=dtype, param_dtype=jnp.float32, name=f"{name}_conv")(x)
  return nn.relu(norm_layer("group", train=False, dtype=dtype)(name=f"{name}_gn")(y))


class SOLOv2Head(nn.Module):
  """One level's category and kernel branches: x [N,h,w,C] -> logits [N,S,S,classes], kernels [N,S,S,E]."""
  num_classes: int
  seg_feat_channels: int = 512
  stacked_convs: int = 4
  ins_out_channels: int = 256
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, num_grid: int):
    kernel_feat = resize(coord_features(x), num_grid, num_grid)
    cate_feat = kernel_feat[..., :-2]
    for i in range(self.stacked_convs):
      kernel_feat = _conv_gn_relu(kernel_feat, self.seg_feat_channels, 3, self.dtype, f"kernel_convs_{i}")
      cate_feat = _conv_gn_relu(cate_feat, self.seg_feat_channels, 3, self.dtype, f"cate_convs_{i}")
    conv = lambda features, bias, name: Conv(
        features, (3, 3), padding=1, kernel_init=_HEAD_INIT, bias_init=nn.initializers.constant(bias),
        dtype=self.dtype, param_dtype=jnp.float32, name=name)
    return (conv(self.num_classes, _CATE_PRIOR, "solo_cate")(cate_feat),
            conv(self.ins_out_channels, 0.0, "solo_kernel")(kernel_feat))


class MaskFeatHead(nn.Module):
  """Unified mask features (Sec. 3.2.2): [P2, P3, P4, P5] -> [N, H/4, W/4, E]."""
  mask_feat_channels: int = 128
  ins_out_channels: int = 256
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, levels):
    total = 0
    for i, x in enumerate(levels):
      y = coord_features(x) if i == 3 else x
      for j in range(max(i, 1)):  # P2: one conv; P_{2+i}: i x (conv, 2x upsampling)
        y = _conv_gn_relu(y, self.mask_feat_channels, 3, self.dtype, f"level{i}_conv{j}")
        if i:
          y = resize(y, 2 * y.shape[1], 2 * y.shape[2])
      total = total + y
    return _conv_gn_relu(total, self.ins_out_channels, 1, self.dtype, "conv_pred")


def split_feats(p):
  """The reference's split_feats: {"P2".."P6"} -> [P2 halved, P3, P4, P5, P6 resized to P5] (bilinear)."""
  return [resize(p["P2"], p["P2"].shape[1] // 2, p["P2"].shape[2] // 2), p["P3"], p["P4"], p["P5"],
          resize(p["P6"], *p["P5"].shape[1:3])]


class SOLOv2(nn.Module):
  """images [N,H,W,3] (H, W multiples of 32) -> {"cate_logits": per level [N,S,S,classes], "kernels": per level
  [N,S,S,E], "mask_features": [N,H/4,W/4,E]}, all float32."""
  num_classes: int
  depth: int = 50
  width: int = 64
  norm: str = "batch"
  deformable_stages: tuple[int, ...] = ()
  fpn_channels: int = 256
  seg_feat_channels: int = 512
  stacked_convs: int = 4
  ins_out_channels: int = 256
  mask_feat_channels: int = 128
  num_grids: tuple[int, ...] = (40, 36, 24, 16, 12)
  pixel_mean: tuple[float, ...] = IMAGENET_MEAN
  pixel_std: tuple[float, ...] = IMAGENET_STD
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images, train: bool = False):
    if images.shape[1] % 32 or images.shape[2] % 32:
      raise ValueError(f"SOLOv2 needs an input size divisible by 32 (the reference pads to it); got {images.shape}")
    if len(self.num_grids) != len(STRIDES):
      raise ValueError(f"config.model.num_grids: one value per level P2..P6; got {self.num_grids}")
    features = ResNet(depth=self.depth, width=self.width, norm=self.norm, deformable_stages=self.deformable_stages,
                      dtype=self.dtype, name="backbone")(normalize_images(images, self.pixel_mean, self.pixel_std), train=train)
    p = FPN(self.fpn_channels, dtype=self.dtype, name="fpn")(features)
    levels = split_feats(p)
    head = SOLOv2Head(self.num_classes, self.seg_feat_channels, self.stacked_convs, self.ins_out_channels,
                      self.dtype, name="head")
    cate, kernels = zip(*(head(x, s) for x, s in zip(levels, self.num_grids)))
    mask_features = MaskFeatHead(self.mask_feat_channels, self.ins_out_channels, self.dtype,
                                 name="mask_feat_head")([p["P2"], p["P3"], p["P4"], p["P5"]])
    f32 = lambda xs: tuple(x.astype(jnp.float32) for x in xs)
    return {"cate_logits": f32(cate), "kernels": f32(kernels), "mask_features": mask_features.astype(jnp.float32)}


def model_config() -> ml_collections.ConfigDict:
  """SOLOv2 R50-FPN as the reference (solov2_r50_fpn_8gpu_1x), with `predict`'s settings (PREDICT_DEFAULTS)."""
  return ml_collections.ConfigDict({
      "name": "solov2", "depth": 50, "width": 64, "norm": "frozen", "deformable_stages": (), "fpn_channels": 256,
      "seg_feat_channels": 512,
      "stacked_convs": 4, "ins_out_channels": 256, "mask_feat_channels": 128, "num_grids": (40, 36, 24, 16, 12),
      "scale_ranges": ((1, 96), (48, 192), (96, 384), (192, 768), (384, 2048)), "max_positives": 512,
      "dtype": "float32", "pixel_mean": IMAGENET_MEAN, "pixel_std": IMAGENET_STD, **PREDICT_DEFAULTS})


def build(config, info):
  c = validated(config, model_config())
  predict_config(c)  # checks the inference settings too
  return SOLOv2(num_classes=info.num_thing_classes, depth=c.depth, width=c.width,
                norm=c.norm, deformable_stages=tuple(c.deformable_stages), fpn_channels=c.fpn_channels,
                seg_feat_channels=c.seg_feat_channels, stacked_convs=c.stacked_convs,
                ins_out_channels=c.ins_out_channels, mask_feat_channels=c.mask_feat_channels,
                num_grids=tuple(c.num_grids), dtype=jnp.dtype(c.dtype), **pixel_normalization(c))


def downsample_masks(masks):
  """mmcv.imrescale(mask, 1/4) (cv2 INTER_LINEAR on uint8): [M,H,W] -> [M,H/4,W/4] uint8.

  Output pixel (i, j) samples the source at (4i + 1.5, 4j + 1.5): the mean of rows 4i+1..4i+2 and columns
  4j+1..4j+2, rounded half up in cv2's fixed point, so it is 1 where at least 2 of those 4 pixels are set.
  """
  m, h, w = masks.shape
  block = masks.reshape(m, h // 4, 4, w // 4, 4)[:, :, 1:3, :, 1:3].astype(jnp.int32)
  return (block.sum((2, 4)) >= 2).astype(jnp.uint8)


def _cell(v, size, num_grid):
  """int(v / size // (1 / S)) in float32, as the reference computes a grid cell.

  XLA rewrites x / broadcast(c) as x * (1 / c), which moves cell edges (80 / 96 // (1 / 36) is 29 in torch,
  30 that way). Divisors made from v (x * 0 is not folded for floats, and stays batched under vmap) behind an
  optimization barrier are no broadcasts, so both divisions stay exact.
  """
  size, step = jax.lax.optimization_barrier((v * 0 + jnp.float32(size), v * 0 + jnp.float32(1.0 / num_grid)))
  return jnp.floor_divide(v / size, step).astype(jnp.int32)


def solov2_targets(boxes, masks, classes, valid, num_grids, scale_ranges, max_positives):
  """The reference's solov2_target_single for one image, with static shapes.

  Per level, the instances with lo <= sqrt(w h) <= hi and a non-empty mask take the grid cells of the centre
  region: the box scaled by SIGMA about the mask's centre of mass, clipped to that centre's cell +- 1. A cell
  takes the label of the last instance covering it; every (cell, instance) pair is a positive kernel with that
  instance's mask at 1/4 scale as target.

  Args:
    boxes: [M, 4] float (x1, y1, x2, y2) input pixels.
    masks: [M, H, W] uint8 binary masks at the input size.
    classes: [M] int labels 1..K.
    valid: [M] bool; padding and crowds False.
    num_grids: static S per level.
    scale_ranges: static (lo, hi) per level.
    max_positives: static P.

  Returns:
    category [N] int32 (0 background, labels 1..K; N = sum S^2, levels concatenated, cells row-major),
    positive [N] bool, positive_cells [P] int32 indices into N, positive_instances [P] int32,
    positive_masks [P, H/4, W/4] uint8, positive_valid [P] bool, num_dropped int32 (positives past P).
    Positive slots follow the reference's order: level, instance, cell row, cell column.
  """
  m, h, w = masks.shape
  f32 = jnp.float32
  boxes = boxes.astype(f32)
  gt_areas = jnp.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
  # Centre of mass from integer moments: exact in float32 as the reference's sums.
  m00 = masks.astype(jnp.int32).sum((1, 2))
  m10 = (masks.astype(jnp.int32) * jnp.arange(w)).sum((1, 2))
  m01 = (masks.astype(jnp.int32) * jnp.arange(h)[:, None]).sum((1, 2))
  denominator = jnp.maximum(m00.astype(f32), f32(1e-6))
  center_w, center_h = m10.astype(f32) / denominator, m01.astype(f32) / denominator
  half_w = f32(0.5) * (boxes[:, 2] - boxes[:, 0]) * f32(SIGMA)
  half_h = f32(0.5) * (boxes[:, 3] - boxes[:, 1]) * f32(SIGMA)
  valid = valid & (m00 > 0)

  category, cells, instances, candidates, offset = [], [], [], [], 0
  for (lo, hi), s in zip(scale_ranges, num_grids):
    coord_w, coord_h = _cell(center_w, w, s), _cell(center_h, h, s)
    top = jnp.maximum(jnp.maximum(0, _cell(center_h - half_h, h, s)), coord_h - 1)
    down = jnp.minimum(jnp.minimum(s - 1, _cell(center_h + half_h, h, s)), coord_h + 1)
    left = jnp.maximum(jnp.maximum(0, _cell(center_w - half_w, w, s)), coord_w - 1)
    right = jnp.minimum(jnp.minimum(s - 1, _cell(center_w + half_w, w, s)), coord_w + 1)
    hit = valid & (gt_areas >= lo) & (gt_areas <= hi)
    grid_rows, grid_cols = jnp.arange(s)[None, :, None], jnp.arange(s)[None, None, :]
    cover = (hit[:, None, None] & (grid_rows >= top[:, None, None]) & (grid_rows <= down[:, None, None])
             & (grid_cols >= left[:, None, None]) & (grid_cols <= right[:, None, None]))
    last = jnp.max(jnp.where(cover, jnp.arange(m)[:, None, None], -1), axis=0)  # later instances overwrite
    category.append(jnp.where(last >= 0, classes[jnp.maximum(last, 0)], 0).reshape(-1))
    # Up to 3 x 3 cells per instance, in the reference's loop order (instance, row, column).
    rows = top[:, None, None] + jnp.arange(3)[None, :, None]
    cols = left[:, None, None] + jnp.arange(3)[None, None, :]
    inside = hit[:, None, None] & (rows <= down[:, None, None]) & (cols <= right[:, None, None])
    cells.append((offset + rows * s + cols).reshape(-1))
    instances.append(jnp.broadcast_to(jnp.arange(m)[:, None, None], (m, 3, 3)).reshape(-1))
    candidates.append(inside.reshape(-1))
    offset += s * s
  category = jnp.concatenate(category).astype(jnp.int32)
  cells, instances, candidates = (jnp.concatenate(x) for x in (cells, instances, candidates))
  slot = jnp.where(candidates, jnp.cumsum(candidates) - 1, max_positives)  # past P: dropped by the scatter
  scatter = lambda values: jnp.zeros(max_positives, jnp.int32).at[slot].set(values, mode="drop")
  positive_cells, positive_instances = scatter(cells), scatter(instances)
  positive_valid = jnp.zeros(max_positives, bool).at[slot].set(True, mode="drop")
  positive_masks = downsample_masks(masks)[positive_instances] * positive_valid[:, None, None].astype(jnp.uint8)
  num_dropped = jnp.maximum(candidates.sum() - max_positives, 0).astype(jnp.int32)
  return category, category > 0, positive_cells, positive_instances, positive_masks, positive_valid, num_dropped


def _flat(levels):
  """Per-level [B,S,S,D] -> [B, sum S^2, D]."""
  return jnp.concatenate([x.reshape(x.shape[0], -1, x.shape[-1]) for x in levels], axis=1)


def loss(outputs, batch, config):
  """Eqn. 1: focal loss over all cells / (positives + 1) + 3 x Dice over the positive kernels' masks."""
  config = validated(config, model_config())
  num_grids = tuple(x.shape[1] for x in outputs["cate_logits"])
  valid = batch["instance_valid"] & ~batch["is_crowd"]
  assign = lambda b, m, c, v: solov2_targets(b, m, c, v, num_grids, tuple(map(tuple, config.scale_ranges)),
                                             config.max_positives)
  category, positive, cells, _, targets, positive_valid, dropped = jax.vmap(assign)(
      batch["boxes"], batch["masks"], batch["classes"], valid)
  cate_logits = _flat(outputs["cate_logits"])
  one_hot = (category[..., None] == jnp.arange(1, cate_logits.shape[-1] + 1)).astype(jnp.float32)
  loss_cate = sigmoid_focal_loss(cate_logits, one_hot, FOCAL_ALPHA, FOCAL_GAMMA, "sum") / (positive.sum() + 1)
  kernels = jnp.take_along_axis(_flat(outputs["kernels"]), cells[..., None], axis=1)  # [B, P, E]
  mask_logits = jnp.einsum("bpe,bhwe->bphw", kernels, outputs["mask_features"])  # dynamic 1x1 conv (Eqn. 4)
  b, p = cells.shape
  loss_ins = DICE_WEIGHT * dice_loss(mask_logits.reshape(b * p, -1), targets.reshape(b * p, -1),
                                     positive_valid.reshape(-1))
  return loss_cate + loss_ins, {"loss_cate": loss_cate, "loss_ins": loss_ins,
                                "dropped_positives": dropped.sum().astype(jnp.float32)}


def points_nms(heat):
  """The reference's points_nms (2 x 2 max pool, stride 1, padding 1, first rows/columns): a cell survives if
  it is the maximum of itself and its upper/left neighbours. heat [S, S, C]."""
  padded = jnp.pad(heat, ((1, 0), (1, 0), (0, 0)), constant_values=-jnp.inf)
  hmax = jnp.maximum(jnp.maximum(padded[1:, 1:], padded[:-1, 1:]), jnp.maximum(padded[1:, :-1], padded[:-1, :-1]))
  return heat * (hmax == heat)


def predict_config(model_config) -> dict:
  """`predict`'s settings: PREDICT_DEFAULTS updated with those config.model sets."""
  settings = {k: model_config.get(k, default) for k, default in PREDICT_DEFAULTS.items()}
  settings["min_mask_area"] = tuple(float(a) for a in settings["min_mask_area"])
  if settings["nms"] not in NMS:
    raise ValueError(f"config.model.nms must be one of {NMS}; got {settings['nms']!r}")
  if settings["nms_kernel"] not in ("gaussian", "linear"):
    raise ValueError(f"config.model.nms_kernel must be 'gaussian' or 'linear'; got {settings['nms_kernel']!r}")
  if len(settings["min_mask_area"]) != len(STRIDES):
    raise ValueError(f"config.model.min_mask_area: one value per level P2..P6; got {settings['min_mask_area']}")
  return settings


def suppress(binary, labels, scores, area, c):
  """The scores of candidates sorted by descending score after the NMS that c["nms"] names (`predict_config`):
  binary [N, h, w] masks, labels [N], scores [N], area [N] their pixel counts. Every variant starts from the
  pairwise mask IoUs (`suppress_iou`)."""
  flat = binary.reshape(binary.shape[0], -1).astype(jnp.float32)
  return suppress_iou(mask_iou(flat, area), labels, scores, c)


def suppress_iou(iou, labels, scores, c):
  """`suppress` after the IoU matrix iou [N, N]: Matrix NMS's parallel decay, or Soft-NMS's / mask NMS's sequential
  loop over the N candidates."""
  if c["nms"] == "matrix":
    return matrix_nms_from_iou(iou, labels, scores, c["nms_kernel"], c["nms_sigma"])
  method = "hard" if c["nms"] == "hard" else c["nms_kernel"]
  decayed, _ = soft_nms(iou, scores, labels, method, c["soft_nms_sigma"], c["nms_iou_threshold"])
  return decayed


def _candidates(cate_scores, kernels, features, min_area, c):
  """get_seg_single up to its NMS on one image: cate_scores [N, C] (after points NMS), kernels [N, E], features
  [h, w, E]; c the settings of `predict_config`. The top nms_pre (cell, class) pairs sorted by descending rescored
  score: (soft masks, binary masks, areas, labels, scores, keep)."""
  n, num_classes = cate_scores.shape
  scores, index = jax.lax.top_k(cate_scores.reshape(-1), min(int(c["nms_pre"]), n * num_classes))
  cells, labels = index // num_classes, index % num_classes
  masks = jax.nn.sigmoid(jnp.einsum("ke,hwe->khw", kernels[cells], features))
  binary = masks > c["mask_threshold"]
  area = binary.sum((1, 2)).astype(jnp.float32)
  keep = (scores > c["score_threshold"]) & (area > min_area[cells])
  maskness = (masks * binary).sum((1, 2)) / jnp.maximum(area, 1)
  scores = jnp.where(keep, scores * maskness, 0)
  order = jnp.argsort(-scores)
  return masks[order], binary[order], area[order], labels[order], scores[order], keep[order]


def _predict_single(cate_scores, kernels, features, min_area, height, width, c):
  """get_seg_single on one image: `_candidates`, their NMS (`suppress`), update_threshold, top detections_per_image,
  masks at the input size."""
  masks, binary, area, labels, scores, keep = _candidates(cate_scores, kernels, features, min_area, c)
  decayed = suppress(binary, labels, scores, area, c)
  keep &= decayed >= c["update_threshold"]
  top, pick = jax.lax.top_k(jnp.where(keep, decayed, -1), min(int(c["detections_per_image"]), scores.shape[0]))
  keep = keep[pick]
  masks = resize(masks[pick][..., None], height, width)[..., 0] * keep[:, None, None]
  binary = masks > c["mask_threshold"]
  # Pixel edges (x2, y2 one past the last pixel), as the pipeline's ground-truth boxes.
  boxes = jnp.where(binary.any((1, 2))[:, None], masks_to_boxes(binary) + jnp.array([0, 0, 1, 1], jnp.float32), 0)
  return {"boxes": boxes, "scores": jnp.where(keep, top, 0), "labels": (labels[pick] + 1).astype(jnp.int32),
          "masks": masks, "valid": keep}


def _levels(outputs, c):
  """The category scores of all levels after points NMS, [B, N, C], and the minimum area of each cell's mask [N]."""
  levels = outputs["cate_logits"]
  cate = jnp.concatenate([jax.vmap(points_nms)(jax.nn.sigmoid(x)).reshape(x.shape[0], -1, x.shape[-1])
                          for x in levels], axis=1)
  min_area = jnp.asarray(np.repeat(c["min_mask_area"], [x.shape[1] * x.shape[2] for x in levels]), jnp.float32)
  return cate, min_area


def predict(outputs, model_config):
  """Top nms_pre (500) scores, dynamic masks, mask_threshold (0.5), score_threshold (0.1), area > min_mask_area,
  maskness rescoring, Matrix NMS (Gaussian, nms_sigma 2; or another of `suppress`), update_threshold (0.05), top
  detections_per_image (100); masks at the input size (4x bilinear). Settings: config.model's, else
  PREDICT_DEFAULTS."""
  c = predict_config(model_config)
  cate, min_area = _levels(outputs, c)
  features = outputs["mask_features"]
  height, width = MASK_STRIDE * features.shape[1], MASK_STRIDE * features.shape[2]
  return jax.vmap(lambda s, k, f: _predict_single(s, k, f, min_area, height, width, c))(
      cate, _flat(outputs["kernels"]), features)


def candidates(outputs, model_config):
  """The NMS input of `predict` for each image of a batch: {"binary" [B, K, h, w] masks at 1/4 scale, "area",
  "labels", "scores" [B, K] sorted by descending score (0 where filtered)}, K = nms_pre; `suppress` takes them one
  image at a time (the NMS ablation times it there)."""
  c = predict_config(model_config)
  cate, min_area = _levels(outputs, c)
  _, binary, area, labels, scores, _ = jax.vmap(lambda s, k, f: _candidates(s, k, f, min_area, c))(
      cate, _flat(outputs["kernels"]), outputs["mask_features"])
  return {"binary": binary, "area": area, "labels": labels, "scores": scores}
