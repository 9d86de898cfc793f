"""RoI pooling ops against torchvision (NCHW, transposed here) and plain float64 NumPy loops.

Tolerances: float64 comparisons atol 1e-10 (the same arithmetic up to summation order);
float32 atol 1e-5.
"""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segjax.ops import roi
from segjax.ops.gather import weighted_gather
from references import requires_torch, torchvision
from train_util import counting_jit

N, H, W, C = 2, 13, 17, 8


def _torchvision():
  return torchvision


def _rois(rng, num, scale):
  """RoIs in image pixels (map size / scale) partly or fully outside the map, of zero size and
  reversed, plus random ones."""
  h, w = H / scale, W / scale
  xy = rng.uniform(-0.3, 1.1, (num, 2)) * (w, h)
  wh = rng.uniform(-0.1, 0.8, (num, 2)) * (w, h)
  boxes = np.concatenate([xy, xy + wh], 1)
  boxes[:4] = [[0, 0, w, h], [-2 * w, -h, -w, 0], [w / 2, h / 3, w / 2, h / 3], [w, h, w, h]]
  boxes[4] = [3 / scale, 2 / scale, 1 / scale, 1 / scale]  # reversed
  return np.concatenate([rng.integers(0, N, (num, 1)), boxes], 1)


def _nchw(a):
  import torch  # pylint: disable=import-outside-toplevel
  return torch.tensor(np.ascontiguousarray(np.moveaxis(a, -1, 1)), requires_grad=True)


def _nhwc(t):
  return np.moveaxis(t.detach().numpy(), 1, -1)


def _torch_value_and_grad(fn, features, rois, cotangent):
  """torchvision value and features-gradient of <fn(features, rois), cotangent>, NHWC."""
  import torch  # pylint: disable=import-outside-toplevel
  f = _nchw(features)
  out = fn(f, torch.tensor(rois))
  out.backward(torch.tensor(np.ascontiguousarray(np.moveaxis(cotangent, -1, 1))))
  return _nhwc(out), _nhwc(f.grad)


def _jax_value_and_grad(fn, features, cotangent):
  out, vjp = jax.vjp(fn, jnp.asarray(features))
  return np.asarray(out), np.asarray(vjp(jnp.asarray(cotangent, out.dtype))[0])


def _assert_close(actual, expected, atol):
  np.testing.assert_allclose(actual, expected, rtol=0, atol=atol)


# --- the sparse core --------------------------------------------------------------------------


@pytest.mark.parametrize("rows", [0, 1, 7, 4099])  # 4099: padded to 2 chunks of 2050 rows
def test_weighted_gather_matches_loops(rows):
  """Value and both gradients against plain loops, float64 (atol 1e-10)."""
  rng = np.random.default_rng(rows)
  table, g = rng.standard_normal((11, 3)), rng.standard_normal((rows, 3))
  index, weight = rng.integers(0, 11, (rows, 5)), rng.standard_normal((rows, 5))
  out, dtable, dweight = np.zeros((rows, 3)), np.zeros_like(table), np.zeros_like(weight)
  for u in range(rows):
    for k in range(5):
      out[u] += weight[u, k] * table[index[u, k]]
      dtable[index[u, k]] += weight[u, k] * g[u]
      dweight[u, k] = g[u] @ table[index[u, k]]
  with jax.enable_x64(True):
    value, vjp = jax.vjp(lambda t, w: weighted_gather(t, jnp.asarray(index, jnp.int32), w),
                         jnp.asarray(table), jnp.asarray(weight))
    grads = vjp(jnp.asarray(g))
  for actual, expected in zip((value, *grads), (out, dtable, dweight)):
    _assert_close(np.asarray(actual), expected, 1e-10)


# --- roi_align -------------------------------------------------------------------------------

_roi_align = jax.jit(roi.roi_align, static_argnums=(2, 3, 4, 5))


@requires_torch
@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [1, 2, 3])
def test_roi_align_matches_torchvision_float64(aligned, sampling_ratio):
  tv = _torchvision()
  rng = np.random.default_rng(sampling_ratio)
  features = rng.standard_normal((N, H, W, C))
  rois = _rois(rng, 24, 0.25)
  cotangent = rng.standard_normal((24, 3, 4, C))
  expected = _torch_value_and_grad(
      lambda f, r: tv.ops.roi_align(f, r, (3, 4), 0.25, sampling_ratio, aligned),
      features, rois, cotangent)
  with jax.enable_x64(True):
    actual = _jax_value_and_grad(
        lambda f: _roi_align(f, jnp.asarray(rois), (3, 4), 0.25, sampling_ratio, aligned),
        features, cotangent)
  for a, e in zip(actual, expected):
    _assert_close(a, e, 1e-10)


