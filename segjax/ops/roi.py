"""RoI pooling with torchvision semantics, NHWC: RoIAlign (Mask R-CNN), multi-level RoIAlign
(FPN eq. 1), RoIPool (Fast R-CNN), PS-RoIAlign and PS-RoIPool (R-FCN).

RoIs are ``[R, 5]`` rows ``(batch_index, x1, y1, x2, y2)`` in input-image pixels; ``spatial_scale``
maps them onto the feature map. RoIs get no gradient (torchvision returns None for them).
Batch indices outside ``[0, N)`` are clamped (torchvision reads out of bounds).
"""
from collections.abc import Sequence
import math

import jax
import jax.numpy as jnp
import numpy as np

from segjax.ops.gather import weighted_gather


def _pair(output_size):
  """(h, w) from an int or a pair, checked positive."""
  if isinstance(output_size, int):
    output_size = (output_size, output_size)
  if len(output_size) != 2 or not all(isinstance(s, int) and s > 0 for s in output_size):
    raise ValueError(f"output_size must be a positive int or (h, w) pair, got {output_size!r}")
  return tuple(output_size)


def _check(features, rois):
  """features and rois as jax arrays, shapes checked."""
  features, rois = jnp.asarray(features), jnp.asarray(rois)
  if features.ndim != 4:
    raise ValueError(f"features must be [N, H, W, C], got shape {features.shape}")
  if rois.ndim != 2 or rois.shape[1] != 5:
    raise ValueError(f"rois must be [R, 5] (batch_index, x1, y1, x2, y2), got shape {rois.shape}")
  return features, rois


def _split_rois(rois, num_images):
  """Batch index [R] int32 (clamped) and stop-gradient boxes [R, 4] in at least float32."""
  rois = jax.lax.stop_gradient(rois.astype(jnp.promote_types(rois.dtype, jnp.float32)))
  b = jnp.clip(rois[:, 0].astype(jnp.int32), 0, num_images - 1)
  return b, rois[:, 1:]


def _bilinear_taps(start, bin_size, bins, sampling_ratio, extent):
  """RoIAlign sample points along one axis and their two bilinear taps (torchvision rules).

  start, bin_size: [R]; extent: map size, int or [R]. Sample s of bin i sits at
  start + i * bin + (s + .5) * bin / S; it is zero outside [-1, extent] and clamped to
  [0, extent - 1] inside. Returns tap indices and weights, both [R, bins, S, 2].
  """
  extent = jnp.asarray(extent)[..., None, None]
  i = jnp.arange(bins, dtype=start.dtype)[:, None]
  s = jnp.arange(sampling_ratio, dtype=start.dtype)
  bin_size = bin_size[:, None, None]
  y = (start[:, None, None] + i * bin_size) + (s + 0.5) * bin_size / sampling_ratio
  valid = (y >= -1) & (y <= extent)
  y = jnp.clip(y, 0, extent - 1)
  lo = jnp.clip(jnp.floor(y), 0, jnp.maximum(extent - 2, 0))
  frac = y - lo
  weight = jnp.where(valid[..., None], jnp.stack([1 - frac, frac], -1), 0)
  lo = lo.astype(jnp.int32)
  index = jnp.stack([lo, jnp.minimum(lo + 1, extent - 1)], -1)
  return index, weight


def _roi_align_taps(b, boxes, scale, height, width, base, output_size, sampling_ratio, aligned):
  """Rows of the flattened [sum N*H*W, C] feature table and weights of all RoIAlign taps.

  scale, height, width, base (first table row of the level): scalars or per-RoI [R].
  Returns index, weight [R * ph * pw, 4 * S * S]; the weights include the 1 / S**2 average.
  """
  ph, pw = output_size
  offset = 0.5 if aligned else 0.0
  x1, y1, x2, y2 = (boxes[:, k] * scale - offset for k in range(4))
  roi_w, roi_h = x2 - x1, y2 - y1
  if not aligned:  # torchvision forces malformed RoIs to 1x1
    roi_w, roi_h = jnp.maximum(roi_w, 1.0), jnp.maximum(roi_h, 1.0)
  iy, wy = _bilinear_taps(y1, roi_h / ph, ph, sampling_ratio, height)
  ix, wx = _bilinear_taps(x1, roi_w / pw, pw, sampling_ratio, width)
  # Taps of bin (i, j), sample (s, t), corner (a, c) on axes [R, ph, pw, S, S, 2, 2].
  iy, wy = iy[:, :, None, :, None, :, None], wy[:, :, None, :, None, :, None]
  ix, wx = ix[:, None, :, None, :, None, :], wx[:, None, :, None, :, None, :]
  per_roi = lambda a: jnp.reshape(a, (-1,) + (1,) * 6)
  index = per_roi(base) + (per_roi(b) * per_roi(height) + iy) * per_roi(width) + ix
  shape = (b.shape[0] * ph * pw, 4 * sampling_ratio**2)
  return index.reshape(shape), (wy * wx / sampling_ratio**2).reshape(shape)


