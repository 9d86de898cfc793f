"""Boundary-aware mask representation (Hayder, He & Salzmann, CVPR 2017, Sec. 3.1).

A mask is encoded by its truncated distance transform D(p) = min(ceil(min_{q in Q} d(p, q)), R), Q the pixels
outside the object, quantised into K bins, i.e. K binary maps B_n(p) = [D(p) in bin n]. It is decoded as the
union of disks M = U_n T(B_n, r_n): every pixel of B_n grows into a disk of radius r_n. With r_n one less than
the smallest distance of bin n, a disk never leaves the object (its points are closer than the nearest outside
pixel) and every object pixel covers itself, so decoding gives the mask back exactly. Computed inside a box,
distances are measured to outside pixels within the box only, so the disks of pixels at a box edge that cuts the
object reach past the box: the decoded mask can extend beyond it.

The distance transform looks for outside pixels within radius R (static window), which is all the truncation
needs.
"""
import jax
import numpy as np
import jax.numpy as jnp

from segjax.ops.masks import paste_masks_in_image, roi_mask_targets


def _shift(x, dy, dx, fill):
  """x [H, W] moved so that out[i, j] = x[i + dy, j + dx] (fill outside)."""
  h, w = x.shape
  padded = jnp.pad(x, ((abs(dy), abs(dy)), (abs(dx), abs(dx))), constant_values=fill)
  return padded[abs(dy) + dy:abs(dy) + dy + h, abs(dx) + dx:abs(dx) + dx + w]


def _disk_offsets(radius):
  r = int(np.floor(radius))
  return [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1) if dy * dy + dx * dx <= radius * radius]


def truncated_distance_transform(mask, truncation):
  """D [H, W] int32: for object pixels min(ceil(Euclidean distance to the nearest outside pixel), R), 0 outside.
  Pixels beyond the array are not outside pixels (the box may cut the object)."""
  mask = jnp.asarray(mask, bool)
  distance = jnp.full(mask.shape, float(truncation), jnp.float32)
  for dy, dx in _disk_offsets(truncation):
    if dy or dx:
      outside = _shift(~mask, dy, dx, False)
      distance = jnp.where(outside, jnp.minimum(distance, np.sqrt(dy * dy + dx * dx)), distance)
  return jnp.where(mask, jnp.minimum(jnp.ceil(distance), truncation), 0).astype(jnp.int32)


def quantisation_bins(truncation, num_bins):
  """Lower edges [K] of K bins over the distances 1..R (as equal as integers allow) and the decoding radii r_n,
  one less than each lower edge."""
  edges = np.floor(np.arange(num_bins) * truncation / num_bins).astype(np.int64) + 1
  if len(set(edges.tolist())) != num_bins:
    raise ValueError(f"boundary encoding: {num_bins} bins need a truncation R >= {num_bins}; got R = {truncation}")
  return edges, edges - 1


def encode_boundary_aware(mask, truncation, num_bins):
  """K binary maps [K, H, W] bool: B_n = [D(p) in bin n]."""
  d = truncated_distance_transform(mask, truncation)
  edges, _ = quantisation_bins(truncation, num_bins)
  upper = np.append(edges[1:], truncation + 1)
  return jnp.stack([(d >= lo) & (d < hi) for lo, hi in zip(edges, upper)])


def _spread_over_disks(maps, truncation, pad):
  """sum_n T(., r_n) * X_n [H + 2 pad, W + 2 pad] of maps X [K, H, W] (float32): each map padded by `pad` with 0 and
  spread over the disk of its bin's radius r_n (a transposed convolution with that fixed disk), summed over the maps."""
  maps = jnp.pad(maps, ((0, 0), (pad, pad), (pad, pad)))
  _, radii = quantisation_bins(truncation, maps.shape[0])
  total = jnp.zeros(maps.shape[1:], jnp.float32)
  for b, radius in zip(maps, radii):
    for dy, dx in _disk_offsets(float(radius)):
      total = total + _shift(b, dy, dx, 0.0)
  return total