@requires_torch
def test_roi_align_matches_torchvision_float32():
  tv = _torchvision()
  rng = np.random.default_rng(7)
  features = rng.standard_normal((N, H, W, C)).astype(np.float32)
  rois = _rois(rng, 24, 0.5).astype(np.float32)
  cotangent = rng.standard_normal((24, 7, 7, C)).astype(np.float32)
  expected = _torch_value_and_grad(lambda f, r: tv.ops.roi_align(f, r, 7, 0.5, 2, True),
                                   features, rois, cotangent)
  actual = _jax_value_and_grad(lambda f: _roi_align(f, jnp.asarray(rois), 7, 0.5, 2, True),
                               features, cotangent)
  for a, e in zip(actual, expected):
    assert a.dtype == np.float32
    _assert_close(a, e, 1e-5)


@requires_torch
@pytest.mark.parametrize("shape", [(1, 1, 5, 3), (1, 4, 1, 3), (1, 1, 1, 2)])
def test_roi_align_one_pixel_maps(shape):
  """Maps one pixel high or wide: RoIAlign's taps clamp to the single row/column, RoIPool's
  window table has a single level on that axis."""
  tv = _torchvision()
  rng = np.random.default_rng(0)
  features = rng.standard_normal(shape)
  rois = np.array([[0, -1.0, -1.0, 6.0, 5.0], [0, 0.2, 0.1, 0.9, 0.4], [0, -3, -3, -1.2, -1.5]])
  cotangent = rng.standard_normal((3, 2, 2, shape[-1]))
  for tv_op, op in ((functools.partial(tv.ops.roi_align, output_size=2, sampling_ratio=2,
                                        aligned=True), functools.partial(roi.roi_align, output_size=2)),
                    (functools.partial(tv.ops.roi_pool, output_size=2),
                     functools.partial(roi.roi_pool, output_size=2))):
    expected = _torch_value_and_grad(tv_op, features, rois, cotangent)
    with jax.enable_x64(True):
      actual = _jax_value_and_grad(lambda f: op(f, jnp.asarray(rois)), features, cotangent)
    for a, e in zip(actual, expected):
      _assert_close(a, e, 1e-10)


def test_roi_align_samples_at_the_border_rule():
  """Samples at y = -1 and y = H are kept (clamped), just beyond them they are zero."""
  features = np.ones((1, 4, 4, 1), np.float32)
  # One bin, one sample at the box centre: y = (y1 + y2) / 2 with aligned=False.
  centre = lambda y: np.array([[0, 1.0, y - 0.5, 2.0, y + 0.5]], np.float32)
  value = lambda y: float(roi.roi_align(jnp.asarray(features), centre(y), 1, 1.0, 1, False)[0, 0, 0, 0])
  assert value(-1.0) == 1.0 and value(4.0) == 1.0
  assert value(-1.01) == 0.0 and value(4.01) == 0.0


def test_roi_align_no_recompile_for_new_rois():
  traces = []

  @counting_jit
  def pooled_sum(features, rois):
    traces.append(None)
    return roi.roi_align(features, rois, 7, 0.25, 2, True).sum()

  rng = np.random.default_rng(0)
  features = jnp.asarray(rng.standard_normal((N, H, W, C)), jnp.float32)
  grad = counting_jit(jax.grad(pooled_sum))
  for seed in range(3):
    rois = jnp.asarray(_rois(np.random.default_rng(seed), 24, 0.25), jnp.float32)
    pooled_sum(features, rois)
    grad(features, rois)
  assert len(traces) == 1  # the gradient reuses the traced jaxpr
  assert pooled_sum.traces == 1 and grad.traces == 1


