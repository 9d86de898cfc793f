"""Instance masks: pasting m x m mask predictions into the image, mask bounding boxes, RoI mask targets.

Pasting uses static shapes: each mask is resampled over the whole image by two per-mask interpolation
matrices (rows [K, H, S], columns [K, W, S]), image = Wy @ mask @ Wx^T, instead of a variable-size crop.
Bilinear interpolation is separable, so this equals the reference's resize-then-crop.
"""
import jax
import jax.numpy as jnp

from segjax.ops.boxes import check_boxes

PASTE_STYLES = ("torchvision", "detectron2")


def _one_hot_pair(i0, i1, lambda1, size):
  """[..., size] interpolation weights: (1 - lambda1) at i0 plus lambda1 at i1."""
  grid = jnp.arange(size)
  return ((grid == i0[..., None]) * (1 - lambda1)[..., None] + (grid == i1[..., None]) * lambda1[..., None])


def _torchvision_weights(lo, hi, length, size):
  """[K, length, size]: F.interpolate(bilinear, align_corners=False) of `size` samples onto the integer
  box [lo, hi] (inclusive) of an axis of `length` pixels, zero outside the box."""
  out_size = jnp.maximum(hi - lo + 1, 1)
  pixel = jnp.arange(length)[None, :]
  scale = (size / out_size.astype(jnp.float32))[:, None]
  # ATen area_pixel_compute_source_index and guard_index_and_lambda (align_corners=False).
  src = jnp.maximum(scale * ((pixel - lo[:, None]).astype(jnp.float32) + 0.5) - 0.5, 0)
  i0 = jnp.minimum(jnp.floor(src).astype(jnp.int32), size - 1)
  lambda1 = jnp.clip(src - i0, 0, 1)
  i1 = jnp.minimum(i0 + 1, size - 1)
  inside = (pixel >= lo[:, None]) & (pixel <= hi[:, None])
  return _one_hot_pair(i0, i1, lambda1, size) * inside[..., None]


def _detectron2_weights(lo, hi, length, size):
  """[K, length, size]: F.grid_sample(bilinear, zeros padding, align_corners=False) of `size` samples
  stretched over the float box [lo, hi] at pixel centres, cut to detectron2's per-mask paste region
  [floor(lo) - 1, ceil(hi) + 1)."""
  pixel = jnp.arange(length)[None, :]
  lo, hi = lo[:, None], hi[:, None]
  normalised = (pixel.astype(jnp.float32) + 0.5 - lo) / (hi - lo) * 2 - 1
  src = ((normalised + 1) * size - 1) / 2
  i0 = jnp.floor(src)
  lambda1 = src - i0
  i0 = i0.astype(jnp.int32)
  # Out-of-range taps read zeros: they match no column of the one-hot and vanish.
  region = (pixel >= jnp.floor(lo) - 1) & (pixel < jnp.ceil(hi) + 1)
  return _one_hot_pair(i0, i0 + 1, lambda1, size) * region[..., None]


def paste_masks_in_image(masks, boxes, height, width, padding=1, style="torchvision"):
  """Pastes per-box mask probabilities into a full image.

  torchvision (roi_heads.paste_masks_in_image): masks are zero-padded by `padding` pixels, boxes expanded
  by (m + 2 padding) / m about their centre and truncated to integers, each mask is resized bilinearly
  (align_corners=False) to the inclusive integer box and cropped to the image.
  detectron2 (layers.mask_ops.paste_masks_in_image before its threshold, CPU path): masks are sampled
  with grid_sample at pixel centres over the float box, no padding (`padding` is not used).

  Args:
    masks: [K, m, m] float mask probabilities.
    boxes: [K, 4] float (x1, y1, x2, y2) in image pixels.
    height, width: static image size.
    padding: torchvision's mask padding.
    style: "torchvision" or "detectron2".

  Returns:
    [K, height, width] float32 pasted masks (not thresholded).
  """
  if jnp.ndim(masks) != 3 or masks.shape[1] != masks.shape[2]:
    raise ValueError(f"masks must have shape [K, m, m], got {jnp.shape(masks)}")
  check_boxes(boxes, "boxes", ndim=2)
  if boxes.shape[0] != masks.shape[0]:
    raise ValueError(f"boxes must have shape ({masks.shape[0]}, 4) to match masks, got {boxes.shape}")
  masks = masks.astype(jnp.float32)
  boxes = boxes.astype(jnp.float32)
  if style == "torchvision":
    size = masks.shape[-1]
    masks = jnp.pad(masks, ((0, 0), (padding, padding), (padding, padding)))
    scale = jnp.float32((size + 2 * padding) / size)
    half_w = (boxes[:, 2] - boxes[:, 0]) * 0.5 * scale
    half_h = (boxes[:, 3] - boxes[:, 1]) * 0.5 * scale
    ctr_x = (boxes[:, 2] + boxes[:, 0]) * 0.5
    ctr_y = (boxes[:, 3] + boxes[:, 1]) * 0.5
    # .to(int64) truncates toward zero.
    x0, x1, y0, y1 = (jnp.trunc(v).astype(jnp.int32)
                      for v in (ctr_x - half_w, ctr_x + half_w, ctr_y - half_h, ctr_y + half_h))
    weights = _torchvision_weights
  elif style == "detectron2":
    x0, y0, x1, y1 = boxes.T
    weights = _detectron2_weights
  else:
    raise ValueError(f"style must be one of {PASTE_STYLES}, got {style!r}")
  size = masks.shape[-1]
  rows = weights(y0, y1, height, size)
  cols = weights(x0, x1, width, size)
  return jnp.einsum("kys,kst,kxt->kyx", rows, masks, cols, precision=jax.lax.Precision.HIGHEST)


