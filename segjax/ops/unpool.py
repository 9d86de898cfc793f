"""Max pooling that returns where each maximum was, and the max unpooling that puts values back there.

The semantics of torch.nn.functional.max_pool2d(return_indices=True) and max_unpool2d, NHWC: an index is
the flat position y * W + x of the maximum in its [H, W] channel plane; ties go to the first maximum of the
window in row-major order, as torch's loop keeps it. SegNet's decoders (Badrinarayanan et al. 2017, Sec. 3)
and DeconvNet's unpooling layers (Noh et al. 2015, Sec. 3.2) upsample with these indices.
"""
import functools
import math

import jax
import jax.numpy as jnp


def _pooled_size(size: int, window: int, stride: int, ceil_mode: bool) -> int:
  if size < window:
    raise ValueError(f"max pooling: input size {size} is smaller than the window {window}")
  if not ceil_mode:
    return (size - window) // stride + 1
  out = math.ceil((size - window) / stride) + 1
  return out - 1 if (out - 1) * stride >= size else out  # the last window must start inside the input


def max_pool_with_argmax(x: jax.Array, window: int, stride: int,
                         ceil_mode: bool = False) -> tuple[jax.Array, jax.Array]:
  """Max pool x [N, H, W, C] (no padding) -> (pooled [N, Ho, Wo, C], indices int32 [N, Ho, Wo, C] in [0, H*W)).

  ceil_mode: torch's (and Caffe's) rounding up of the output size; the last windows then overhang the input
  and only its pixels compete. The gradient reaches the input at the indices only (like torch's).
  """
  if x.ndim != 4:
    raise ValueError(f"x must be [N, H, W, C]; got shape {x.shape}")
  h, w = x.shape[1:3]
  ho, wo = _pooled_size(h, window, stride, ceil_mode), _pooled_size(w, window, stride, ceil_mode)
  span_h, span_w = (ho - 1) * stride + window, (wo - 1) * stride + window
  fill = -jnp.inf if jnp.issubdtype(x.dtype, jnp.floating) else jnp.iinfo(x.dtype).min
  padded = jnp.pad(x, ((0, 0), (0, max(span_h - h, 0)), (0, max(span_w - w, 0)), (0, 0)), constant_values=fill)
  # Window offsets in row-major order, so argmax's first maximum is torch's.
  offsets = [(dy, dx) for dy in range(window) for dx in range(window)]
  candidates = jnp.stack([padded[:, dy:dy + (ho - 1) * stride + 1:stride, dx:dx + (wo - 1) * stride + 1:stride]
                          for dy, dx in offsets])  # [K, N, Ho, Wo, C]
  best = jnp.argmax(candidates, axis=0)
  pooled = jnp.take_along_axis(candidates, best[None], axis=0)[0]
  dy, dx = jnp.asarray([o[0] for o in offsets])[best], jnp.asarray([o[1] for o in offsets])[best]
  rows = jnp.arange(ho)[:, None, None] * stride + dy
  cols = jnp.arange(wo)[None, :, None] * stride + dx
  return pooled, (rows * w + cols).astype(jnp.int32)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def max_unpool(x: jax.Array, indices: jax.Array, output_hw: tuple[int, int]) -> jax.Array:
  """torch's max_unpool2d: x [N, h, w, C] written at indices [N, h, w, C] (flat over H*W) of zeros [N, H, W, C].

  The gradient is the gather of the output's gradient at the indices (torch's backward), also where two
  windows of an overlapping pool chose the same position.
  """
  if x.shape != indices.shape or x.ndim != 4:
    raise ValueError(f"x and indices must both be [N, h, w, C]; got {x.shape} and {indices.shape}")
  n, _, _, c = x.shape
  height, width = output_hw
  flat = jnp.zeros((n, height * width, c), x.dtype)
  batch, channel = jnp.arange(n)[:, None, None, None], jnp.arange(c)
  flat = flat.at[batch, indices, channel].set(x, mode="drop")
  return flat.reshape(n, height, width, c)


def _max_unpool_fwd(x, indices, output_hw):
  return max_unpool(x, indices, output_hw), indices


def _max_unpool_bwd(output_hw, indices, g):
  n, height, width, c = g.shape
  flat = g.reshape(n, height * width, c)
  batch, channel = jnp.arange(n)[:, None, None, None], jnp.arange(c)
  return flat[batch, indices, channel], None


max_unpool.defvjp(_max_unpool_fwd, _max_unpool_bwd)


def bed_of_nails_unpool(x: jax.Array, stride: int = 2) -> jax.Array:
  """Bed-of-nails unpooling: x [N, H, W, C] -> [N, H * stride, W * stride, C], each value at the top-left corner
  of its stride x stride cell and zeros elsewhere (max unpooling with every index at the cell's first pixel)."""
  if stride < 1:
    raise ValueError(f"bed_of_nails_unpool: stride must be >= 1; got {stride}")
  n, h, w, c = x.shape
  out = jnp.zeros((n, h, stride, w, stride, c), x.dtype).at[:, :, 0, :, 0].set(x)
  return out.reshape(n, h * stride, w * stride, c)
