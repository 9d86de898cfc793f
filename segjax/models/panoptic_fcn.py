"""Panoptic FCN (Li et al. CVPR 2021, "Fully Convolutional Networks for Panoptic Segmentation"), as the official
dvlab-research/PanopticFCN (detectron2 project; config.py defaults, PanopticFCN-R50-1x.yaml).

ResNet-FPN with P6, P7 from P5 (3x3 stride-2 convs, ReLU between, as RetinaNet). The kernel generator runs on
P3..P7 with heads shared over the levels: the position head (3 x [modulated deformable conv, GN, ReLU]; plain convs
without `position_deform`, the official POSITION_HEAD.DEFORM) predicts object-centre heatmaps for the K thing
classes and region maps for the stuff classes with class 0 for all things (the official WITH_THING; the same labels
as Panoptic FPN's semantic branch); the kernel head (CoordConv input, 3 x [conv, GN, ReLU], a 3x3 conv) a kernel
feature per position. The high-resolution feature encoder sums Panoptic FPN's scale heads on P2..P5
at 1/4 scale, adds coordinates and applies 3 x [conv, ReLU] to C_e channels. A mask is the 1x1 conv of a kernel (the
thing or stuff generator's 1x1 embedding of a kernel feature) with the encoded features.

Training: the heatmaps' targets are CenterNet Gaussians at the mass centres of the 1/4-scale masks (radius from the
box at the level's scale, min overlap 0.7, sigma (2r + 1) / 3) for the instances whose sqrt(box area) is in the
level's range; the region maps' targets the 1/4-scale one-hot semantic labels resized to the level (>= 0.5 kept);
both by focal loss (Eq. 1-2). Each thing takes the k = `pos_num` top-scoring points of its class's heatmap inside its
mask (resized to the level, > 0.1); their k kernels' Dice losses are weighted by the scores normalised to sum 1
(Eq. 6-7); each stuff class present on a level one kernel, the kernel features summed over its region and divided by
the level's h w (the official adaptive_avg_pool2d of the masked map, where the paper averages over the region).
loss = position_weight (L_pos_th + L_pos_st) + segment_weight (L_seg_th + L_seg_st) with the official
normalisations (things by the number of (instance, level) pairs, stuff focal by the images, stuff Dice by the
(class, level) pairs).

Inference (the official inference_single_level, kernel_fusion, process_inst): per level the heatmap is averaged
with its 3x3 (P6, P7: 5x5) mean, kept at its 3x3 maxima, and its top min(h w, top_num / 2) scores above
`center_threshold` give thing kernels; stuff classes are the region map's argmax, scored by their mean probability
(> `stuff_threshold`), their kernels pooled over the region as in training. Kernel fusion over the levels (Eq. 3-5):
thing kernels of one class with cosine similarity >= `similarity_threshold` are averaged into the highest-scoring
one, stuff kernels of one class are averaged. Thing masks are thresholded at `mask_threshold`, rescored by their
mean probability inside, filtered at 0.05 and cut to the best `center_top_num`; the stuff masks' argmax (class 0:
things) and the things go through `segjax.ops.panoptic_merge`, the official combine_thing_and_stuff (overlap 0.5,
instance score 0.2, stuff area 4096), all at the network input size with static shapes.

Differences, stated: CoordConv appends (x, y) where the official appends (y, x) (a permutation of input channels);
conv biases without a norm start at 0 (torch: uniform); instances whose 1/4-scale mask is empty (under ~2 pixels
wide) have no centre and are left out (the official takes the mean of no points).
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from segjax.backbones.resnet import ResNet
from segjax.layers.conv import Conv
from segjax.layers.deform_conv import ModulatedDeformConv
from segjax.layers.fpn import FPN
from segjax.layers.norms import norm_layer
from segjax.layers.semantic_fpn import semantic_fpn_features
from segjax.models.validation import validated
from segjax.ops.image import coord_features, normalize_images
from segjax.ops.losses import sigmoid_focal_loss, weighted_dice_loss
from segjax.ops.masks import masks_to_boxes
from segjax.ops.panoptic import panoptic_merge, semantic_targets
from segjax.ops.pooling import resize_bilinear as resize

TASK = "panoptic"
BATCH_KEYS = ("image", "boxes", "masks", "classes", "is_crowd", "instance_valid", "semantic")
# Read at inference only (the official inference thresholds and top-k).
INFERENCE_KEYS = frozenset({"center_top_num", "center_threshold", "stuff_threshold", "mask_threshold",
                            "similarity_threshold", "overlap_threshold", "stuff_area_threshold",
                            "instance_score_threshold"})
FORWARD_KEYS = BATCH_KEYS[1:]
SIZE_DIVISIBILITY = 32  # input sides: multiples of C5's stride
SEGMENT_KEYS = ("id", "category", "is_thing", "score", "area", "valid")
ENCODER_STRIDE = 4  # SEMANTIC_FPN.COMMON_STRIDE
POOL_SIZES = (3, 3, 3, 5, 5)  # heatmap smoothing of P3..P7 at inference
GUIDE_THRESHOLD = 0.1  # a thing's points: its mask resized to the level above this
SCORE_FLOOR = 0.05  # process_inst's object score filter
FOCAL_ALPHA, FOCAL_GAMMA = 0.25, 2.0
_TORCH_CONV = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")  # torch's default kaiming_uniform(a=5^.5)
_KAIMING_A1 = nn.initializers.variance_scaling(1.0, "fan_in", "uniform")  # c2_xavier_fill of P6, P7
_NORMAL = nn.initializers.normal(0.01)


def model_config():
  """The official config.py defaults with PanopticFCN-R50-1x.yaml (ResNet-50, frozen BN)."""
  return ml_collections.ConfigDict({
      "name": "panoptic_fcn", "depth": 50, "width": 64, "norm": "frozen", "deformable_stages": (),
      "fpn_channels": 256,
      "pixel_mean": (0.485, 0.456, 0.406), "pixel_std": (0.229, 0.224, 0.225),
      "semantic_channels": 256, "head_channels": 256, "head_convs": 3, "position_deform": True,
      "encoder_channels": 64, "encoder_convs": 3,
      "center_bias": -2.19, "instance_scales": ((1, 64), (32, 128), (64, 256), (128, 512), (256, 2048)),
      "min_overlap": 0.7, "gaussian_sigma": 3.0, "pos_num": 7, "position_weight": 1.0, "segment_weight": 3.0,
      "center_top_num": 100, "center_threshold": 0.05, "stuff_threshold": 0.05, "mask_threshold": 0.4,
      "similarity_threshold": 0.9, "overlap_threshold": 0.5, "stuff_area_threshold": 4096,
      "instance_score_threshold": 0.2, "dtype": "float32"})


def _conv(features, kernel, dtype, name, **kwargs):
  return Conv(features, (kernel, kernel), padding=kernel // 2, dtype=dtype, param_dtype=jnp.float32, name=name,
              **{"kernel_init": _TORCH_CONV, **kwargs})


def _tower(x, channels, num_convs, dtype, name, deform=False):
  """The official SingleHead with GN: num_convs x [3x3 conv (no bias; modulated deformable with `deform`),
  GroupNorm(32), ReLU]."""
  for k in range(num_convs):
    if deform:
      x = ModulatedDeformConv(channels, 3, use_bias=False, dtype=dtype, name=f"{name}_conv{k}")(x)
    else:
      x = _conv(channels, 3, dtype, f"{name}_conv{k}", use_bias=False)(x)
    x = nn.relu(norm_layer("group", train=False, dtype=dtype)(name=f"{name}_gn{k}")(x))
  return x


class PositionHead(nn.Module):
  """x [N,h,w,C] -> centre logits [N,h,w,K], region logits [N,h,w,S+1]."""
  num_things: int
  num_regions: int
  channels: int = 256
  num_convs: int = 3
  bias: float = -2.19
  deform: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = _tower(x, self.channels, self.num_convs, self.dtype, "position", self.deform)
    out = lambda n, name: _conv(n, 3, self.dtype, name, kernel_init=_NORMAL,
                                bias_init=nn.initializers.constant(self.bias))(x)
    return out(self.num_things, "out_inst"), out(self.num_regions, "out_sem")


class KernelHead(nn.Module):
  """x [N,h,w,C] -> kernel features [N,h,w,channels]: CoordConv, the tower, a 3x3 conv."""
  channels: int = 256
  num_convs: int = 3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = _tower(coord_features(x), self.channels, self.num_convs, self.dtype, "kernel")
    return _conv(self.channels, 3, self.dtype, "out_conv", kernel_init=_NORMAL)(x)


class FeatureEncoder(nn.Module):
  """[P2..P5] -> encoded features [N,H/4,W/4,C_e]: the semantic FPN, coordinates, [conv, ReLU] x n."""
  semantic_channels: int = 256
  channels: int = 64
  num_convs: int = 3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, levels):
    x = coord_features(semantic_fpn_features(levels, self.semantic_channels, self.dtype))
    for k in range(self.num_convs):
      x = nn.relu(_conv(self.channels, 3, self.dtype, f"encode_conv{k}")(x))
    return x


class PanopticFCN(nn.Module):
  """module(images, train, targets) -> training: the heads' logits, their targets and the kernels' mask logits that
  `loss` reads; else the `predict` contract's entries."""
  config: Any
  num_things: int
  is_thing: tuple[bool, ...]  # per semantic train id

  @nn.compact
  def __call__(self, images, train=False, targets=None):
    c = self.config
    dtype = jnp.dtype(c.dtype)
    if images.shape[1] % 32 or images.shape[2] % 32:
      raise ValueError(f"panoptic_fcn: image height and width must be multiples of 32; got {images.shape[1:3]}")
    x = normalize_images(images, c.pixel_mean, c.pixel_std)
    p = FPN(c.fpn_channels, dtype=dtype, name="fpn")(
        ResNet(depth=c.depth, width=c.width, norm=c.norm, deformable_stages=tuple(c.deformable_stages), dtype=dtype,
               name="backbone")(x, train=train))
    down = lambda y, name: Conv(c.fpn_channels, (3, 3), strides=2, padding=((1, 1), (1, 1)), dtype=dtype,
                                kernel_init=_KAIMING_A1, name=name)(y)
    p6 = down(p["P5"], "p6")
    levels = [p["P3"], p["P4"], p["P5"], p6, down(nn.relu(p6), "p7")]
    encoded = FeatureEncoder(c.semantic_channels, c.encoder_channels, c.encoder_convs, dtype,
                             name="feature_encoder")([p[f"P{k}"] for k in range(2, 6)]).astype(jnp.float32)
    num_regions = len(self.is_thing) - sum(self.is_thing) + 1
    position = PositionHead(self.num_things, num_regions, c.head_channels, c.head_convs, c.center_bias,
                            c.position_deform, dtype, name="position_head")
    kernel_head = KernelHead(c.head_channels, c.head_convs, dtype, name="kernel_head")
    heads = [(*position(y), kernel_head(y)) for y in levels]
    centers, regions, kernels = ([h[i].astype(jnp.float32) for h in heads] for i in range(3))
    thing_embed = nn.Dense(c.encoder_channels, kernel_init=_NORMAL, name="thing_generator")
    stuff_embed = nn.Dense(c.encoder_channels, kernel_init=_NORMAL, name="stuff_generator")
    if train:
      return _train_outputs(c, self.is_thing, centers, regions, kernels, encoded, thing_embed, stuff_embed, targets)
    return _inference(c, centers, regions, kernels, encoded, thing_embed, stuff_embed, images.shape[1:3])