def _aggregate_taps(table, index, weight, sampling_ratio, aggregation):
  """The bins' values from their taps: the weighted sum ("avg", RoIAlign) or the largest of the S x S bilinear
  samples ("max", the max-aggregation rows of Mask R-CNN's Table 2c). Samples outside the map count as 0."""
  if aggregation == "avg":
    return weighted_gather(table, index, weight)
  if aggregation != "max":
    raise ValueError(f"RoI pooling: aggregation must be 'avg' or 'max'; got {aggregation!r}")
  taps = table[index] * (weight * sampling_ratio**2)[..., None]  # [U, S * S * 4, C]
  samples = taps.reshape(index.shape[0], sampling_ratio**2, 4, table.shape[-1]).sum(axis=2)  # no -1: U may be 0
  return samples.max(axis=1)


def roi_align(features, rois, output_size, spatial_scale=1.0, sampling_ratio=2, aligned=True, aggregation="avg"):
  """RoIAlign (He et al., Mask R-CNN, 2017) equal to ``torchvision.ops.roi_align``.

  Args:
    features: [N, H, W, C].
    rois: [R, 5] (batch_index, x1, y1, x2, y2).
    output_size: int or (h, w).
    spatial_scale: feature-map pixels per input pixel.
    sampling_ratio: sample points per bin along each axis, > 0. torchvision's adaptive mode
      (<= 0: ceil(roi_size / output_size) points) has a data-dependent count, so it is refused.
    aligned: shift boxes by -0.5 pixel (Detectron2's ROIAlignV2); if False, RoIs are at least 1x1.
    aggregation: "avg" (the mean of a bin's samples, RoIAlign) or "max" (their maximum).

  Returns:
    [R, h, w, C], differentiable w.r.t. ``features`` (a gather forward, a scatter-add backward).
  """
  features, rois = _check(features, rois)
  output_size = _pair(output_size)
  if sampling_ratio <= 0:
    raise ValueError(
        f"sampling_ratio must be > 0 for static shapes, got {sampling_ratio} (torchvision's "
        "adaptive mode ceil(roi_size / output_size) depends on the RoI values)")
  n, h, w, c = features.shape
  b, boxes = _split_rois(rois, n)
  index, weight = _roi_align_taps(b, boxes, spatial_scale, h, w, 0, output_size, sampling_ratio,
                                  aligned)
  out = _aggregate_taps(features.reshape(-1, c), index, weight, sampling_ratio, aggregation)
  return out.reshape(rois.shape[0], *output_size, c).astype(features.dtype)


# ---------------------------------------------------------------------------------------------
# FPN levels.


