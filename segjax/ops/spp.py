"""Spatial pyramid pooling (He, Zhang, Ren and Sun, "Spatial Pyramid Pooling in Deep Convolutional Networks for
Visual Recognition", ECCV 2014 / TPAMI 2015).

For a map of a x a cells and a pyramid level of n x n bins, the paper (Sec. 2.3) implements each level as a max
pooling with window ceil(a / n) and stride floor(a / n): bin i covers cells [i floor(a/n), i floor(a/n) + ceil(a/n))
of each axis (rows and columns use their own a when the map is not square). The levels' n x n x C maxima are
flattened and concatenated, coarsest level last as in the paper's Fig. 3 (6x6, 3x3, 2x2, 1x1 for SPP-net's detector,
Sec. 4.2: 12,800 values of conv5's 256 channels).

For detection (Sec. 4.1) the pyramid pools the region of conv5 under each window: a window's corners project onto
the map (Appendix: left/top x' = floor(x / S) + 1, right/bottom x' = ceil(x / S) - 1, S the stride, here with
0-based cells: floor(x / S) and ceil(x / S) - 1), and the formula above applies to that region's height and width.
Regions are dynamic under jit, so each bin is a mask over the map's rows and columns and its maximum a separable
masked max: static shapes for any box.
"""
import jax
import jax.numpy as jnp

SPPNET_LEVELS = (6, 3, 2, 1)


def project_boxes(boxes, stride):
  """Image boxes [..., 4] (x1, y1, x2, y2 pixel edges) -> inclusive conv-map cells (x1', y1', x2', y2') int32 by the
  paper's corner projection; a box smaller than a cell keeps at least that cell."""
  left = jnp.floor(boxes[..., :2] / stride)
  right = jnp.ceil(boxes[..., 2:] / stride) - 1
  return jnp.concatenate([left, jnp.maximum(right, left)], -1).astype(jnp.int32)


def _bin_masks(start, end, size, n):
  """bool [n, size]: bin i of a region of cells [start, end] (inclusive) of one axis, window ceil(a/n), stride
  floor(a/n), a = end - start + 1."""
  a = end - start + 1
  window = -(-a // n)
  stride = a // n
  first = start + jnp.arange(n) * stride
  cells = jnp.arange(size)
  return (cells[None] >= first[:, None]) & (cells[None] < (first + window)[:, None]) & (cells[None] <= end)


def region_pyramid_pool(features, cells, levels=SPPNET_LEVELS):
  """features [H, W, C], cells int [R, 4] (x1, y1, x2, y2 inclusive, inside the map) -> [R, sum n^2 C], each
  level's [n, n, C] maxima flattened row-major, levels in `levels` order."""
  height, width, _ = features.shape

  def one(cell):
    x1, y1, x2, y2 = cell[0], cell[1], cell[2], cell[3]
    pooled = []
    for n in levels:
      rows = _bin_masks(y1, y2, height, n)  # [n, H]
      cols = _bin_masks(x1, x2, width, n)  # [n, W]
      by_col = jnp.max(jnp.where(cols[:, None, :, None], features[None], -jnp.inf), axis=2)  # [n, H, C]
      by_bin = jnp.max(jnp.where(rows[:, None, :, None], by_col[None], -jnp.inf), axis=2)  # [n, n, C]
      pooled.append(by_bin.reshape(-1))
    return jnp.concatenate(pooled)

  return jax.vmap(one)(jnp.asarray(cells, jnp.int32))


def spatial_pyramid_pool(features, levels=SPPNET_LEVELS):
  """The whole map: features [N, H, W, C] -> [N, sum n^2 C] (the paper's fixed-length output for any H, W)."""
  n, height, width, _ = features.shape
  whole = jnp.array([[0, 0, width - 1, height - 1]], jnp.int32)
  return jax.vmap(lambda f: region_pyramid_pool(f, whole, levels)[0])(features)
