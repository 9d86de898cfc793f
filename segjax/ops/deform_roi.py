"""Deformable position-sensitive RoI pooling (Dai et al. 2017, Sec. 2.2, eq. 7), NHWC, following the reference
implementation's `DeformablePSROIPooling` (msracver/Deformable-ConvNets, rfcn/operator_cxx/
deformable_psroi_pooling.cu, commit 6aeda878a95bcb55eadffbe125804e730574de8d).

Bin (i, j) of a RoI is moved by (gamma * dx * roi_w, gamma * dy * roi_h), the normalised offsets (dx, dy) of its
part, and averages S x S bilinear samples of its position-sensitive channel. The reference's sampling rules, kept
here so that its trained offsets mean the same: corners rounded half away from zero, x2 + 1 and y2 + 1 as the far
edges, -0.5 pixel shift, RoI sides at least 0.1; samples at the start of each of the S sub-bins (not their
centres, unlike RoIAlign); samples outside [-0.5, extent - 0.5] are skipped and the bin averages the others (0 if
none), samples inside are clamped to [0, extent - 1].
"""
import jax
import jax.numpy as jnp
import numpy as np

from segjax.ops.gather import weighted_gather
from segjax.ops.roi import _check, _pair, _split_rois


def _round_half_away(x):
  """C's round(): half away from zero (jnp.round rounds half to even)."""
  return jnp.sign(x) * jnp.floor(jnp.abs(x) + 0.5)


def _axis_taps(start, sub_bin, samples, extent):
  """Sample positions start + s * sub_bin along one axis, their validity and two clamped bilinear taps.

  start, sub_bin: [...]; returns valid [..., S], index [..., S, 2] int32 and weight [..., S, 2].
  """
  pos = start[..., None] + jnp.arange(samples, dtype=start.dtype) * sub_bin[..., None]
  valid = (pos >= -0.5) & (pos <= extent - 0.5)
  pos = jnp.clip(pos, 0, extent - 1)
  lo = jnp.floor(pos)
  frac = pos - lo
  index = jnp.stack([lo, jnp.minimum(lo + 1, extent - 1)], -1).astype(jnp.int32)
  return valid, index, jnp.stack([1 - frac, frac], -1)