# ---------------------------------------------------------------------------------------------------------------
# Targets (the official GenerateGT), per image with static shapes.

def gaussian_radius(width, height, min_overlap):
  """CornerNet's radius of a box (width, height) for which a shifted box keeps IoU >= min_overlap (the smallest
  root of its three cases, as the official get_gaussian_radius)."""
  b1, c1 = height + width, width * height * (1 - min_overlap) / (1 + min_overlap)
  r1 = (b1 + jnp.sqrt(b1 ** 2 - 4 * c1)) / 2
  b2, c2 = 2 * (height + width), (1 - min_overlap) * width * height
  r2 = (b2 + jnp.sqrt(b2 ** 2 - 16 * c2)) / 2
  a3, b3, c3 = 4 * min_overlap, -2 * min_overlap * (height + width), (min_overlap - 1) * width * height
  r3 = (b3 + jnp.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
  return jnp.minimum(r1, jnp.minimum(r2, r3))


def thing_targets(boxes, masks, classes, valid, level_shapes, scales, num_things, min_overlap, sigma_factor):
  """One image's thing targets.

  Args:
    boxes: [M, 4] (x1, y1, x2, y2) input pixels; masks: [M, H, W] binary; classes: [M] thing labels 1..K;
    valid: [M] bool (padding and crowds False).
    level_shapes: static (h, w) of P3..P7; scales: static (lo, hi) of sqrt(box area) per level.

  Returns:
    masks [M, H/4, W/4] float (bilinear, the Dice targets), and per level: heatmap [h, w, K] (the max of the
    instances' Gaussians), index [M] int32 (the centre's flat position), assigned [M] bool.
  """
  m, height, width = masks.shape
  h4, w4 = height // ENCODER_STRIDE, width // ENCODER_STRIDE
  small = resize(masks.astype(jnp.float32).transpose(1, 2, 0)[None], h4, w4)[0].transpose(2, 0, 1)
  points = (small > 0).astype(jnp.int32)
  count = points.sum((1, 2))
  f32 = jnp.float32
  mass_x = (points * jnp.arange(w4)).sum((1, 2)).astype(f32) / jnp.maximum(count, 1).astype(f32)
  mass_y = (points * jnp.arange(h4)[:, None]).sum((1, 2)).astype(f32) / jnp.maximum(count, 1).astype(f32)
  valid = valid & (count > 0)
  area = jnp.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
  heatmaps, indices, assigned = [], [], []
  for (fh, fw), (lo, hi) in zip(level_shapes, scales):
    hit = valid & (area >= lo) & (area <= hi)
    cx = jnp.clip((mass_x * f32(fw / w4)).astype(jnp.int32), 0, fw - 1)
    cy = jnp.clip((mass_y * f32(fh / h4)).astype(jnp.int32), 0, fh - 1)
    box_w = (boxes[:, 2] - boxes[:, 0]) * f32(fw / width)
    box_h = (boxes[:, 3] - boxes[:, 1]) * f32(fh / height)
    radius = jnp.maximum(gaussian_radius(box_w, box_h, min_overlap), 0).astype(jnp.int32).astype(f32)
    sigma = (2 * radius + 1) / sigma_factor
    dx = jnp.arange(fw)[None, None, :] - cx[:, None, None]
    dy = jnp.arange(fh)[None, :, None] - cy[:, None, None]
    inside = (jnp.abs(dx) <= radius[:, None, None]) & (jnp.abs(dy) <= radius[:, None, None]) & hit[:, None, None]
    gaussian = jnp.where(inside, jnp.exp(-(dx * dx + dy * dy) / (2 * sigma * sigma)[:, None, None]), 0.0)
    segment = jnp.where(hit, classes - 1, num_things)  # others into a dropped segment
    heat = jax.ops.segment_max(gaussian, segment, num_segments=num_things + 1)[:num_things]
    heatmaps.append(jnp.maximum(heat, 0).transpose(1, 2, 0))
    indices.append(cy * fw + cx)
    assigned.append(hit)
  return small, heatmaps, indices, assigned


def stuff_targets(semantic, is_thing, level_shapes):
  """One image's region targets: semantic train ids [H, W] (255 VOID) -> the 1/4-scale soft one-hot map
  [H/4, W/4, S+1] (class 0: things; the stuff Dice targets), and per level the focal targets [h, w, S+1] (that map
  resized, values under 0.5 set to 0) and the classes present there [S+1] bool."""
  height, width = semantic.shape
  labels = semantic_targets(semantic, is_thing)
  num_regions = len(is_thing) - sum(is_thing) + 1
  one_hot = (labels[..., None] == jnp.arange(num_regions)).astype(jnp.float32)  # VOID: all 0
  small = resize(one_hot[None], height // ENCODER_STRIDE, width // ENCODER_STRIDE)[0]
  scores, present = [], []
  for fh, fw in level_shapes:
    score = jnp.minimum(resize(small[None], fh, fw)[0], 1.0)
    score = jnp.where(score < 0.5, 0.0, score)
    scores.append(score)
    present.append((score > 0).any((0, 1)))
  return small, scores, present


def _train_outputs(c, is_thing, centers, regions, kernels, encoded, thing_embed, stuff_embed, targets):
  """The logits, targets and Dice terms of each level (the official losses / loss_single_level before reduction)."""
  level_shapes = tuple(x.shape[1:3] for x in centers)
  valid = targets["instance_valid"] & ~targets["is_crowd"]
  small, heatmaps, indices, assigned = jax.vmap(
      lambda b, m, k, v: thing_targets(b, m, k, v, level_shapes, tuple(map(tuple, c.instance_scales)),
                                       centers[0].shape[-1], c.min_overlap, c.gaussian_sigma))(
          targets["boxes"], targets["masks"], targets["classes"], valid)
  semantic_small, region_targets, present = jax.vmap(lambda s: stuff_targets(s, is_thing, level_shapes))(
      targets["semantic"])
  n, h4, w4, e = encoded.shape
  features = encoded.reshape(n, h4 * w4, e)
  thing_logits, thing_weights, stuff_logits = [], [], []
  classes = jnp.maximum(targets["classes"] - 1, 0)
  for (fh, fw), center, kernel, region_target in zip(level_shapes, centers, kernels, region_targets):
    # Eq. 6-7: a thing's k best points of its class's heatmap inside its mask (resized to the level).
    guide = resize(small.transpose(0, 2, 3, 1), fh, fw).transpose(0, 3, 1, 2).reshape(n, -1, fh * fw)
    score = jnp.take_along_axis(jax.nn.sigmoid(center).reshape(n, fh * fw, -1), classes[:, None, :], axis=2)
    guidance = jnp.where(guide > GUIDE_THRESHOLD, score.transpose(0, 2, 1), 0.0)
    weights, positions = jax.lax.top_k(guidance, min(c.pos_num, fh * fw))
    pad = ((0, 0), (0, 0), (0, c.pos_num - weights.shape[-1]))
    weights, positions = jnp.pad(weights, pad), jnp.pad(positions, pad)
    flat = kernel.reshape(n, fh * fw, -1)
    picked = jnp.take_along_axis(flat, positions.reshape(n, -1)[..., None], axis=1)
    thing_kernels = thing_embed(picked).reshape(*positions.shape, e)  # [N, M, k, C_e]
    thing_logits.append(jnp.einsum("nmke,npe->nmkp", thing_kernels, features))
    thing_weights.append(weights / jnp.maximum(weights.sum(-1, keepdims=True), 1e-8))
    # A stuff class's kernel: the kernel features averaged over its region (the official adaptive_avg_pool2d of
    # the masked map, i.e. divided by the level's h w).
    region = (region_target > 0).astype(jnp.float32).reshape(n, fh * fw, -1)
    stuff_kernels = stuff_embed(jnp.einsum("nqs,nqd->nsd", region, flat) / (fh * fw))
    stuff_logits.append(jnp.einsum("nse,npe->nsp", stuff_kernels, features))
  stack = lambda xs: jnp.stack(xs, axis=1)
  return {"center_logits": centers, "center_targets": heatmaps, "region_logits": regions,
          "region_targets": region_targets,
          "thing_mask_logits": stack(thing_logits), "thing_weights": stack(thing_weights),
          "thing_mask_targets": small.reshape(n, small.shape[1], -1), "thing_valid": stack(assigned),
          "stuff_mask_logits": stack(stuff_logits), "stuff_valid": stack(present),
          "stuff_mask_targets": semantic_small.reshape(n, -1, semantic_small.shape[-1]).transpose(0, 2, 1)}


def _config(overrides):
  """model_config() updated with `overrides`, checked by segjax.models.validation and for the heads' shapes."""
  config = validated(overrides, model_config())
  if len(config.instance_scales) != len(POOL_SIZES):
    raise ValueError(f"config.model.instance_scales: one (lo, hi) per level P3..P7; got {config.instance_scales}")
  for name in ("semantic_channels", "head_channels"):
    if config[name] % 32:
      raise ValueError(f"config.model.{name} must be a multiple of 32 (GroupNorm's 32 groups); got {config[name]}")
  return config


def build(config, info):
  config = _config(config)
  return PanopticFCN(config=config, num_things=info.num_thing_classes,
                     is_thing=tuple(bool(c.isthing) for c in info.categories))


def loss(outputs, batch, model_config):
  """position_weight (L_pos_th + L_pos_st) + segment_weight (L_seg_th + L_seg_st), normalised as the official
  PanopticFCN.losses; batch is unused (the targets come with the outputs)."""
  del batch
  c = _config(model_config)
  num_things = jnp.maximum(outputs["thing_valid"].sum(), 1).astype(jnp.float32)
  num_stuff = jnp.maximum(outputs["stuff_valid"].sum(), 1).astype(jnp.float32)
  num_images = outputs["region_logits"][0].shape[0]
  focal = lambda x, t: sigmoid_focal_loss(x, t, FOCAL_ALPHA, FOCAL_GAMMA)
  pos_th = sum(focal(x, t).sum() for x, t in zip(outputs["center_logits"], outputs["center_targets"]))
  # Stuff focal: the mean over a map's pixels, summed over classes and images (Eq. 2).
  pos_st = sum(focal(x, t).mean((1, 2)).sum() for x, t in zip(outputs["region_logits"], outputs["region_targets"]))
  thing_targets_ = jnp.broadcast_to(outputs["thing_mask_targets"][:, None, :, None], outputs["thing_mask_logits"].shape)
  seg_th = weighted_dice_loss(outputs["thing_mask_logits"], thing_targets_,
                              outputs["thing_weights"] * outputs["thing_valid"][..., None])
  stuff_targets_ = jnp.broadcast_to(outputs["stuff_mask_targets"][:, None], outputs["stuff_mask_logits"].shape)
  seg_st = weighted_dice_loss(outputs["stuff_mask_logits"], stuff_targets_, outputs["stuff_valid"].astype(jnp.float32))
  metrics = {"loss_pos_th": c.position_weight * pos_th / num_things,
             "loss_pos_st": c.position_weight * pos_st / num_images,
             "loss_seg_th": c.segment_weight * seg_th / num_things,
             "loss_seg_st": c.segment_weight * seg_st / num_stuff}
  return sum(metrics.values()), metrics


# ---------------------------------------------------------------------------------------------------------------
# Inference.

def _window(x, size, init, op):
  pad = (size - 1) // 2
  return jax.lax.reduce_window(x, init, op, (size, size, 1), (1, 1, 1), ((pad, pad), (pad, pad), (0, 0)))


def thing_candidates(center_logits, pool_size, top_num, threshold):
  """One level of one image: centre logits [h, w, K] -> the top min(h w, top_num) peaks: scores, flat positions,
  classes 0..K-1 and valid (score > threshold); the heatmap averaged with its pool_size mean (zero padding counted)
  and kept at its 3x3 maxima first."""
  h, w, k = center_logits.shape
  heat = jax.nn.sigmoid(center_logits)
  heat = (heat + _window(heat, pool_size, 0.0, jax.lax.add) / pool_size ** 2) / 2
  heat = jnp.where(_window(heat, 3, -jnp.inf, jax.lax.max) == heat, heat, 0.0)
  scores, index = jax.lax.top_k(heat.reshape(-1), min(h * w, top_num))
  return scores, index // k, index % k, scores > threshold


def fuse_thing_kernels(kernels, classes, valid, threshold):
  """The official ThingGenerator.kernel_fusion with static shapes (Eq. 3-5): kernels [T, C] in decreasing score,
  classes [T], valid [T] -> fused [T, C], keep [T].

  Kernel j joins the first (best) kernel i <= j of its class with cosine similarity >= threshold; i survives when
  that first one is itself, and becomes the mean of the kernels that joined it."""
  unit = kernels / jnp.maximum(jnp.linalg.norm(kernels, axis=1, keepdims=True), 1e-8)
  label = jnp.triu(unit @ unit.T >= threshold) & (classes[:, None] == classes[None, :])
  label &= valid[:, None] & valid[None, :]
  first = jnp.cumsum(label, axis=0) < 2
  keep = jnp.diagonal(first) & valid
  joined = (label & first & keep[:, None]).astype(kernels.dtype)
  return joined @ kernels / jnp.maximum(joined.sum(1, keepdims=True), 1), keep


def stuff_candidates(region_logits, kernel_features, threshold):
  """One level of one image: region logits [h, w, S+1], kernel features [h, w, D] -> per class: the kernel feature
  summed over its argmax region / (h w), its mean probability there, keep (present and score > threshold)."""
  h, w, s = region_logits.shape
  prob = jax.nn.sigmoid(region_logits).reshape(h * w, s)
  region = (jnp.argmax(prob, -1)[:, None] == jnp.arange(s)).astype(prob.dtype)
  count = region.sum(0)
  score = (prob * region).sum(0) / jnp.maximum(count, 1)
  return region.T @ kernel_features.reshape(h * w, -1) / (h * w), score, (count > 0) & (score > threshold)


def fuse_stuff_kernels(kernels, scores, keep):
  """The official StuffGenerator.kernel_fusion over the levels: kernels [L, S+1, D], scores, keep [L, S+1] -> the
  mean kernel [S+1, D] and score [S+1] of each class over the levels keeping it, kept [S+1]."""
  weight = keep.astype(kernels.dtype)
  count = weight.sum(0)
  fused = jnp.einsum("ls,lsd->sd", weight, kernels) / jnp.maximum(count, 1)[:, None]
  return fused, (weight * scores).sum(0) / jnp.maximum(count, 1), count > 0


def _inference(c, centers, regions, kernels, encoded, thing_embed, stuff_embed, image_hw):
  n, h4, w4, e = encoded.shape
  top_num = c.center_top_num // 2
  scores, features, classes, valid = [], [], [], []
  for center, kernel, pool in zip(centers, kernels, POOL_SIZES):
    s, position, k, v = jax.vmap(lambda x: thing_candidates(x, pool, top_num, c.center_threshold))(center)
    features.append(jnp.take_along_axis(kernel.reshape(n, -1, kernel.shape[-1]), position[..., None], axis=1))
    scores, classes, valid = scores + [s], classes + [k], valid + [v]
  scores, features, classes, valid = (jnp.concatenate(x, axis=1) for x in (scores, features, classes, valid))
  order = jnp.argsort(-jnp.where(valid, scores, -1.0), axis=1)
  take = lambda x: jnp.take_along_axis(x, order.reshape(order.shape + (1,) * (x.ndim - 2)), axis=1)
  scores, features, classes, valid = take(scores), take(features), take(classes), take(valid)
  thing_kernels, keep = jax.vmap(lambda k, l, v: fuse_thing_kernels(k, l, v, c.similarity_threshold))(
      thing_embed(features), classes, valid)
  stuff = [jax.vmap(lambda r, k: stuff_candidates(r, k, c.stuff_threshold))(r, k) for r, k in zip(regions, kernels)]
  stuff_features, _, stuff_kept = jax.vmap(fuse_stuff_kernels)(*(jnp.stack(x, axis=1) for x in zip(*stuff)))
  stuff_masks = jax.nn.sigmoid(jnp.einsum("nse,nhwe->nhws", stuff_embed(stuff_features), encoded))
  stuff_masks = resize(stuff_masks, *image_hw)
  semantic = jnp.argmax(jnp.where(stuff_kept[:, None, None], stuff_masks, 0.0), -1).astype(jnp.int32)
  things = jax.vmap(lambda k, s, l, v, f: _things(c, k, s, l, v, f, image_hw))(
      thing_kernels, scores, classes, keep, encoded)
  num_stuff = stuff_masks.shape[-1] - 1
  merge = lambda m, s, l, v, sem: panoptic_merge(
      m > c.mask_threshold, s, l, v, sem, num_stuff, overlap_threshold=c.overlap_threshold,
      stuff_area_threshold=c.stuff_area_threshold, instance_score_threshold=c.instance_score_threshold)
  panoptic, segments = jax.vmap(merge)(things["masks"], things["scores"], things["labels"], things["valid"], semantic)
  return {**things, "semantic": semantic, "panoptic": panoptic, **{f"segment_{k}": v for k, v in segments.items()}}


def _things(c, kernels, scores, classes, keep, features, image_hw):
  """process_inst on one image: fused kernels [T, C_e] -> the contract's top center_top_num detections."""
  prob = jax.nn.sigmoid(jnp.einsum("te,hwe->thw", kernels, features))
  binary = prob > c.mask_threshold
  maskness = (prob * binary).sum((1, 2)) / (binary.sum((1, 2)) + 1e-6)  # object rescoring
  scores = scores * maskness
  keep &= scores >= SCORE_FLOOR
  top, pick = jax.lax.top_k(jnp.where(keep, scores, -1.0), min(c.center_top_num, scores.shape[0]))
  keep = keep[pick]
  masks = resize(prob[pick][..., None], *image_hw)[..., 0] * keep[:, None, None]
  binary = masks > c.mask_threshold
  # Pixel edges (x2, y2 one past the last pixel), as the pipeline's ground-truth boxes.
  boxes = jnp.where(binary.any((1, 2))[:, None], masks_to_boxes(binary) + jnp.array([0, 0, 1, 1], jnp.float32), 0)
  return {"boxes": boxes, "scores": jnp.where(keep, top, 0.0), "labels": (classes[pick] + 1).astype(jnp.int32),
          "masks": masks, "valid": keep}


def predict(outputs, model_config):
  """The detections and the panoptic map with its K + S segment rows (see segjax.models' contract), made in the
  forward pass (its thresholds are config.model's), which needs the kernel generators' embeddings."""
  del model_config
  keys = ("boxes", "scores", "labels", "masks", "valid", "panoptic", *(f"segment_{k}" for k in SEGMENT_KEYS))
  return {k: outputs[k] for k in keys}