def test_roi_align_bad_inputs():
  features = jnp.zeros((N, H, W, C))
  with pytest.raises(ValueError, match="rois must be"):
    roi.roi_align(features, jnp.zeros((3, 4)), 7)
  with pytest.raises(ValueError, match="features must be"):
    roi.roi_align(jnp.zeros((H, W, C)), jnp.zeros((3, 5)), 7)
  with pytest.raises(ValueError, match="sampling_ratio"):
    roi.roi_align(features, jnp.zeros((3, 5)), 7, sampling_ratio=-1)
  with pytest.raises(ValueError, match="output_size"):
    roi.roi_align(features, jnp.zeros((3, 5)), (7, 0))


# --- FPN levels --------------------------------------------------------------------------------


def _boundary_boxes():
  """Squares whose side sits on, just below and just above the level boundaries 224 * 2**k."""
  sides = []
  for k in range(-3, 3):
    s = 224 * 2.0**k
    sides += [s, s * (1 - 1e-7), s * (1 + 1e-7), s * (1 - 3e-6)]
  sides += [0.0, 1.0, 5000.0]
  sides = np.array(sides)
  return np.stack([np.full_like(sides, 3), np.full_like(sides, 5), 3 + sides, 5 + sides], 1)


def _detectron2_levels(boxes, k_min, k_max):
  """detectron2 assign_boxes_to_levels, one box at a time."""
  out = []
  for x1, y1, x2, y2 in boxes:
    size = math.sqrt((x2 - x1) * (y2 - y1))
    out.append(min(max(math.floor(4 + math.log2(size / 224 + 1e-8)), k_min), k_max) - k_min)
  return np.array(out)


@requires_torch
def test_assign_fpn_levels_torchvision():
  tv = _torchvision()
  import torch  # pylint: disable=import-outside-toplevel
  boxes = _boundary_boxes()
  expected = tv.ops.poolers.LevelMapper(2, 5)([torch.tensor(boxes)]).numpy()
  with jax.enable_x64(True):
    actual = np.asarray(roi.assign_fpn_levels(jnp.asarray(boxes), 2, 5))
  np.testing.assert_array_equal(actual, expected)


def test_assign_fpn_levels_detectron2():
  boxes = _boundary_boxes()
  with jax.enable_x64(True):
    actual = np.asarray(roi.assign_fpn_levels(jnp.asarray(boxes), 2, 5, variant="detectron2"))
    torchvision_rule = np.asarray(roi.assign_fpn_levels(jnp.asarray(boxes), 2, 5))
  np.testing.assert_array_equal(actual, _detectron2_levels(boxes, 2, 5))
  assert (actual != torchvision_rule).any()  # the boundary boxes tell the two rules apart


def test_assign_fpn_levels_bad_inputs():
  with pytest.raises(ValueError, match="variant"):
    roi.assign_fpn_levels(jnp.zeros((2, 4)), 2, 5, variant="mmdet")
  with pytest.raises(ValueError, match="boxes must be"):
    roi.assign_fpn_levels(jnp.zeros((2, 5)), 2, 5)


_LEVEL_SHAPES = [(N, 32, 40, 4), (N, 16, 20, 4), (N, 8, 10, 4), (N, 4, 5, 4)]
_SCALES = (1 / 4, 1 / 8, 1 / 16, 1 / 32)


def _pyramid_rois(rng, num):
  """Boxes of sqrt(area) 16..800 px around a 128 x 160 image so that every level gets some."""
  size = np.exp(rng.uniform(np.log(16), np.log(800), (num, 1)))
  aspect = np.exp(rng.uniform(-0.7, 0.7, (num, 1)))
  xy = rng.uniform(-20, 140, (num, 2))
  wh = np.concatenate([size * aspect, size / aspect], 1)
  return np.concatenate([rng.integers(0, N, (num, 1)), xy, xy + wh], 1)


_multilevel = jax.jit(roi.multilevel_roi_align, static_argnums=(2, 3, 4, 5, 6))


