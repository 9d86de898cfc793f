"""Deformable PS RoI pooling against a float64 NumPy port of the reference's CUDA kernels, forward and backward:
msracver/Deformable-ConvNets, rfcn/operator_cxx/deformable_psroi_pooling.cu (DeformablePSROIPoolForwardKernel,
DeformablePSROIPoolBackwardAccKernel), commit 6aeda878a95bcb55eadffbe125804e730574de8d. Layouts are moved to
segjax's (NHWC features, offsets [R, P, P, T, (dx, dy)]); the loops are the kernels' own.

Tolerances: float64 atol 1e-10 (the same arithmetic up to summation order); float32 (vs. ps_roi_align) 1e-5.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segjax.ops.deform_roi import deform_ps_roi_pool
from segjax.ops.roi import ps_roi_align
from train_util import counting_jit

N, H, W = 2, 9, 11


def _c_round(v):
  return math.copysign(math.floor(abs(v) + 0.5), v)


def _reference(features, rois, trans, pooled, scale, group, samples, trans_std, top_diff=None, stats=None):
  """The forward kernel (top_diff None) -> top [R, P, P, C_out]; or the backward kernel for top_diff -> (data
  diff, trans diff). features [N, H, W, C]; trans [R, P_part, P_part, T, 2] or None (no_trans). `stats` counts
  the samples skipped, clamped and inside."""
  stats = {} if stats is None else stats
  _, height, width, channels = features.shape
  output_dim = channels // (group * group)
  no_trans = trans is None
  part_size = pooled if no_trans else trans.shape[1]
  num_classes = 1 if no_trans else trans.shape[3]
  channels_each_class = output_dim // num_classes
  top = np.zeros((len(rois), pooled, pooled, output_dim))
  data_diff, trans_diff = np.zeros_like(features), (None if no_trans else np.zeros_like(trans))
  for n in range(len(rois)):
    for ctop in range(output_dim):
      for ph in range(pooled):
        for pw in range(pooled):
          b = int(rois[n, 0])
          roi_start_w = _c_round(rois[n, 1]) * scale - 0.5
          roi_start_h = _c_round(rois[n, 2]) * scale - 0.5
          roi_end_w = (_c_round(rois[n, 3]) + 1.) * scale - 0.5
          roi_end_h = (_c_round(rois[n, 4]) + 1.) * scale - 0.5
          roi_width = max(roi_end_w - roi_start_w, 0.1)
          roi_height = max(roi_end_h - roi_start_h, 0.1)
          bin_size_h, bin_size_w = roi_height / pooled, roi_width / pooled
          sub_h, sub_w = bin_size_h / samples, bin_size_w / samples
          part_h, part_w = ph * part_size // pooled, pw * part_size // pooled
          class_id = ctop // channels_each_class
          trans_x = 0. if no_trans else trans[n, part_h, part_w, class_id, 0] * trans_std
          trans_y = 0. if no_trans else trans[n, part_h, part_w, class_id, 1] * trans_std
          wstart = pw * bin_size_w + roi_start_w + trans_x * roi_width
          hstart = ph * bin_size_h + roi_start_h + trans_y * roi_height
          gw = min(max(pw * group // pooled, 0), group - 1)
          gh = min(max(ph * group // pooled, 0), group - 1)
          c = (ctop * group + gh) * group + gw
          data = features[b, :, :, c]
          points = []
          for ih in range(samples):
            for iw in range(samples):
              w, h = wstart + iw * sub_w, hstart + ih * sub_h
              if w < -0.5 or w > width - 0.5 or h < -0.5 or h > height - 0.5:
                stats["skipped"] = stats.get("skipped", 0) + 1
                continue
              clamped = w < 0 or w > width - 1 or h < 0 or h > height - 1
              stats["clamped" if clamped else "inside"] = stats.get("clamped" if clamped else "inside", 0) + 1
              points.append((min(max(w, 0.), width - 1.), min(max(h, 0.), height - 1.)))
          if top_diff is None:
            values = []
            for w, h in points:
              x1, x2, y1, y2 = math.floor(w), math.ceil(w), math.floor(h), math.ceil(h)
              dx, dy = w - x1, h - y1
              values.append((1 - dx) * (1 - dy) * data[y1, x1] + (1 - dx) * dy * data[y2, x1]
                            + dx * (1 - dy) * data[y1, x2] + dx * dy * data[y2, x2])
            top[n, ph, pw, ctop] = sum(values) / len(values) if values else 0.
            continue
          if not points:
            continue
          diff_val = top_diff[n, ph, pw, ctop] / len(points)
          for w, h in points:
            x0, x1, y0, y1 = math.floor(w), math.ceil(w), math.floor(h), math.ceil(h)
            dist_x, dist_y = w - x0, h - y0
            data_diff[b, y0, x0, c] += (1 - dist_x) * (1 - dist_y) * diff_val
            data_diff[b, y1, x0, c] += (1 - dist_x) * dist_y * diff_val
            data_diff[b, y0, x1, c] += dist_x * (1 - dist_y) * diff_val
            data_diff[b, y1, x1, c] += dist_x * dist_y * diff_val
            if no_trans:
              continue
            u00, u01, u10, u11 = data[y0, x0], data[y1, x0], data[y0, x1], data[y1, x1]
            diff_x = (u11 * dist_y + u10 * (1 - dist_y) - u01 * dist_y - u00 * (1 - dist_y)) * trans_std * diff_val
            diff_y = (u11 * dist_x + u01 * (1 - dist_x) - u10 * dist_x - u00 * (1 - dist_x)) * trans_std * diff_val
            trans_diff[n, part_h, part_w, class_id, 0] += diff_x * roi_width
            trans_diff[n, part_h, part_w, class_id, 1] += diff_y * roi_height
  return top if top_diff is None else (data_diff, trans_diff)


def _inputs(rng, num_rois, pooled, group, c_out, parts, classes, scale):
  features = rng.normal(size=(N, H, W, c_out * group * group))
  h, w = H / scale, W / scale
  xy = rng.uniform(-0.2, 0.9, (num_rois, 2)) * (w, h)
  wh = rng.uniform(0.0, 0.7, (num_rois, 2)) * (w, h)
  rois = np.concatenate([rng.integers(0, N, (num_rois, 1)), xy, xy + wh], 1)
  rois[0, 1:] = (2.5, -1.5, 2.5, 3.5)  # halves (rounded away from zero) and a 1-pixel-wide RoI
  trans = rng.normal(0, 1.5, (num_rois, parts, parts, classes, 2))
  return features, rois, trans


@pytest.mark.parametrize("pooled, group, parts, classes, samples, scale",
                         [(3, 3, 3, 1, 2, 0.5), (3, 3, 2, 2, 3, 0.25), (4, 2, 4, 1, 1, 1.0)])
def test_deform_ps_roi_pool_matches_reference_kernels_float64(pooled, group, parts, classes, samples, scale):
  rng = np.random.default_rng(pooled * 10 + parts)
  c_out = 2 * classes
  features, rois, trans = _inputs(rng, 6, pooled, group, c_out, parts, classes, scale)
  top_diff = rng.normal(size=(len(rois), pooled, pooled, c_out))
  stats = {}
  expected = _reference(features, rois, trans, pooled, scale, group, samples, 0.1, stats=stats)
  assert min(stats.get(k, 0) for k in ("skipped", "clamped", "inside")) > 0, stats
  data_diff, trans_diff = _reference(features, rois, trans, pooled, scale, group, samples, 0.1, top_diff)
  assert np.abs(trans_diff).max() > 0.1 and np.abs(expected).max() > 0.5
  with jax.enable_x64(True):
    pool = lambda f, t: deform_ps_roi_pool(f, jnp.asarray(rois), t, pooled, scale, group, samples, 0.1)
    out, vjp = jax.vjp(jax.jit(pool), jnp.asarray(features), jnp.asarray(trans))
    ours_data_diff, ours_trans_diff = vjp(jnp.asarray(top_diff))
    assert out.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(out), expected, rtol=0, atol=1e-10)
    np.testing.assert_allclose(np.asarray(ours_data_diff), data_diff, rtol=0, atol=1e-10)
    np.testing.assert_allclose(np.asarray(ours_trans_diff), trans_diff, rtol=0, atol=1e-10)
    no_trans = deform_ps_roi_pool(jnp.asarray(features), jnp.asarray(rois), None, pooled, scale, group, samples)
  np.testing.assert_allclose(np.asarray(no_trans), _reference(features, rois, None, pooled, scale, group, samples, 0.1),
                             rtol=0, atol=1e-10)


def test_deform_ps_roi_pool_with_zero_offsets_is_ps_roi_align_on_shifted_boxes():
  """Zero offsets: the reference's grid (rounded corners, far edges x2 + 1, samples at sub-bin starts) is
  torchvision's PS-RoIAlign grid (samples at sub-bin centres) on the box moved left/up by half a sub-bin, of width
  (x2 + 1 - x1), when every sample lies inside [-0.5, extent - 0.5] (where both clamp alike and none is skipped)."""
  rng = np.random.default_rng(0)
  pooled, samples, scale, c_out = 3, 2, 0.5, 4
  features = rng.normal(size=(N, H, W, c_out * pooled * pooled)).astype(np.float32)
  x1 = rng.integers(0, 2 * W - 8, 8).astype(np.float64)
  y1 = rng.integers(0, 2 * H - 8, 8).astype(np.float64)
  x2, y2 = x1 + rng.integers(0, 2 * W - 1 - x1), y1 + rng.integers(0, 2 * H - 1 - y1)
  rois = np.stack([rng.integers(0, N, 8), x1, y1, x2, y2], 1).astype(np.float32)
  ours = deform_ps_roi_pool(features, rois, np.zeros((8, pooled, pooled, 2), np.float32), pooled, scale,
                            sampling_ratio=samples)
  side_w, side_h = x2 + 1 - x1, y2 + 1 - y1  # image pixels
  sx, sy = x1 - 0.5 * side_w / (pooled * samples), y1 - 0.5 * side_h / (pooled * samples)
  shifted = np.stack([rois[:, 0], sx, sy, sx + side_w, sy + side_h], 1).astype(np.float32)
  expected = ps_roi_align(features, shifted, pooled, scale, samples)
  np.testing.assert_allclose(np.asarray(ours), np.asarray(expected), rtol=0, atol=1e-5)
  # The plain boxes (torchvision's convention on the same corners) give other values: the conventions differ.
  plain = ps_roi_align(features, rois, pooled, scale, samples)
  assert np.abs(np.asarray(plain) - np.asarray(ours)).max() > 0.1


def test_deform_ps_roi_pool_offsets_move_bins_and_no_recompile():
  """A bin moved by one of its own sides (dx = 1 / gamma / bins) reads what its right neighbour read, for a
  single-cell group (every bin reads the same channel); other RoI counts at the same static shapes reuse the jit."""
  rng = np.random.default_rng(1)
  features = rng.normal(size=(1, H, W, 2)).astype(np.float32)
  rois = np.array([[0, 2, 2, 9, 6]], np.float32)
  offsets = np.zeros((1, 2, 2, 2), np.float32)
  offsets[0, :, 0, 0] = 1 / 0.1 / 2
  out = deform_ps_roi_pool(features, rois, offsets, 2, 1.0, 1, 2, 0.1)
  base = deform_ps_roi_pool(features, rois, None, 2, 1.0, 1, 2, 0.1)
  np.testing.assert_allclose(np.asarray(out[:, :, 0]), np.asarray(base[:, :, 1]), atol=1e-5)
  np.testing.assert_allclose(np.asarray(out[:, :, 1]), np.asarray(base[:, :, 1]), atol=1e-5)
  jitted = counting_jit(deform_ps_roi_pool, static_argnums=(3, 4, 5, 6, 7))
  rois2 = np.concatenate([rois, rois + [0, 1, 0, 1, 0]])
  jitted(features, rois2, np.zeros((2, 2, 2, 2), np.float32), 2, 1.0, 1, 2, 0.1)
  jitted(features, rois2 + 0.5, np.ones((2, 2, 2, 2), np.float32), 2, 1.0, 1, 2, 0.1)
  assert jitted.traces == 1


def test_deform_ps_roi_pool_bad_arguments():
  features, rois = np.zeros((1, 4, 4, 18)), np.zeros((1, 5))
  with pytest.raises(ValueError, match="offsets must be"):
    deform_ps_roi_pool(features, rois, np.zeros((1, 3, 3, 3)), 3)
  with pytest.raises(ValueError, match="offsets must be"):
    deform_ps_roi_pool(features, rois, np.zeros((1, 3, 3, 4, 2)), 3)
  with pytest.raises(ValueError, match="multiple of the group cells"):
    deform_ps_roi_pool(features, rois, None, 4)
  with pytest.raises(ValueError, match="sampling_ratio"):
    deform_ps_roi_pool(features, rois, None, 3, sampling_ratio=0)
