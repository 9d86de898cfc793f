"""Instance masks: pasting m x m mask predictions into the image, boxes filled as masks, mask bounding boxes, RoI
mask targets.

Pasting uses static shapes: each mask is resampled over the whole image by two per-mask interpolation
matrices (rows [K, H, S], columns [K, W, S]), image = Wy @ mask @ Wx^T, instead of a variable-size crop.
Bilinear interpolation is separable, so this equals the reference's resize-then-crop. RoI mask targets are built
the same way: per-RoI row and column weights of RoIAlign's samples, target = Wy @ mask @ Wx^T.
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


def box_masks(boxes, height, width):
  """Boxes [..., 4] (x1, y1, x2, y2) filled as masks [..., height, width] float32: pixel (y, x) is 1 where its
  centre (x + .5, y + .5) lies in [x1, x2) x [y1, y2). What a box-only detector (Faster R-CNN, R-FCN) reports as
  the mask of a detection, so that the instance evaluator applies to it."""
  ys, xs = jnp.arange(height) + 0.5, jnp.arange(width) + 0.5
  inside = lambda lo, hi, t: (t >= lo[..., None]) & (t < hi[..., None])
  return (inside(boxes[..., 1], boxes[..., 3], ys)[..., :, None]
          & inside(boxes[..., 0], boxes[..., 2], xs)[..., None, :]).astype(jnp.float32)


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


def _adaptive_align_weights(start, end, m, extent):
  """[R, m, extent]: the weight of each mask row (or column) in each of the m bins of torchvision's roi_align along
  one axis (aligned=False, spatial_scale 1, adaptive sampling), divided by the bin's sample count.

  The RoI [start, end] (at least 1 long) has bins of size b = length / m, each sampled at n = ceil(b) points
  y_k = start + i b + (k + 0.5) b / n, k < n, read by bilinear interpolation: row h gets y - (h - 1) from the
  samples in (h - 1, h] and (h + 1) - y from those in (h, h + 1]; samples in [-1, 0] read row 0 and those in
  (extent - 1, extent] the last row whole; samples outside [-1, extent] read 0. The samples of a bin form an
  arithmetic progression, so each sum is closed-form: static shapes for any RoI size.
  """
  length = jnp.maximum(end - start, 1.0)
  bin_size = length / m
  count = jnp.ceil(bin_size)
  step = (bin_size / count)[:, None, None]
  first = (start[:, None] + jnp.arange(m, dtype=start.dtype) * bin_size[:, None])[..., None] + 0.5 * step
  count = count[:, None, None]
  h = jnp.arange(extent, dtype=start.dtype)

  def samples_in(lo, hi, closed):
    """(number, sum of y - lo) of a bin's samples in (lo, hi], [lo, hi] where closed: [R, m, extent]."""
    u = (lo - first) / step
    k0 = jnp.maximum(jnp.where(closed, jnp.ceil(u), jnp.floor(u) + 1), 0)
    k1 = jnp.minimum(jnp.floor((hi - first) / step), count - 1)
    number = jnp.maximum(k1 - k0 + 1, 0)
    return number, number * (first - lo + 0.5 * (k0 + k1) * step)

  below, below_sum = samples_in(jnp.where(h == 0, -1.0, h - 1), h, h == 0)
  above, above_sum = samples_in(h, h + 1, False)
  weight = (jnp.where(h == 0, below, below_sum) + jnp.where(h == extent - 1, above, above - above_sum))
  return weight / count


def roi_mask_targets(gt_masks, rois, matched_gt, m, chunk=4):
  """Mask R-CNN mask targets: each RoI's matched ground-truth mask cropped and resized to m x m.

  torchvision's project_masks_on_boxes (torchvision/models/detection/roi_heads.py, v0.29.1): roi_align of the masks
  at scale 1, aligned=False, with its adaptive ceil(roi_side / m) samples per bin. Bilinear sampling is separable,
  so each target is Wy @ mask @ Wx^T with the per-axis weights of `_adaptive_align_weights` ([m, H], [m, W]):
  static shapes whatever the RoI's size, O(m H W) per RoI (matrix products). They run `chunk` RoIs at a time, so
  that only chunk masks are gathered at once.

  Args:
    gt_masks: [M, H, W] ground-truth masks.
    rois: [R, 4] (x1, y1, x2, y2) proposals.
    matched_gt: [R] int index into gt_masks; negative (unmatched) entries read mask 0; their targets
      are meaningless and must be left out of the loss.
    m: static output size.

  Returns:
    [R, m, m] float32 soft targets in [0, 1].
  """
  if jnp.ndim(gt_masks) != 3:
    raise ValueError(f"gt_masks must have shape [M, H, W], got {jnp.shape(gt_masks)}")
  check_boxes(rois, "rois", ndim=2)
  if jnp.shape(matched_gt) != rois.shape[:1]:
    raise ValueError(
        f"matched_gt must have shape ({rois.shape[0]},) to match rois, got {jnp.shape(matched_gt)}")
  _, height, width = gt_masks.shape
  rois = jnp.asarray(rois, jnp.float32)
  wy = _adaptive_align_weights(rois[:, 1], rois[:, 3], m, height)
  wx = _adaptive_align_weights(rois[:, 0], rois[:, 2], m, width)

  def target(operands):
    wy, wx, index = operands
    mask = gt_masks[index].astype(jnp.float32)
    rows = jnp.matmul(wy, mask, precision=jax.lax.Precision.HIGHEST)  # [m, W]
    return jnp.matmul(rows, jnp.swapaxes(wx, -1, -2), precision=jax.lax.Precision.HIGHEST)

  index = jnp.maximum(jnp.asarray(matched_gt), 0)
  return jax.lax.map(target, (wy, wx, index), batch_size=min(chunk, rois.shape[0]) or None)


def mask_iou(flat, area=None):
  """Pairwise IoU [N, N] of masks flattened to [N, P] ({0, 1} floats); `area` [N] defaults to their sums. A pair
  whose union is empty (two empty masks) has IoU 0, so zero-padded masks overlap nothing."""
  if area is None:
    area = flat.sum(axis=1)
  inter = flat @ flat.T
  union = area[:, None] + area[None, :] - inter
  return jnp.where(union > 0, inter / jnp.where(union > 0, union, 1), 0)


def stepwise_detections(masks, scores, score_threshold, mask_threshold):
  """The instances of a recurrent model that emits one mask and one confidence per step (Recurrent Instance
  Segmentation, Recurrent Attention): masks [B, T, H, W] probabilities and scores [B, T] in [0, 1] -> the instance
  contract's {"boxes" [B, T, 4] (pixel edges of the binarised mask), "scores", "labels" (1, class-agnostic), "masks",
  "valid"}. A step is a detection until the first score under score_threshold (the models stop there), and only if
  its mask holds a pixel above mask_threshold."""
  b, t = scores.shape
  valid = jnp.cumprod(scores >= score_threshold, axis=1).astype(bool)
  binary = masks > mask_threshold
  boxes = jax.vmap(masks_to_boxes)(binary) + jnp.array([0, 0, 1, 1], jnp.float32)
  boxes = jnp.where(binary.any((2, 3))[..., None], boxes, 0)
  valid &= binary.any((2, 3))
  return {"boxes": boxes, "scores": jnp.where(valid, scores, 0), "labels": jnp.ones((b, t), jnp.int32),
          "masks": masks * valid[..., None, None], "valid": valid}