def deform_ps_roi_pool(features, rois, offsets, output_size, spatial_scale=1.0, group_size=None,
                       sampling_ratio=4, gamma=0.1):
  """Deformable PS RoI pooling, the reference's DeformablePSROIPooling (`trans_std` is gamma).

  Args:
    features: [N, H, W, C_out * g_h * g_w]; output channel c of a bin in group cell (gh, gw) reads input channel
      (c * g_h + gh) * g_w + gw, as the reference's and segjax.ops.roi.ps_roi_align's layout.
    rois: [R, 5] rows (batch_index, x1, y1, x2, y2) in input pixels; no gradient.
    offsets: normalised (dx, dy) per RoI and part, [R, P_h, P_w, 2], or [R, P_h, P_w, T, 2] with T offset classes
      (output channels split into T equal consecutive blocks, block t moved by class t's offsets); None is the
      reference's no_trans (all zero). Bin (i, j) uses part (floor(i * P_h / h), floor(j * P_w / w)).
    output_size: int or (h, w), the bins per RoI.
    spatial_scale: feature map size / input size.
    group_size: int or (g_h, g_w) position-sensitive cells, default output_size; bin (i, j) is in cell
      (floor(i * g_h / h), floor(j * g_w / w)).
    sampling_ratio: S, samples per bin along each axis (the reference's sample_per_part).
    gamma: the offsets' scale (the paper's gamma, the reference's trans_std; 0.1 in its R-FCN).

  Returns:
    [R, h, w, C_out], differentiable w.r.t. features and offsets. The offsets' gradient is the derivative of the
    forward pass; at a sample on an exact integer coordinate (a bilinear kink) it is the one-sided derivative
    towards larger coordinates, where the reference's kernel gives 0 (its ceil equals its floor there).
  """
  features, rois = _check(features, rois)
  ph, pw = _pair(output_size)
  gh, gw = _pair(group_size if group_size is not None else (ph, pw))
  n, height, width, channels = features.shape
  if channels % (gh * gw):
    raise ValueError(f"features channels ({channels}) must be a multiple of the group cells {gh} * {gw}")
  c_out = channels // (gh * gw)
  num_rois = rois.shape[0]
  if offsets is None:
    offsets = jnp.zeros((num_rois, 1, 1, 1, 2), jnp.float32)
  offsets = jnp.asarray(offsets)
  if offsets.ndim == 4:
    offsets = offsets[:, :, :, None, :]
  if offsets.ndim != 5 or offsets.shape[0] != num_rois or offsets.shape[-1] != 2 or c_out % offsets.shape[3]:
    raise ValueError(f"offsets must be [{num_rois}, P_h, P_w, 2] or [{num_rois}, P_h, P_w, T, 2] with T dividing "
                     f"{c_out}; got shape {offsets.shape}")
  if not isinstance(sampling_ratio, int) or sampling_ratio <= 0:
    raise ValueError(f"sampling_ratio must be a positive int; got {sampling_ratio!r}")
  _, parts_h, parts_w, classes, _ = offsets.shape

  b, boxes = _split_rois(rois, n)
  x1, y1, x2, y2 = (_round_half_away(boxes[:, k]) for k in range(4))
  x1, y1 = x1 * spatial_scale - 0.5, y1 * spatial_scale - 0.5
  x2, y2 = (x2 + 1) * spatial_scale - 0.5, (y2 + 1) * spatial_scale - 0.5
  roi_w, roi_h = jnp.maximum(x2 - x1, 0.1), jnp.maximum(y2 - y1, 0.1)

  # Per bin (integer arithmetic: the reference's floors of float ratios are meant as these).
  part_y, part_x = np.arange(ph) * parts_h // ph, np.arange(pw) * parts_w // pw
  cell_y, cell_x = np.arange(ph) * gh // ph, np.arange(pw) * gw // pw
  trans = offsets.astype(boxes.dtype)[:, part_y][:, :, part_x] * gamma  # [R, h, w, T, 2]
  r4 = lambda v: v[:, None, None, None]
  bin_h, bin_w = roi_h / ph, roi_w / pw
  hstart = r4(y1) + np.arange(ph)[:, None, None] * r4(bin_h) + trans[..., 1] * r4(roi_h)  # [R, h, w, T]
  wstart = r4(x1) + np.arange(pw)[:, None] * r4(bin_w) + trans[..., 0] * r4(roi_w)
  s = sampling_ratio
  valid_y, iy, wy = _axis_taps(hstart, jnp.broadcast_to(r4(bin_h / s), hstart.shape), s, height)
  valid_x, ix, wx = _axis_taps(wstart, jnp.broadcast_to(r4(bin_w / s), wstart.shape), s, width)
  valid = valid_y[..., :, None] & valid_x[..., None, :]  # [R, h, w, T, S, S]
  count = valid.sum((-2, -1))

  # Table rows (n, cell_y, cell_x, y, x, t), columns the C_out / T channels of offset class t.
  table = features.reshape(n, height, width, classes, c_out // classes, gh, gw).transpose(0, 5, 6, 1, 2, 3, 4)
  table = table.reshape(-1, c_out // classes)
  cell = ((b[:, None, None, None] * gh + cell_y[:, None, None]) * gw + cell_x[:, None])  # [R, h, w, 1]
  row_y = (cell[..., None, None] * height + iy)  # [R, h, w, T, S, 2]
  index = ((row_y[..., :, None, :, None] * width + ix[..., None, :, None, :]) * classes
           + jnp.arange(classes)[:, None, None, None, None])  # [R, h, w, T, S, S, 2, 2]
  weight = (wy[..., :, None, :, None] * wx[..., None, :, None, :]
            * (valid / jnp.maximum(count, 1)[..., None, None])[..., None, None])
  rows = num_rois * ph * pw * classes
  out = weighted_gather(table, index.reshape(rows, -1), weight.reshape(rows, -1).astype(boxes.dtype))
  return out.reshape(num_rois, ph, pw, c_out).astype(features.dtype)
