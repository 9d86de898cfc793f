"""Deformable convolution, DCN v1 (Dai et al. 2017) and v2 (Zhu et al. 2019), NHWC, equal to
``torchvision.ops.deform_conv2d``."""
import jax.numpy as jnp

from segjax.ops.gather import weighted_gather


def _pair(value, name):
  if isinstance(value, int):
    value = (value, value)
  if len(value) != 2 or not all(isinstance(v, int) for v in value):
    raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
  return tuple(value)


def _taps(coord, extent):
  """Two bilinear taps of each sampling coordinate along one axis, zero outside the map.

  Returns indices (clipped into [0, extent)) and weights, both [..., 2]; a tap outside the map
  weighs 0, so a coordinate outside (-1, extent) samples 0 (torchvision's zero padding).
  """
  lo = jnp.floor(coord)
  frac = coord - lo
  tap = jnp.stack([lo, lo + 1], -1)
  weight = jnp.stack([1 - frac, frac], -1) * ((tap >= 0) & (tap <= extent - 1))
  return jnp.clip(tap, 0, extent - 1).astype(jnp.int32), weight


def deform_conv2d(x, offset, weight, bias=None, mask=None, stride=1, padding=0, dilation=1):
  """Deformable convolution: out = sum_k w_k * m_k * x(p + p_k + dp_k) (DCN v2 eq. 3).

  Samples are bilinear with zero padding; ``mask=None`` is DCN v1 (all m_k = 1).

  Args:
    x: [N, H, W, C_in].
    offset: [N, H_out, W_out, 2 * G * kh * kw], channels ordered (G, kh, kw, (dy, dx)) like
      torchvision's offset channels; G offset groups each deform C_in / G input channels.
    weight: [kh, kw, C_in / groups, C_out] (HWIO); groups = C_in / weight.shape[2].
    bias: [C_out] or None.
    mask: [N, H_out, W_out, G * kh * kw] modulation, channels ordered (G, kh, kw), or None.
    stride, padding, dilation: int or (h, w).

  Returns:
    [N, H_out, W_out, C_out], differentiable w.r.t. x, offset, weight, bias and mask.
  """
  x, offset, weight = jnp.asarray(x), jnp.asarray(offset), jnp.asarray(weight)
  mask = None if mask is None else jnp.asarray(mask)
  if x.ndim != 4 or offset.ndim != 4 or weight.ndim != 4:
    raise ValueError(f"x, offset and weight must be 4-D (NHWC, NHWC, HWIO), got shapes "
                     f"{x.shape}, {offset.shape}, {weight.shape}")
  stride, padding, dilation = (_pair(v, k) for v, k in
                               ((stride, "stride"), (padding, "padding"), (dilation, "dilation")))
  n, height, width, c_in = x.shape
  kh, kw, c_group, c_out = weight.shape
  if c_in % c_group or c_out % (c_in // c_group):
    raise ValueError(f"weight {weight.shape} does not split x's {c_in} channels and its "
                     f"{c_out} outputs into equal groups")
  groups = c_in // c_group
  h_out = (height + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
  w_out = (width + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
  offset_groups = offset.shape[-1] // (2 * kh * kw)
  if (offset.shape[:3] != (n, h_out, w_out) or offset_groups == 0
      or offset.shape[-1] != 2 * offset_groups * kh * kw or c_in % offset_groups):
    raise ValueError(f"offset must be [{n}, {h_out}, {w_out}, 2 * G * {kh} * {kw}] with G "
                     f"dividing {c_in}, got {offset.shape}")
  if mask is not None and mask.shape != (n, h_out, w_out, offset_groups * kh * kw):
    raise ValueError(f"mask must be [{n}, {h_out}, {w_out}, {offset_groups * kh * kw}], "
                     f"got {mask.shape}")
  if bias is not None and bias.shape != (c_out,):
    raise ValueError(f"bias must be [{c_out}], got {bias.shape}")

  # Sampling points p + p_k + dp_k, one row per (n, y, x, offset group, i, j). The sampling is
  # kept 2-D ([rows, C]): reductions over shapes with unit axes are very slow on XLA:CPU.
  offset = offset.reshape(n, h_out, w_out, offset_groups, kh, kw, 2)
  grid = lambda size, k, axis: (jnp.arange(size)[:, None] * stride[axis] - padding[axis]
                                + jnp.arange(k) * dilation[axis])
  iy, wy = _taps((grid(h_out, kh, 0)[:, None, None, :, None] + offset[..., 0]).reshape(-1), height)
  ix, wx = _taps((grid(w_out, kw, 1)[None, :, None, None, :] + offset[..., 1]).reshape(-1), width)
  point = jnp.arange(iy.shape[0])
  batch = point // (h_out * w_out * offset_groups * kh * kw)
  group = point // (kh * kw) % offset_groups
  # Rows of x viewed as a [N * H * W * G, C_in / G] table, four bilinear taps per point.
  corners = [(a, b) for a in range(2) for b in range(2)]
  rows = jnp.stack([((batch * height + iy[:, a]) * width + ix[:, b]) * offset_groups + group
                    for a, b in corners], 1)
  weight_taps = jnp.stack([wy[:, a] * wx[:, b] for a, b in corners], 1)
  if mask is not None:
    weight_taps = weight_taps * mask.reshape(-1, 1)
  cols = weighted_gather(x.reshape(-1, c_in // offset_groups), rows, weight_taps)
  # Grouped convolution: one matmul per weight group of [N*Ho*Wo, kh*kw*C_in/groups] columns.
  cols = jnp.swapaxes(cols.reshape(-1, offset_groups, kh * kw, c_in // offset_groups), 1, 2)
  cols = jnp.moveaxis(cols.reshape(-1, kh * kw, groups, c_group), 2, 0)
  weight = jnp.moveaxis(weight.reshape(kh * kw * c_group, groups, c_out // groups), 1, 0)
  out = jnp.matmul(cols.reshape(groups, -1, kh * kw * c_group), weight)
  out = jnp.moveaxis(out, 0, 1).reshape(n, h_out, w_out, c_out)
  return out if bias is None else out + bias