def assign_fpn_levels(boxes, k_min, k_max, canonical_scale=224, canonical_level=4, eps=None,
                      variant="torchvision"):
  """FPN level of each box, eq. 1 of Lin et al. 2017: k = floor(k0 + log2(sqrt(wh) / 224)).

  Args:
    boxes: [R, 4] (x1, y1, x2, y2) in input-image pixels.
    k_min, k_max: the finest and coarsest pyramid levels pooled from (e.g. 2 and 5).
    variant: "torchvision" (LevelMapper: floor(k0 + log2(s / 224) + eps), eps 1e-6) or
      "detectron2" (assign_boxes_to_levels: floor(k0 + log2(s / 224 + eps)), eps 1e-8).
    eps: overrides the variant's epsilon.

  Returns:
    [R] int32 level index in [0, k_max - k_min] (0 is level k_min), like both references.
  """
  boxes = jnp.asarray(boxes)
  if boxes.ndim != 2 or boxes.shape[1] != 4:
    raise ValueError(f"boxes must be [R, 4], got shape {boxes.shape}")
  if variant not in ("torchvision", "detectron2"):
    raise ValueError(f"variant must be 'torchvision' or 'detectron2', got {variant!r}")
  if k_min > k_max:
    raise ValueError(f"k_min must be <= k_max, got {k_min} > {k_max}")
  boxes = boxes.astype(jnp.promote_types(boxes.dtype, jnp.float32))
  size = jnp.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
  if variant == "torchvision":
    level = canonical_level + jnp.log2(size / canonical_scale) + (1e-6 if eps is None else eps)
  else:
    level = canonical_level + jnp.log2(size / canonical_scale + (1e-8 if eps is None else eps))
  return (jnp.clip(jnp.floor(level), k_min, k_max) - k_min).astype(jnp.int32)


def multilevel_roi_align(features: Sequence[jax.Array], rois, output_size, spatial_scales,
                         sampling_ratio=2, aligned=True, variant="torchvision", quantized=False, aggregation="avg"):
  """RoIAlign of each RoI on its FPN level (torchvision MultiScaleRoIAlign, Detectron2 ROIPooler).

  One gather over the concatenated levels (each RoI reads only its own level), so the cost is
  that of a single ``roi_align`` plus a copy of the pyramid. torchvision's MultiScaleRoIAlign
  is ``aligned=False``; Detectron2's ROIAlignV2 pooler is ``aligned=True, variant="detectron2"``.

  Args:
    features: L maps [N, H_l, W_l, C], finest first.
    rois: [R, 5] (batch_index, x1, y1, x2, y2) in input-image pixels.
    spatial_scales: L scales 2**-k for consecutive levels k (e.g. 1/4, 1/8, 1/16, 1/32).
    output_size, sampling_ratio, aligned: as in ``roi_align``.
    variant: level rule, see ``assign_fpn_levels``.
    quantized: RoIWarp (Dai et al. 2016, the middle row of Mask R-CNN's Table 2c): the RoI's corners are rounded
      to its level's grid (half away from zero, as Caffe) before the bilinear sampling and averaging.
    aggregation: "avg" or "max" over each bin's samples, as in ``roi_align``.

  Returns:
    [R, h, w, C].
  """
  if len(features) == 0 or len(features) != len(spatial_scales):
    raise ValueError(f"need one spatial_scale per feature map, got {len(spatial_scales)} scales "
                     f"for {len(features)} maps")
  features = [_check(f, rois)[0] for f in features]
  rois = jnp.asarray(rois)
  n, _, _, c = features[0].shape
  if any(f.shape[0] != n or f.shape[3] != c for f in features):
    raise ValueError(f"feature maps must share N and C, got {[f.shape for f in features]}")
  levels = [-math.log2(s) for s in spatial_scales]
  if any(abs(k - round(k)) > 1e-6 for k in levels) or any(
      round(b - a) != 1 for a, b in zip(levels, levels[1:])):
    raise ValueError(f"spatial_scales must be 2**-k for consecutive k, got {spatial_scales}")
  output_size = _pair(output_size)
  if sampling_ratio <= 0:
    raise ValueError(f"sampling_ratio must be > 0 for static shapes, got {sampling_ratio}")
  b, boxes = _split_rois(rois, n)
  level = assign_fpn_levels(boxes, round(levels[0]), round(levels[-1]), variant=variant)
  if quantized:
    scale = jnp.asarray(spatial_scales, boxes.dtype)[level][:, None]
    boxes = _round_half_away(boxes * scale) / scale
  heights = [f.shape[1] for f in features]
  widths = [f.shape[2] for f in features]
  bases = [0]
  for f in features[:-1]:
    bases.append(bases[-1] + math.prod(f.shape[:3]))
  per_roi = lambda values, dtype: jnp.asarray(values, dtype)[level]
  index, weight = _roi_align_taps(
      b, boxes, per_roi(spatial_scales, boxes.dtype), per_roi(heights, jnp.int32),
      per_roi(widths, jnp.int32), per_roi(bases, jnp.int32), output_size, sampling_ratio, aligned)
  table = jnp.concatenate([f.reshape(-1, c) for f in features])
  out = _aggregate_taps(table, index, weight, sampling_ratio, aggregation)
  return out.reshape(rois.shape[0], *output_size, c).astype(features[0].dtype)