@requires_torch
def test_multilevel_roi_align_matches_multiscale_roi_align():
  tv = _torchvision()
  import torch  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(3)
  features = [rng.standard_normal(s) for s in _LEVEL_SHAPES]
  rois = _pyramid_rois(rng, 40)
  cotangent = rng.standard_normal((40, 5, 5, 4))
  levels = [_nchw(f) for f in features]
  pooler = tv.ops.MultiScaleRoIAlign(["p2", "p3", "p4", "p5"], 5, 2)
  boxes = [torch.tensor(rois[rois[:, 0] == i, 1:]) for i in range(N)]
  order = np.concatenate([np.flatnonzero(rois[:, 0] == i) for i in range(N)])
  out = pooler(dict(zip(["p2", "p3", "p4", "p5"], levels)), boxes, [(128, 160)] * N)
  out.backward(torch.tensor(np.moveaxis(cotangent[order], -1, 1)))
  with jax.enable_x64(True):
    fn = lambda *f: _multilevel(f, jnp.asarray(rois), 5, _SCALES, 2, False, "torchvision")
    actual, vjp = jax.vjp(fn, *map(jnp.asarray, features))
    grads = vjp(jnp.asarray(cotangent))
  assert len(set(np.asarray(roi.assign_fpn_levels(jnp.asarray(rois[:, 1:]), 2, 5)))) == 4
  _assert_close(np.asarray(actual)[order], _nhwc(out), 1e-10)
  for g, level in zip(grads, levels):
    _assert_close(np.asarray(g), _nhwc(level.grad), 1e-10)


@requires_torch
def test_multilevel_roi_align_detectron2_aligned():
  """detectron2 ROIPooler (ROIAlignV2): detectron2 levels, aligned=True, per-level torchvision."""
  tv = _torchvision()
  import torch  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(4)
  features = [rng.standard_normal(s) for s in _LEVEL_SHAPES]
  rois = _pyramid_rois(rng, 40)
  level = _detectron2_levels(rois[:, 1:], 2, 5)
  expected = np.zeros((40, 5, 5, 4))
  for k, (f, scale) in enumerate(zip(features, _SCALES)):
    pooled = tv.ops.roi_align(_nchw(f), torch.tensor(rois), 5, scale, 2, True)
    expected[level == k] = _nhwc(pooled)[level == k]
  with jax.enable_x64(True):
    actual = _multilevel(tuple(map(jnp.asarray, features)), jnp.asarray(rois), 5, _SCALES, 2,
                         True, "detectron2")
  _assert_close(np.asarray(actual), expected, 1e-10)


def test_multilevel_roi_align_bad_inputs():
  features = [jnp.zeros(s) for s in _LEVEL_SHAPES]
  rois = jnp.zeros((3, 5))
  with pytest.raises(ValueError, match="spatial_scale"):
    roi.multilevel_roi_align(features, rois, 7, _SCALES[:3])
  with pytest.raises(ValueError, match="consecutive"):
    roi.multilevel_roi_align(features, rois, 7, (1 / 4, 1 / 8, 1 / 32, 1 / 64))
  with pytest.raises(ValueError, match="share N and C"):
    roi.multilevel_roi_align(features[:3] + [jnp.zeros((N, 4, 5, 3))], rois, 7, _SCALES)


# --- roi_pool ----------------------------------------------------------------------------------

_roi_pool = jax.jit(roi.roi_pool, static_argnums=(2, 3))


@requires_torch
@pytest.mark.parametrize("scale", [0.25, 0.5])
def test_roi_pool_matches_torchvision(scale):
  """Integer-valued features make ties, so the gradient checks torchvision's first-argmax rule;
  scale 0.5 with odd coordinates rounds x.5 corners (half away from zero)."""
  tv = _torchvision()
  rng = np.random.default_rng(5)
  features = rng.integers(-2, 3, (N, H, W, C)).astype(np.float64)
  rois = _rois(rng, 24, scale)
  rois[5:9, 1:] = np.round(rois[5:9, 1:]) + 1 - np.round(rois[5:9, 1:]) % 2  # odd integers
  cotangent = rng.standard_normal((24, 3, 4, C))
  expected = _torch_value_and_grad(lambda f, r: tv.ops.roi_pool(f, r, (3, 4), scale),
                                   features, rois, cotangent)
  with jax.enable_x64(True):
    actual = _jax_value_and_grad(lambda f: _roi_pool(f, jnp.asarray(rois), (3, 4), scale),
                                 features, cotangent)
  assert (expected[0][1] == 0).all()  # the box outside the map pools empty bins
  for a, e in zip(actual, expected):
    _assert_close(a, e, 1e-10)


# --- position-sensitive ops --------------------------------------------------------------------

P, Q, C_OUT = 3, 2, 4
_ps_roi_align = jax.jit(roi.ps_roi_align, static_argnums=(2, 3, 4))
_ps_roi_pool = jax.jit(roi.ps_roi_pool, static_argnums=(2, 3))