def masks_to_boxes(masks):
  """Tight boxes [K, 4] float32 (x1, y1, x2, y2) of the non-zero pixels of masks [K, H, W], inclusive
  pixel indices as torchvision.ops.masks_to_boxes; empty masks give zeros."""
  if jnp.ndim(masks) != 3:
    raise ValueError(f"masks must have shape [K, H, W], got {jnp.shape(masks)}")
  _, h, w = masks.shape
  rows = jnp.any(masks != 0, axis=2)
  cols = jnp.any(masks != 0, axis=1)
  y1 = jnp.argmax(rows, axis=1)
  x1 = jnp.argmax(cols, axis=1)
  y2 = h - 1 - jnp.argmax(rows[:, ::-1], axis=1)
  x2 = w - 1 - jnp.argmax(cols[:, ::-1], axis=1)
  boxes = jnp.stack([x1, y1, x2, y2], axis=1).astype(jnp.float32)
  return jnp.where(jnp.any(rows, axis=1)[:, None], boxes, 0)


def roi_mask_targets(gt_masks, rois, matched_gt, m):
  """Mask R-CNN mask targets: each RoI's matched ground-truth mask cropped and resized to m x m.

  As torchvision's project_masks_on_boxes, by RoIAlign (aligned=False) of the masks at scale 1, with a
  fixed 2 x 2 samples per bin (torchvision samples ceil(roi_size / m) per bin; the two agree for RoIs of
  side in (m, 2m]).

  Args:
    gt_masks: [M, H, W] ground-truth masks.
    rois: [R, 4] (x1, y1, x2, y2) proposals.
    matched_gt: [R] int index into gt_masks; negative (unmatched) entries read mask 0; their targets
      are meaningless and must be left out of the loss.
    m: static output size.

  Returns:
    [R, m, m] float32 soft targets in [0, 1].
  """
  from segjax.ops.roi import roi_align  # pylint: disable=g-import-not-at-top  # roi.py lands separately.

  if jnp.ndim(gt_masks) != 3:
    raise ValueError(f"gt_masks must have shape [M, H, W], got {jnp.shape(gt_masks)}")
  check_boxes(rois, "rois", ndim=2)
  if jnp.shape(matched_gt) != rois.shape[:1]:
    raise ValueError(
        f"matched_gt must have shape ({rois.shape[0]},) to match rois, got {jnp.shape(matched_gt)}")
  batch_index = jnp.maximum(matched_gt, 0).astype(rois.dtype)
  rois5 = jnp.concatenate([batch_index[:, None], rois], axis=1)
  features = gt_masks.astype(jnp.float32)[..., None]
  targets = roi_align(features, rois5, (m, m), spatial_scale=1.0, sampling_ratio=2, aligned=False)
  return targets[..., 0]


def mask_iou(flat, area=None):
  """Pairwise IoU [N, N] of masks flattened to [N, P] ({0, 1} floats); `area` [N] defaults to their sums. A pair
  whose union is empty (two empty masks) has IoU 0, so zero-padded masks overlap nothing."""
  if area is None:
    area = flat.sum(axis=1)
  inter = flat @ flat.T
  union = area[:, None] + area[None, :] - inter
  return jnp.where(union > 0, inter / jnp.where(union > 0, union, 1), 0)