# ---------------------------------------------------------------------------------------------
# Dense formulations: per-RoI separable weights over whole map rows and columns.


def _round_half_away(x):
  """C++ std::round (half away from zero), exact in floating point."""
  a = jnp.abs(x)
  r = jnp.floor(a)
  return jnp.sign(x) * (r + (a - r >= 0.5))


def _pool_bounds(start, length, bins, upper):
  """Integer bins [start + floor(i * bin), start + ceil((i + 1) * bin)) clipped to [0, upper].

  start, length: integer-valued [R]. Returns (lo, hi), each [R, bins] (torchvision RoIPool).
  """
  # Integer arithmetic: floor(i * length / bins) exactly. Float i * (length / bins) lands just above an integer
  # for some lengths (12 / 7 * 7) depending on how XLA vectorises it, and the ceil then overshoots by one.
  i = jnp.arange(bins, dtype=jnp.int32)
  size = length.astype(jnp.int32)[:, None]
  lo = (i * size) // bins + start.astype(jnp.int32)[:, None]
  hi = -((-(i + 1) * size) // bins) + start.astype(jnp.int32)[:, None]
  return jnp.clip(lo, 0, upper).astype(length.dtype), jnp.clip(hi, 0, upper).astype(length.dtype)


def _pooled_boxes(boxes, spatial_scale, extra):
  """Rounded RoI corners (x1, y1) and sizes (w, h) = max(x2 - x1 + extra, 1) as floats."""
  x1, y1, x2, y2 = (_round_half_away(boxes[:, k] * spatial_scale) for k in range(4))
  return x1, y1, jnp.maximum(x2 - x1 + extra, 1), jnp.maximum(y2 - y1 + extra, 1)


def _first_max(a, b):
  """(value, position) of the larger value, the earlier row-major position on ties."""
  take_b = (b[0] > a[0]) | ((b[0] == a[0]) & (b[1] < a[1]))
  return jnp.where(take_b, b[0], a[0]), jnp.where(take_b, b[1], a[1])


def _window_max_table(values):
  """2-D sparse table: max of every 2**k x 2**l window and its first row-major position.

  values [N, H, W, C]. Returns (max, position) [K, L, N, H, W, C], K = floor(log2 H) + 1,
  L = floor(log2 W) + 1; entry (k, l, n, h, w) covers rows [h, h + 2**k) and columns
  [w, w + 2**l) (cut at the border), position = row * W + column.
  """
  n, height, width, c = values.shape
  position = jnp.broadcast_to((jnp.arange(height)[:, None] * width + jnp.arange(width))[..., None],
                              values.shape)

  def shift(pair, step, axis):  # entry (h, w) <- entry (h + step, w) or (h, w + step)
    pad = [(0, 0)] * 4
    pad[axis] = (0, step)
    tail = lambda a: jax.lax.slice_in_dim(a, step, None, axis=axis)
    return (jnp.pad(tail(pair[0]), pad, constant_values=-jnp.inf),
            jnp.pad(tail(pair[1]), pad, constant_values=height * width))

  columns = [(values, position)]
  for l in range(1, width.bit_length()):
    columns.append(_first_max(columns[-1], shift(columns[-1], 2**(l - 1), 2)))
  table = []
  for pair in columns:
    rows = [pair]
    for k in range(1, height.bit_length()):
      rows.append(_first_max(rows[-1], shift(rows[-1], 2**(k - 1), 1)))
    table.append([jnp.stack(t) for t in zip(*rows)])
  return tuple(jnp.stack(t, 1) for t in zip(*table))


def _roi_pool_avg(features, b, hs, he, ws, we):
  """The mean of every integer bin from a summed-area table: four reads per bin. hs, he [R, ph]; ws, we [R, pw]."""
  n, height, width, c = features.shape
  table = jnp.pad(jnp.cumsum(jnp.cumsum(features, axis=1), axis=2), ((0, 0), (1, 0), (1, 0), (0, 0)))
  table = table.reshape(-1, c)
  corner = lambda y, x: table[(b[:, None, None] * (height + 1) + y[:, :, None]) * (width + 1) + x[:, None, :]]
  total = corner(he, we) - corner(hs, we) - corner(he, ws) + corner(hs, ws)
  area = ((he - hs)[:, :, None] * (we - ws)[:, None, :]).astype(features.dtype)
  return jnp.where(area[..., None] > 0, total / jnp.maximum(area, 1)[..., None], 0)


def roi_pool(features, rois, output_size, spatial_scale=1.0, aggregation="max"):
  """RoIPool (Girshick, Fast R-CNN, 2015) equal to ``torchvision.ops.roi_pool``.

  Max over integer bins: corners round(x * spatial_scale) (half away from zero), RoI size
  max(x2 - x1 + 1, 1), bin i spans [floor(i * size / h), ceil((i + 1) * size / h)) from the corner,
  clipped to the map. Empty bins give 0. The gradient goes to the first maximum in row-major
  order of each bin, like torchvision's argmax. A bin's max is that of four overlapping
  power-of-two windows read from a sparse table: O(1) per bin after O(log H log W) passes over
  the map, which hold log H * log W copies of it (values and positions) in memory.

  With aggregation="avg" a bin gives the mean over its pixels instead (the average RoIPool row of Mask R-CNN's
  Table 2c), read from a summed-area table.

  Args:
    features: [N, H, W, C]; rois: [R, 5]; output_size: int or (h, w); aggregation: "max" or "avg".

  Returns:
    [R, h, w, C].
  """
  features, rois = _check(features, rois)
  ph, pw = _pair(output_size)
  n, height, width, c = features.shape
  b, boxes = _split_rois(rois, n)
  x1, y1, roi_w, roi_h = _pooled_boxes(boxes, spatial_scale, 1)
  hs, he = (a.astype(jnp.int32) for a in _pool_bounds(y1, roi_h, ph, height))
  ws, we = (a.astype(jnp.int32) for a in _pool_bounds(x1, roi_w, pw, width))
  if aggregation == "avg":
    return _roi_pool_avg(features, b, hs, he, ws, we).astype(features.dtype)
  if aggregation != "max":
    raise ValueError(f"roi_pool: aggregation must be 'max' or 'avg'; got {aggregation!r}")
  empty = (he <= hs)[:, :, None] | (we <= ws)[:, None, :]  # [R, ph, pw]
  # Largest power-of-two window inside each bin, exponents k (rows) and l (columns).
  log2 = lambda length, top: sum(((length >= 2**e).astype(jnp.int32) for e in range(1, top)),
                                 jnp.zeros_like(length))
  k = log2(he - hs, height.bit_length())[:, :, None]
  l = log2(we - ws, width.bit_length())[:, None, :]
  hs, he, ws, we = hs[:, :, None], he[:, :, None], ws[:, None, :], we[:, None, :]
  table_max, table_pos = _window_max_table(jax.lax.stop_gradient(features))
  levels = table_max.shape[:2]
  table_max, table_pos = table_max.reshape(-1, c), table_pos.reshape(-1, c)
  best = None
  for top in (hs, jnp.maximum(he - 2**k, hs)):
    for left in (ws, jnp.maximum(we - 2**l, ws)):
      row = (((k * levels[1] + l) * n + b[:, None, None]) * height + top) * width + left
      row = jnp.where(empty, 0, row)  # [R, ph, pw]
      window = (table_max[row], table_pos[row])
      best = window if best is None else _first_max(best, window)
  # Re-read the winner so the gradient goes to that one element (torchvision's argmax).
  flat = (b[:, None, None, None] * height * width + best[1]) * c + jnp.arange(c)
  value = features.reshape(-1)[flat]
  return jnp.where(empty[..., None], jnp.zeros((), features.dtype), value)


def _ps_pool(features, b, wy, wx, group_size=None):
  """out[r, i, j, c] = sum_{h, w} wy[r, i, h] wx[r, j, w] features[b_r, h, w, (c, gi(i), gj(j))].

  features [N, H, W, C_out * gh * gw] (R-FCN channel order c * gh * gw + gi * gw + gj); wy [R, ph, H],
  wx [R, pw, W]; bin (i, j) reads group cell gi(i) = floor(i * gh / ph), gj(j) = floor(j * gw / pw) (the
  reference PSROIPooling's rule; the identity when the group is the output grid, as R-FCN). Returns
  [R, ph, pw, C_out]; O(R * N * H * W * C * pw / gw) matmuls.
  """
  n, height, width, c = features.shape
  ph, pw = wy.shape[1], wx.shape[1]
  gh, gw = (ph, pw) if group_size is None else group_size
  f = features.reshape(n, height, width, c // (gh * gw), gh, gw)
  f = f[..., np.arange(pw) * gw // pw]  # [N, H, W, C_out, gh, pw]: the group column of each output column
  wx = jax.nn.one_hot(b, n, dtype=wx.dtype)[:, :, None, None] * wx[:, None]  # [R, N, pw, W]
  t = jnp.einsum("rnjw,nhwcgj->rjhcg", wx, f)
  t = t[..., np.arange(ph) * gh // ph]  # [R, pw, H, C_out, ph]
  return jnp.einsum("rih,rjhci->rijc", wy, t)


def _ps_inputs(features, rois, output_size, group_size=None):
  """Checked inputs of the position-sensitive ops: (features, (h, w), (g_h, g_w), batch indices, boxes)."""
  features, rois = _check(features, rois)
  output_size = _pair(output_size)
  cells = "output h * w" if group_size is None else "the group cells g_h * g_w"
  group_size = output_size if group_size is None else _pair(group_size)
  if features.shape[-1] % (group_size[0] * group_size[1]):
    raise ValueError(
        f"features channels ({features.shape[-1]}) must be a multiple of {cells} "
        f"({group_size[0]} * {group_size[1]}) for position-sensitive pooling")
  b, boxes = _split_rois(rois, features.shape[0])
  return features, output_size, group_size, b, boxes


def _dense_align_weights(start, bin_size, bins, sampling_ratio, extent):
  """[R, bins, extent] RoIAlign weights of each map row for each bin, summed over samples.

  sampling_ratio > 0: that many samples per bin. Otherwise torchvision's adaptive
  n = ceil(bin_size) samples spaced bin_size / n > 1/2 apart, of which at most 2 * extent + 3
  fall in [-1, extent]: a static window of 2 * extent + 5 samples starting just before -1
  holds them all. Bins with no sample (n <= 0) weigh 0 (torchvision divides 0 by 0).
  """
  hstart = start[:, None] + jnp.arange(bins, dtype=start.dtype) * bin_size[:, None]  # [R, bins]
  if sampling_ratio > 0:
    count = jnp.full_like(bin_size, sampling_ratio)
    k = jnp.arange(sampling_ratio, dtype=start.dtype)
  else:
    count = jnp.ceil(bin_size)
    step = bin_size / count
    first = jnp.maximum(jnp.floor((-1 - hstart) / step[:, None] - 0.5) - 1, 0)
    k = first[..., None] + jnp.arange(2 * extent + 5, dtype=start.dtype)
  count = count[:, None, None]
  y = hstart[..., None] + (k + 0.5) * bin_size[:, None, None] / count  # [R, bins, samples]
  valid = (k < count) & (y >= -1) & (y <= extent)
  y = jnp.clip(y, 0, extent - 1)
  tent = jnp.maximum(1 - jnp.abs(y[..., None] - jnp.arange(extent)), 0)  # bilinear weights
  return jnp.where(valid[..., None], tent, 0).sum(2) / jnp.maximum(count, 1)


def ps_roi_align(features, rois, output_size, spatial_scale=1.0, sampling_ratio=-1, group_size=None):
  """Position-sensitive RoIAlign (R-FCN with RoIAlign) equal to ``torchvision.ops.ps_roi_align``.

  Output channel c of bin (i, j) averages bilinear samples of input channel
  c * h * w + i * w + j; boxes are shifted by -0.5 pixel (torchvision, not configurable).
  sampling_ratio <= 0 is torchvision's adaptive ceil(roi_size / output_size) samples per bin,
  computed with static shapes; degenerate boxes give 0 where torchvision gives NaN (0 / 0).
  Dense over the map: O(R * N * H * W * C). `group_size` (g_h, g_w): k x k position-sensitive cells each sampled
  into finer bins, as ps_roi_pool's.

  Args:
    features: [N, H, W, C_out * g_h * g_w]; rois: [R, 5]; output_size: int or (h, w); group_size: int or
      (g_h, g_w), default output_size.

  Returns:
    [R, h, w, C_out].
  """
  features, output_size, group_size, b, boxes = _ps_inputs(features, rois, output_size, group_size)
  _, height, width, _ = features.shape
  x1, y1, x2, y2 = (boxes[:, k] * spatial_scale - 0.5 for k in range(4))
  wy = _dense_align_weights(y1, (y2 - y1) / output_size[0], output_size[0], sampling_ratio, height)
  wx = _dense_align_weights(x1, (x2 - x1) / output_size[1], output_size[1], sampling_ratio, width)
  return _ps_pool(features, b, wy.astype(features.dtype), wx.astype(features.dtype), group_size)


def ps_roi_pool(features, rois, output_size, spatial_scale=1.0, group_size=None):
  """Position-sensitive RoIPool (Dai et al., R-FCN, 2016) equal to ``torchvision.ops.ps_roi_pool``.

  Average of input channel c * h * w + i * w + j over integer bin (i, j): corners rounded half
  away from zero, RoI size max(x2 - x1, 1), bins clipped to [0, H - 1] x [0, W - 1] as in
  torchvision's forward (so the last row and column are never read); empty bins give 0.
  The gradient is that of this forward; torchvision's backward clips to [0, H] instead, so it
  differs from ours for bins clipped at the bottom or right border. Dense: O(R * N * H * W * C).

  `group_size` (g_h, g_w) smaller than the output grid is FCIS's assembling (Li et al. 2017; the reference
  PSROIPooling's pooled_size 21 with group_size 7): k x k = g_h x g_w position-sensitive cells, each pooled into
  h / g_h x w / g_w finer bins; bin (i, j) reads input channel c * g_h * g_w + floor(i g_h / h) g_w + floor(j g_w / w).

  Args:
    features: [N, H, W, C_out * g_h * g_w]; rois: [R, 5]; output_size: int or (h, w); group_size: int or
      (g_h, g_w), default output_size.

  Returns:
    [R, h, w, C_out].
  """
  features, output_size, group_size, b, boxes = _ps_inputs(features, rois, output_size, group_size)
  _, height, width, _ = features.shape
  x1, y1, roi_w, roi_h = _pooled_boxes(boxes, spatial_scale, 0)

  def bin_weights(start, length, bins, extent):  # indicator / bin length, [R, bins, extent]
    lo, hi = _pool_bounds(start, length, bins, extent - 1)
    pixels = jnp.arange(extent)
    inside = (pixels >= lo[..., None]) & (pixels < hi[..., None])
    return (inside / jnp.maximum(hi - lo, 1)[..., None]).astype(features.dtype)

  wy = bin_weights(y1, roi_h, output_size[0], height)
  wx = bin_weights(x1, roi_w, output_size[1], width)
  return _ps_pool(features, b, wy, wx, group_size)


def warp_regions(images, boxes, size, context_padding):
  """R-CNN's region warping (Girshick et al. 2014, Sec. 2.1 and Appendix A): each box of images [N, H, W, C], boxes
  [N, R, 4], is dilated so that the warped frame holds `context_padding` pixels of context around it at `size`, then
  warped anisotropically to size x size by bilinear sampling at the output pixels' centres (RoIAlign with one sample
  per bin); outside the image the samples are 0, the mean of the normalised image (R-CNN fills with the mean).
  Returns [N * R, size, size, C]."""
  n, r = boxes.shape[:2]
  centre, half = (boxes[..., :2] + boxes[..., 2:]) / 2, (boxes[..., 2:] - boxes[..., :2]) / 2
  half = half * size / (size - 2 * context_padding)
  batch_index = jnp.repeat(jnp.arange(n, dtype=jnp.float32), r)[:, None]
  rois = jnp.concatenate([batch_index, (centre - half).reshape(-1, 2), (centre + half).reshape(-1, 2)], 1)
  return roi_align(images, rois, size, sampling_ratio=1, aligned=True)