@requires_torch
@pytest.mark.parametrize("sampling_ratio", [-1, 2])
def test_ps_roi_align_matches_torchvision(sampling_ratio):
  tv = _torchvision()
  rng = np.random.default_rng(6)
  features = rng.standard_normal((N, H, W, C_OUT * P * Q))
  rois = _rois(rng, 32, 0.25)
  rois[10] = [1, -30, -20, 150, 100]  # adaptive: many samples per bin, most off the map
  cotangent = rng.standard_normal((32, P, Q, C_OUT))
  expected = _torch_value_and_grad(
      lambda f, r: tv.ops.ps_roi_align(f, r, (P, Q), 0.25, sampling_ratio), features, rois,
      cotangent)
  with jax.enable_x64(True):
    actual = _jax_value_and_grad(
        lambda f: _ps_roi_align(f, jnp.asarray(rois), (P, Q), 0.25, sampling_ratio), features,
        cotangent)
  # torchvision divides 0 by 0 samples for degenerate boxes in adaptive mode; we give 0.
  nan = np.isnan(expected[0])
  assert nan.any() == (sampling_ratio == -1)
  assert (actual[0][nan] == 0).all()
  _assert_close(actual[0][~nan], expected[0][~nan], 1e-10)
  _assert_close(actual[1], expected[1], 1e-10)


def test_ps_roi_align_channel_layout():
  """Output channel c of bin (i, j) reads input channel c * P * Q + i * Q + j."""
  features = jnp.broadcast_to(jnp.arange(C_OUT * P * Q, dtype=jnp.float32), (1, 6, 6, C_OUT * P * Q))
  out = roi.ps_roi_align(features, jnp.array([[0, 0.0, 0.0, 6.0, 6.0]]), (P, Q), 1.0, 2)
  c, i, j = np.meshgrid(np.arange(C_OUT), np.arange(P), np.arange(Q), indexing="ij")
  np.testing.assert_allclose(out[0], np.moveaxis(c * P * Q + i * Q + j, 0, -1), atol=1e-5)


def _ps_roi_pool_reference(features, rois, scale):
  """torchvision's ps_roi_pool forward as plain loops, and the gradient of that forward."""
  r_num = rois.shape[0]
  out = np.zeros((r_num, P, Q, C_OUT))
  jac = np.zeros((r_num, P, Q) + features.shape[:3])  # d out[r, i, j, c] / d f[n, h, w, ch(c)]
  rnd = lambda v: math.floor(abs(v) + 0.5) * (1 if v >= 0 else -1)
  for r, (b, x1, y1, x2, y2) in enumerate(rois):
    x1, y1, x2, y2 = (rnd(v * scale) for v in (x1, y1, x2, y2))
    bin_h, bin_w = max(y2 - y1, 1) / P, max(x2 - x1, 1) / Q
    for i in range(P):
      for j in range(Q):
        hs = min(max(math.floor(i * bin_h) + y1, 0), H - 1)
        he = min(max(math.ceil((i + 1) * bin_h) + y1, 0), H - 1)
        ws = min(max(math.floor(j * bin_w) + x1, 0), W - 1)
        we = min(max(math.ceil((j + 1) * bin_w) + x1, 0), W - 1)
        if he <= hs or we <= ws:
          continue
        area = (he - hs) * (we - ws)
        jac[r, i, j, int(b), hs:he, ws:we] = 1 / area
        for c in range(C_OUT):
          out[r, i, j, c] = features[int(b), hs:he, ws:we, c * P * Q + i * Q + j].sum() / area
  return out, jac


