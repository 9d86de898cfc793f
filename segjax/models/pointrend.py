"""PointRend (Kirillov et al. 2020) on Mask R-CNN R50-FPN, as detectron2's PointRend project
(projects/PointRend/point_rend: PointRendROIHeads, CoarseMaskHead, StandardPointHead; Base-PointRend-RCNN-FPN.yaml).

The detector (backbone, FPN, RPN, box head) is segjax.models.mask_rcnn's; the mask branch is replaced:
  coarse mask head: P2 bilinearly sampled (point_sample) at the 14 x 14 cell centres of each box -> 2x2 stride-2
    conv + ReLU (7x7) -> 2 FC 1024 + ReLU -> per-class 7x7 logits (Sec. 4, "a lightweight head");
  point head: at each point, P2's features (point_sample at the point's image position) concatenated with the
    coarse logits of every class sampled there -> 3 shared-MLP layers of 256 (1x1 convs + ReLU), the coarse
    logits concatenated to each layer's input -> per-class point logits.
Training (Sec. 3.3): per positive RoI, 14^2 points: of 3 x 14^2 uniform candidates the 0.75 x 14^2 of largest
uncertainty -|coarse logit of the GT class| and the rest at random; point labels are the GT mask bilinearly sampled
at the points; loss = Mask R-CNN's losses with the coarse 7x7 mask loss + BCE at the points.
Inference (Sec. 3.1, adaptive subdivision): the coarse 7x7 logits of the detected class are upsampled x2
(bilinear) `subdivision_steps` times to 224 x 224; at each step the `subdivision_num_points` (28^2) most uncertain
cells are replaced by the point head's predictions (a step whose every cell would be recomputed is skipped, as
detectron2). Every RoI refines the same number of points: static shapes.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from segjax.models import mask_rcnn
from segjax.ops.masks import roi_mask_targets
from segjax.ops.points import (boxes_to_image_points, point_sample, regular_grid_points, select_uncertain_points,
                               uncertain_points_on_grid, uncertainty)
from segjax.ops.pooling import resize_bilinear

TASK = mask_rcnn.TASK
BATCH_KEYS = mask_rcnn.BATCH_KEYS
FORWARD_KEYS = mask_rcnn.FORWARD_KEYS
SIZE_DIVISIBILITY = mask_rcnn.SIZE_DIVISIBILITY
INFERENCE_KEYS = mask_rcnn.INFERENCE_KEYS | {"subdivision_steps", "subdivision_num_points"}
_P2_SCALE = 1 / 4
# detectron2's c2_msra_fill (conv) and c2_xavier_fill (FC) initialisations.
_MSRA_FILL = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
_XAVIER_FILL = nn.initializers.variance_scaling(1.0, "fan_in", "uniform")


def model_config() -> ml_collections.ConfigDict:
  """Mask R-CNN R50-FPN's defaults (mask_rcnn.model_config) plus detectron2's PointRend defaults
  (point_rend/config.py, Base-PointRend-RCNN-FPN.yaml). mask_head_channels is the coarse head's conv width
  (ROI_MASK_HEAD.CONV_DIM)."""
  config = mask_rcnn.model_config()
  config.name = "pointrend"
  config.update({
      "coarse_pooler_resolution": 14, "coarse_resolution": 7, "coarse_fc_dim": 1024, "coarse_num_fc": 2,
      "point_fc_dim": 256, "point_num_fc": 3, "train_num_points": 14 * 14, "oversample_ratio": 3,
      "importance_sample_ratio": 0.75, "subdivision_steps": 5, "subdivision_num_points": 28 * 28})
  return config


class CoarseMaskHead(nn.Module):
  """detectron2's CoarseMaskHead: RoI features [R, 2S, 2S, C] -> (1x1 conv + ReLU to conv_dim channels where C
  exceeds it) -> 2x2 stride-2 conv + ReLU -> num_fc FC + ReLU -> logits [R, S', S', K] (S' = resolution, K
  foreground classes). The convolutions are matrix products: the head runs inside the mask loop's body."""
  num_classes: int
  resolution: int = 7
  conv_dim: int = 256
  fc_dim: int = 1024
  num_fc: int = 2
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    if x.shape[-1] > self.conv_dim:
      x = nn.relu(nn.Dense(self.conv_dim, kernel_init=_MSRA_FILL, dtype=self.dtype, name="reduce_channel_dim_conv")(x))
    r, h, w, c = x.shape
    # The 2x2 stride-2 convolution as a matrix product over each 2x2 block (no convolution inside the mask loop).
    x = x.reshape(r, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(r, h // 2, w // 2, 4 * c)
    kernel = self.param("reduce_spatial_dim_conv_kernel", _MSRA_FILL, (2, 2, c, self.conv_dim))
    bias = self.param("reduce_spatial_dim_conv_bias", nn.initializers.zeros, (self.conv_dim,))
    x = nn.relu(jnp.dot(x, kernel.reshape(4 * c, self.conv_dim).astype(self.dtype)) + bias.astype(self.dtype))
    x = x.reshape(r, x.shape[1] * x.shape[2] * x.shape[3])
    for i in range(1, self.num_fc + 1):
      x = nn.relu(nn.Dense(self.fc_dim, kernel_init=_XAVIER_FILL, dtype=self.dtype, name=f"coarse_mask_fc{i}")(x))
    s = self.resolution
    x = nn.Dense(s * s * self.num_classes, kernel_init=nn.initializers.normal(0.001), dtype=self.dtype,
                 name="prediction")(x)
    return x.reshape(r, s, s, self.num_classes).astype(jnp.float32)


class StandardPointHead(nn.Module):
  """detectron2's StandardPointHead: fine-grained features [..., C] and coarse logits [..., K] at each point ->
  point logits [..., K]; num_fc shared-MLP layers, the coarse logits concatenated to each layer's input."""
  num_classes: int
  fc_dim: int = 256
  num_fc: int = 3
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, fine, coarse):
    coarse = coarse.astype(self.dtype)
    x = jnp.concatenate([fine.astype(self.dtype), coarse], -1)
    for i in range(1, self.num_fc + 1):
      x = nn.relu(nn.Dense(self.fc_dim, kernel_init=_MSRA_FILL, dtype=self.dtype, name=f"fc{i}")(x))
      x = jnp.concatenate([x, coarse], -1)
    x = nn.Dense(self.num_classes, kernel_init=nn.initializers.normal(0.001), dtype=self.dtype, name="predictor")(x)
    return x.astype(jnp.float32)


def _of_class(logits, labels):
  """logits [N, R, ..., K] of foreground classes, labels [N, R] in 1..K (0: padding) -> [N, R, ...]."""
  index = jnp.maximum(labels - 1, 0).reshape(*labels.shape, *(1,) * (logits.ndim - 2))
  return jnp.take_along_axis(logits, index, -1)[..., 0]


class PointRend(mask_rcnn.MaskRCNN):
  """Mask R-CNN's module with PointRend's mask branch: training outputs add "point_logits", "point_labels"
  [N, P, points]; inference masks are the subdivided 224 x 224 logits' probabilities (mask_probabilities)."""

  def _p2_points(self, p2, boxes, points):
    """P2 features at box-relative points [N, R, P, 2] of boxes [N, R, 4] -> [N, R, P, C] (detectron2's
    point_sample_fine_grained_features on P2)."""
    n, r, p, _ = points.shape
    image_points = boxes_to_image_points(boxes.reshape(n * r, 4), points.reshape(n * r, p, 2))
    extent = jnp.asarray([p2.shape[2], p2.shape[1]], jnp.float32) / _P2_SCALE  # the map's extent in pixels
    return point_sample(p2, (image_points / extent).reshape(n, r * p, 2)).reshape(n, r, p, p2.shape[-1])

  def _heads(self):
    """The mask branch's submodules "coarse_mask_head" and "point_head" (created once per call)."""
    c = self.config
    dtype = jnp.dtype(c.dtype)
    return (CoarseMaskHead(self.num_classes - 1, c.coarse_resolution, c.mask_head_channels, c.coarse_fc_dim,
                           c.coarse_num_fc, dtype=dtype, name="coarse_mask_head"),
            StandardPointHead(self.num_classes - 1, c.point_fc_dim, c.point_num_fc, dtype=dtype, name="point_head"))

  def _coarse_logits(self, coarse_head, p2, boxes):
    """The coarse head's logits [N, R, 7, 7, K] of boxes [N, R, 4], from P2 sampled at the cell centres of a
    14 x 14 grid over each box (detectron2's _forward_mask_coarse)."""
    n, r, _ = boxes.shape
    side = self.config.coarse_pooler_resolution
    grid = jnp.broadcast_to(regular_grid_points(side), (n, r, side * side, 2))
    logits = coarse_head(self._p2_points(p2, boxes, grid).reshape(n * r, side, side, p2.shape[-1]))
    return logits.reshape(n, r, *logits.shape[1:])

  def _point_logits(self, point_head, p2, boxes, points, coarse, labels):
    """The point head's logits [N, R, P] of each box's class at box-relative points [N, R, P, 2], from P2 and
    the coarse logits [N, R, 7, 7, K] of every class sampled there."""
    n, r, p, _ = points.shape
    fine = self._p2_points(p2, boxes, points)
    coarse_at_points = point_sample(coarse.reshape(n * r, *coarse.shape[2:]), points.reshape(n * r, p, 2))
    return _of_class(point_head(fine, coarse_at_points.reshape(n, r, p, coarse.shape[-1])), labels)

  def _mask_logits(self, k, levels, boxes, labels, res5):
    """Adaptive subdivision (detectron2's PointRendROIHeads._forward_mask_point at inference): the logits
    [N, k, 224, 224] of the detected class of the first k boxes [N, S, 4]."""
    del res5
    return self._subdivision(self._heads(), levels[0], boxes[:, :k], labels[:, :k])

  def _subdivision(self, heads, p2, boxes, labels):
    """The adaptive subdivision's logits [N, R, 224, 224] of the class labels [N, R] in boxes [N, R, 4]."""
    c = self.config
    n, k = labels.shape
    coarse_head, point_head = heads
    coarse = self._coarse_logits(coarse_head, p2, boxes)
    mask = _of_class(coarse, labels).reshape(n * k, *coarse.shape[2:4])
    for step in range(c.subdivision_steps):
      h, w = mask.shape[1:]
      mask = resize_bilinear(mask[..., None], 2 * h, 2 * w)[..., 0]
      if c.subdivision_num_points >= 16 * h * w and step < c.subdivision_steps - 1:
        continue  # every cell of the next step would be recomputed: detectron2 skips this one
      index, points = uncertain_points_on_grid(uncertainty(mask), c.subdivision_num_points)
      refined = self._point_logits(point_head, p2, boxes, points.reshape(n, k, *points.shape[1:]), coarse, labels)
      flat = mask.reshape(n * k, mask.shape[1] * mask.shape[2])
      mask = flat.at[jnp.arange(n * k)[:, None], index].set(refined.reshape(index.shape)).reshape(mask.shape)
    return mask.reshape(n, k, *mask.shape[1:])

  def _mask_train_outputs(self, targets, levels, rois, labels, matched, positive, res5):
    """Coarse logits and targets (Mask R-CNN's "mask_*" entries at 7 x 7) and the point head's logits at the
    training points with the GT masks' values there ("point_logits", "point_labels" [N, P, train_num_points])."""
    del res5
    c = self.config
    n, p = labels.shape
    num_sampled = c.train_num_points * c.oversample_ratio
    point_key, perm_key = jax.random.split(self.make_rng("sampling"))
    candidates = jax.random.uniform(point_key, (n, p, num_sampled, 2), jnp.float32)
    permutation = jax.random.permutation(perm_key, num_sampled - int(c.importance_sample_ratio * c.train_num_points))
    gt_masks = jnp.moveaxis(targets["masks"], 1, -1).astype(jnp.float32)  # [N, H, W, M]

    def heads(mdl, k, shared, rois, labels, matched, candidates):
      p2, gt_masks, permutation = shared
      rois, labels, matched, candidates = rois[:, :k], labels[:, :k], matched[:, :k], candidates[:, :k]
      coarse_head, point_head = mdl._heads()
      coarse = mdl._coarse_logits(coarse_head, p2, rois)
      coarse_of_class = _of_class(coarse, labels)
      points = select_uncertain_points(
          jax.lax.stop_gradient(coarse_of_class).reshape(n * k, *coarse.shape[2:4]),
          candidates.reshape(n * k, num_sampled, 2), permutation, c.train_num_points, c.importance_sample_ratio)
      points = points.reshape(n, k, c.train_num_points, 2)
      point_logits = mdl._point_logits(point_head, p2, rois, points, coarse, labels)
      # Point labels: each RoI's matched GT mask bilinearly sampled at the points' image positions.
      image_points = boxes_to_image_points(rois.reshape(n * k, 4), points.reshape(n * k, c.train_num_points, 2))
      extent = jnp.asarray([gt_masks.shape[2], gt_masks.shape[1]], jnp.float32)
      at_points = point_sample(gt_masks, (image_points / extent).reshape(n, k * c.train_num_points, 2))  # [N, k * P, M]
      at_points = at_points.reshape(n, k, c.train_num_points, gt_masks.shape[-1])
      point_labels = jnp.take_along_axis(at_points, matched[..., None, None], -1)[..., 0]
      return coarse_of_class, point_logits, point_labels

    coarse, point_logits, point_labels = self._on_valid_chunks(
        heads, positive, (levels[0], gt_masks, permutation), rois, labels, matched, candidates)
    resolution = coarse.shape[2]
    mask_targets = jax.vmap(lambda m, r, i: roi_mask_targets(m, r, i, resolution))(
        targets["masks"], rois, matched)
    return {"mask_logits": coarse, "mask_targets": mask_targets, "mask_valid": positive,
            "point_logits": point_logits, "point_labels": jax.lax.stop_gradient(point_labels)}


def _config(overrides) -> ml_collections.FrozenConfigDict:
  config = mask_rcnn._config(overrides, model_config())  # pylint: disable=protected-access
  if config.backbone != "fpn" or not config.mask:
    raise ValueError(f"config.model: pointrend runs on the FPN backbone with its mask branch; got backbone "
                     f"{config.backbone!r}, mask {config.mask}")
  if config.coarse_pooler_resolution % 2:
    raise ValueError(f"config.model.coarse_pooler_resolution: must be even (a 2x2 stride-2 conv halves it); got "
                     f"{config.coarse_pooler_resolution}")
  if config.train_num_points < 1 or config.oversample_ratio < 1 or not 0 <= config.importance_sample_ratio <= 1:
    raise ValueError(f"config.model: train_num_points and oversample_ratio must be >= 1 and importance_sample_ratio "
                     f"in [0, 1]; got {config.train_num_points}, {config.oversample_ratio}, "
                     f"{config.importance_sample_ratio}")
  if config.subdivision_steps < 0 or config.subdivision_num_points < 1:
    raise ValueError(f"config.model: subdivision_steps must be >= 0 and subdivision_num_points >= 1; got "
                     f"{config.subdivision_steps}, {config.subdivision_num_points}")
  return config


def build(config, info):
  config = _config(config)
  num_classes, label_map = mask_rcnn.num_classes_and_label_map(config, info)
  return PointRend(num_classes=num_classes, config=config, label_map=label_map)


def loss(outputs, batch, model_config):
  """Mask R-CNN's losses (its mask loss on the coarse 7x7 logits) + loss_mask_point: BCE of the point logits
  against the GT masks' values at the points, averaged over the points of the positive RoIs (detectron2's
  roi_mask_point_loss)."""
  total, metrics = mask_rcnn.loss(outputs, batch, model_config)
  valid = outputs["mask_valid"]
  logits, labels = outputs["point_logits"], outputs["point_labels"]
  bce = (jnp.logaddexp(0.0, logits) - labels * logits).mean(-1)
  metrics["loss_mask_point"] = jnp.sum(jnp.where(valid, bce, 0.0)) / jnp.maximum(valid.sum(), 1)
  return total + metrics["loss_mask_point"], metrics


def predict(outputs, model_config):
  """Mask R-CNN's detections, masks from the subdivided 224 x 224 "mask_probabilities"."""
  return mask_rcnn.predict(outputs, model_config)