def decode_boundary_aware(bins, truncation, pad=0):
  """M = U_n T(B_n, r_n) on the bins' grid grown by `pad` pixels on each side ([H + 2 pad, W + 2 pad]), so the
  disks of pixels at a cut box edge can reach past the box: the pixels some disk covers."""
  return _spread_over_disks(jnp.asarray(bins, bool).astype(jnp.float32), truncation, pad) > 0


def disk_evidence(logits, truncation, pad=0):
  """S = sum_n T(., r_n) * softplus(z_n) [H + 2 pad, W + 2 pad] of the maps' logits z [K, H, W]: a transposed
  convolution of each map's -log(1 - B_n) with the fixed disk of radius r_n, summed over the maps; the soft-decoded
  mask is 1 - exp(-S) (`soft_decode_boundary_aware`)."""
  return _spread_over_disks(jax.nn.softplus(jnp.asarray(logits, jnp.float32)), truncation, pad)


def soft_decode_boundary_aware(logits, truncation, pad=0):
  """The decoding M = U_n T(., r_n) * B_n made differentiable in the maps' logits z [K, H, W]: a pixel is outside
  the mask only if no disk of any map covers it, M = 1 - prod_n prod_{q: p in T(q, r_n)} (1 - B_n(q)) with
  B_n = sigmoid(z_n), i.e. 1 - exp(-S) of `disk_evidence` (fixed-disk transposed convolutions, as the paper's
  decoder). For confident maps (B_n 0 or 1) it is the union `decode_boundary_aware` gives; [H + 2 pad, W + 2 pad]."""
  return -jnp.expm1(-disk_evidence(logits, truncation, pad))


def roi_boundary_targets(gt_masks, rois, matched_gt, m, truncation, num_bins):
  """The boundary-aware targets [R, K, m, m] bool of RoIs [R, 4]: each RoI's matched mask of gt_masks [M, H, W]
  resampled to m x m as Mask R-CNN's targets (`roi_mask_targets`), binarised at 0.5, then encoded; distances are
  counted in cells of the m x m grid, so R is a number of cells."""
  resampled = roi_mask_targets(gt_masks, rois, matched_gt, m)
  return jax.vmap(lambda t: encode_boundary_aware(t >= 0.5, truncation, num_bins))(resampled)


def grown_boxes(boxes, resolution, pad):
  """Boxes [..., 4] (x1, y1, x2, y2) grown by pad / resolution of their width and height on each side: the image
  region of an m x m grid over the box padded by `pad` cells (`decode_boundary_aware(..., pad)`)."""
  w = (boxes[..., 2] - boxes[..., 0]) * pad / resolution
  h = (boxes[..., 3] - boxes[..., 1]) * pad / resolution
  return jnp.stack([boxes[..., 0] - w, boxes[..., 1] - h, boxes[..., 2] + w, boxes[..., 3] + h], -1)


def decode_roi_masks(logits, boxes, truncation, height, width, soft=False):
  """Predicted maps (logits [R, K, m, m]) of boxes [R, 4] -> (masks [R, height, width] float32 pasted as Mask
  R-CNN's, decoded grids [R, m + 2 R, m + 2 R] float32, the grown boxes [R, 4] they lie over). The maps are
  thresholded (B_n = sigmoid > 0.5) and decoded exactly, or with `soft` decoded by `soft_decode_boundary_aware`. The decoding runs on the grid padded by the truncation R (a disk reaches at most
  R - 1 cells) and is pasted over the box grown by as many cells, so the part of the mask past the box is kept."""
  if soft:
    decoded = jax.vmap(lambda b: soft_decode_boundary_aware(b, truncation, pad=truncation))(logits)
  else:
    decoded = jax.vmap(lambda b: decode_boundary_aware(b, truncation, pad=truncation))(logits > 0)
    decoded = decoded.astype(jnp.float32)
  region = grown_boxes(boxes.astype(jnp.float32), logits.shape[-1], truncation)
  return paste_masks_in_image(decoded, region, height, width), decoded, region