@requires_torch
def test_ps_roi_pool_matches_torchvision_forward_and_its_gradient():
  tv = _torchvision()
  rng = np.random.default_rng(8)
  features = rng.standard_normal((N, H, W, C_OUT * P * Q))
  rois = _rois(rng, 32, 0.5)
  rois[5:9, 1:] = np.round(rois[5:9, 1:]) + 1 - np.round(rois[5:9, 1:]) % 2
  cotangent = rng.standard_normal((32, P, Q, C_OUT))
  tv_out, tv_grad = _torch_value_and_grad(lambda f, r: tv.ops.ps_roi_pool(f, r, (P, Q), 0.5),
                                          features, rois, cotangent)
  with jax.enable_x64(True):
    out, grad = _jax_value_and_grad(lambda f: _ps_roi_pool(f, jnp.asarray(rois), (P, Q), 0.5),
                                    features, cotangent)
  ref_out, jac = _ps_roi_pool_reference(features, rois, 0.5)
  _assert_close(out, tv_out, 1e-10)
  _assert_close(ref_out, tv_out, 1e-10)
  ref_grad = np.zeros_like(features).reshape(N, H, W, C_OUT, P, Q)
  for i in range(P):
    for j in range(Q):
      ref_grad[..., i, j] = np.einsum("rnhw,rc->nhwc", jac[:, i, j], cotangent[:, i, j])
  _assert_close(grad, ref_grad.reshape(features.shape), 1e-10)
  # Away from the bottom/right border torchvision's backward is the gradient of its forward.
  inner = (rois[:, [1, 3]].max(1) * 0.5 < W - 2) & (rois[:, [2, 4]].max(1) * 0.5 < H - 2)
  _, tv_inner = _torch_value_and_grad(lambda f, r: tv.ops.ps_roi_pool(f, r, (P, Q), 0.5),
                                      features, rois[inner], cotangent[inner])
  with jax.enable_x64(True):
    _, inner_grad = _jax_value_and_grad(
        lambda f: roi.ps_roi_pool(f, jnp.asarray(rois[inner]), (P, Q), 0.5), features,
        cotangent[inner])
  assert inner.sum() >= 4
  _assert_close(inner_grad, tv_inner, 1e-10)


def test_ps_ops_bad_channels():
  features, rois = jnp.zeros((N, H, W, 10)), jnp.zeros((3, 5))
  with pytest.raises(ValueError, match="multiple of output h \\* w"):
    roi.ps_roi_align(features, rois, (P, Q))
  with pytest.raises(ValueError, match="multiple of output h \\* w"):
    roi.ps_roi_pool(features, rois, (P, Q))
  with pytest.raises(ValueError, match="rois must be"):
    roi.ps_roi_pool(jnp.zeros((N, H, W, 24)), jnp.zeros((3,)), (P, Q))


@pytest.mark.parametrize("op", [
    functools.partial(roi.roi_pool, output_size=(3, 4), spatial_scale=0.25),
    functools.partial(roi.ps_roi_align, output_size=(P, Q), spatial_scale=0.25, sampling_ratio=-1),
    functools.partial(roi.ps_roi_pool, output_size=(P, Q), spatial_scale=0.25),
    functools.partial(roi.multilevel_roi_align, output_size=3, spatial_scales=(1 / 4, 1 / 8)),
], ids=["roi_pool", "ps_roi_align", "ps_roi_pool", "multilevel_roi_align"])
def test_no_recompile_for_new_rois(op):
  traces = []
  multilevel = op.func is roi.multilevel_roi_align

  @counting_jit
  def pooled_sum(features, rois):
    traces.append(None)
    features = (features, features[:, ::2, ::2]) if multilevel else features
    return op(features, rois).sum()

  features = jnp.ones((N, 12, 16, C_OUT * P * Q))
  for seed in range(3):
    rois = jnp.asarray(_rois(np.random.default_rng(seed), 16, 0.25), jnp.float32)
    jax.grad(pooled_sum)(features, rois)
  assert len(traces) == 1


@requires_torch
def test_roi_pool_bins_are_exact_for_any_roi_count():
  """Bin edges ceil((i + 1) * size / bins) in exact arithmetic: a 12-wide RoI in 7 bins ends its last bin at 12,
  whether it is pooled alone or with others (float (12 / 7) * 7 once gave 13 under XLA's vectorisation)."""
  tv = _torchvision()
  import torch  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  features = rng.standard_normal((2, 16, 16, 3)).astype(np.float32)
  rois = np.asarray([[1, 5.0, 6.0, 48.0, 56.0]] * 2, np.float32)
  expected = tv.ops.roi_pool(torch.from_numpy(features.transpose(0, 3, 1, 2).copy()), torch.from_numpy(rois), 7, 0.25).numpy()
  for count in (1, 2):
    actual = np.asarray(roi.roi_pool(jnp.asarray(features), jnp.asarray(rois[:count]), 7, 0.25))
    np.testing.assert_array_equal(actual, expected[:count].transpose(0, 2, 3, 1))
