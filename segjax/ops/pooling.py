"""Resampling of NHWC maps. Adaptive average and max pooling and corner-aligned bilinear resizing (PSPNet's pyramid
pooling and Caffe Interp layer) are separable products with fixed [out, in] matrices: shapes are static, so the
matrices are NumPy constants and both ops are one einsum, differentiable and exact in float32. `resize_bilinear` is
torch's default bilinear interpolation (half-pixel centres), through jax.image.resize."""
import jax
import jax.numpy as jnp
import numpy as np

from segjax.ops import platform


def _adaptive_bins(size: int, bins: int) -> np.ndarray:
  """[bins, size] averaging matrix with torch's bins: row i averages [floor(i*size/bins), ceil((i+1)*size/bins))."""
  matrix = np.zeros((bins, size), np.float32)
  for i in range(bins):
    start, end = (i * size) // bins, -(-(i + 1) * size // bins)
    matrix[i, start:end] = 1.0 / (end - start)
  return matrix


def _align_corners_taps(size: int, out: int) -> np.ndarray:
  """[out, size] linear interpolation matrix; output j samples input j * (size - 1) / (out - 1) (0 when out is 1)."""
  scale = (size - 1) / (out - 1) if out > 1 else 0.0
  source = np.arange(out) * scale
  low = np.minimum(np.floor(source).astype(np.int64), size - 1)
  high = np.minimum(low + 1, size - 1)
  frac = (source - low).astype(np.float32)
  matrix = np.zeros((out, size), np.float32)
  np.add.at(matrix, (np.arange(out), low), 1.0 - frac)
  np.add.at(matrix, (np.arange(out), high), frac)
  return matrix


def _separable(x: jax.Array, rows: np.ndarray, cols: np.ndarray) -> jax.Array:
  y = jnp.einsum("ih,nhwc->niwc", jnp.asarray(rows, x.dtype), x, precision=jax.lax.Precision.HIGHEST)
  return jnp.einsum("jw,niwc->nijc", jnp.asarray(cols, x.dtype), y, precision=jax.lax.Precision.HIGHEST)


def _check(x: jax.Array, size: tuple[int, int], name: str) -> tuple[int, int]:
  if x.ndim != 4:
    raise ValueError(f"{name}: x must be [N, H, W, C]; got shape {x.shape}")
  h, w = (int(s) for s in size)
  if h < 1 or w < 1:
    raise ValueError(f"{name}: output size must be positive; got {size}")
  return h, w


def adaptive_avg_pool2d(x: jax.Array, output_size: tuple[int, int]) -> jax.Array:
  """torch.nn.functional.adaptive_avg_pool2d on NHWC: x [N,H,W,C] -> [N,h,w,C] (bins may overlap)."""
  h, w = _check(x, output_size, "adaptive_avg_pool2d")
  return _separable(x, _adaptive_bins(x.shape[1], h), _adaptive_bins(x.shape[2], w))


def adaptive_max_pool2d(x: jax.Array, output_size: tuple[int, int]) -> jax.Array:
  """torch.nn.functional.adaptive_max_pool2d on NHWC: x [N,H,W,C] -> [N,h,w,C], torch's (possibly overlapping)
  bins. The maximum over a rectangle is the maximum over its rows of the maxima over its columns, so the bins are
  reduced one axis at a time, h + w static slices."""
  h, w = _check(x, output_size, "adaptive_max_pool2d")

  def bins(size, n):
    return [((i * size) // n, -(-(i + 1) * size // n)) for i in range(n)]

  x = jnp.stack([x[:, a:b].max(axis=1) for a, b in bins(x.shape[1], h)], axis=1)
  return jnp.stack([x[:, :, a:b].max(axis=2) for a, b in bins(x.shape[2], w)], axis=2)


def resize_align_corners(x: jax.Array, size: tuple[int, int]) -> jax.Array:
  """Bilinear resize x [N,H,W,C] -> [N,h,w,C] as torch F.interpolate(mode="bilinear", align_corners=True)
  and Caffe's Interp layer: the corner pixels of input and output coincide."""
  h, w = _check(x, size, "resize_align_corners")
  return _separable(x, _align_corners_taps(x.shape[1], h), _align_corners_taps(x.shape[2], w))


def resize_bilinear(x: jax.Array, height: int, width: int) -> jax.Array:
  """Bilinear resize x [N,h,w,C] -> [N,height,width,C] as torch F.interpolate(mode="bilinear",
  align_corners=False): half-pixel centres, no antialiasing when shrinking. Computed in float32, returned in x's
  dtype."""
  y = jax.image.resize(x.astype(jnp.float32), (x.shape[0], height, width, x.shape[-1]), "linear", antialias=False)
  return y.astype(x.dtype)


def max_pool(x: jax.Array, window: tuple[int, int], strides: tuple[int, int],
             padding: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0))) -> jax.Array:
  """flax.linen.max_pool(x, window, strides, padding) on NHWC, -inf padding (low, high) per spatial axis. In programs
  lowered for CPU (segjax.ops.platform.select) the window's taps are strided slices compared by selects, whose
  gradient is elementwise, where XLA:CPU runs reduce_window's gradient (select-and-scatter) slowly and with index
  buffers of the input's size. The gradient goes to the window's first maximum in row-major order, as
  select-and-scatter and torch's max_pool2d give it: each select picks one entry of the window itself, where a mask
  of the entries equal to a separately computed maximum (jnp.max's gradient) can find none when XLA recomputes the
  window in another fusion and rounds it differently. Elsewhere XLA's reduce_window."""
  (kh, kw), (sh, sw) = window, strides
  n, h, w, c = x.shape
  out_h = (h + sum(padding[0]) - kh) // sh + 1
  out_w = (w + sum(padding[1]) - kw) // sw + 1

  def first_max(a, b):  # a comes first in the window: a wins ties, and a NaN propagates as max's does
    return jnp.where((a >= b) | jnp.isnan(a), a, b)

  def taps(x):
    padded = jnp.pad(x, ((0, 0), *padding, (0, 0)), constant_values=-jnp.inf)
    tap = lambda i, j: jax.lax.slice(padded, (0, i, j, 0), (n, i + (out_h - 1) * sh + 1, j + (out_w - 1) * sw + 1, c),
                                     (1, sh, sw, 1))
    result = tap(0, 0)
    for i, j in ((i, j) for i in range(kh) for j in range(kw) if i or j):
      result = first_max(result, tap(i, j))
    return result

  def reduce_window(x):
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, kh, kw, 1), (1, sh, sw, 1),
                                 ((0, 0), *padding, (0, 0)))

  return platform.select(x, cpu=taps, xla=reduce_window)


def max_pool_2x2(x: jax.Array) -> jax.Array:
  """flax.linen.max_pool(x, (2, 2), (2, 2)) on NHWC (VALID: an odd last row or column is dropped), as `max_pool`."""
  return max_pool(x, (2, 2), (2, 2))
