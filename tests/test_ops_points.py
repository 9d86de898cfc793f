"""PointRend's point ops against torch's grid_sample (point_sample) and NumPy ports of detectron2's point selection.

The ports follow facebookresearch/detectron2, projects/PointRend/point_rend/point_features.py at commit
31a1c124de2578a3aaa5c057b969b4cd1899ed31 (get_uncertain_point_coords_with_randomness,
get_uncertain_point_coords_on_grid, generate_regular_grid_point_coords), written in float64 NumPy with the random
draws (the oversampled points and torch.randperm's permutation) passed in.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segjax.ops import platform
from segjax.ops import points as points_lib
from references import requires_torch


def _grid_sample_nchw(features, points):
  """torch reference: detectron2's point_sample on NHWC features [N, H, W, C] and points [N, P, 2]."""
  import torch  # pylint: disable=import-outside-toplevel
  f = torch.tensor(np.moveaxis(features, -1, 1), dtype=torch.float64, requires_grad=True)
  p = torch.tensor(points, dtype=torch.float64, requires_grad=True)
  out = torch.nn.functional.grid_sample(f, 2.0 * p[:, :, None] - 1.0, align_corners=False)[..., 0]  # [N, C, P]
  return f, p, out.transpose(1, 2)


@requires_torch
@pytest.mark.parametrize("kernels", ["xla", "cpu"])
def test_point_sample_equals_grid_sample_in_values_and_gradients(kernels):
  rng = np.random.default_rng(0)
  n, h, w, c, p = 2, 5, 7, 3, 200
  features = rng.normal(size=(n, h, w, c)).astype(np.float32)
  points = rng.uniform(-0.3, 1.3, (n, p, 2)).astype(np.float32)  # about half outside [0, 1] on some axis
  points[0, :4] = [[0.0, 0.0], [1.0, 1.0], [0.5 / w, 0.5 / h], [-0.3 / w, 1.05]]  # corners, a centre, a border
  cotangent = rng.normal(size=(n, p, c)).astype(np.float32)

  f, q, expected = _grid_sample_nchw(features, points)
  expected.backward(__import__("torch").tensor(cotangent, dtype=expected.dtype))
  with platform.kernels(kernels):
    value, vjp = jax.vjp(jax.jit(points_lib.point_sample), jnp.asarray(features), jnp.asarray(points))
    d_features, d_points = vjp(jnp.asarray(cotangent))
  np.testing.assert_allclose(value, expected.detach().numpy(), atol=1e-5)
  np.testing.assert_allclose(d_features, np.moveaxis(f.grad.numpy(), 1, -1), atol=1e-4)
  np.testing.assert_allclose(d_points, q.grad.numpy(), atol=1e-3, rtol=1e-4)
  assert np.abs(value[0, 3:]).max() > 0 and np.abs(q.grad.numpy()).max() > 1  # the comparison is not of zeros


def test_point_sample_rejects_mismatched_shapes():
  with pytest.raises(ValueError, match="points must be"):
    points_lib.point_sample(jnp.zeros((2, 4, 4, 1)), jnp.zeros((3, 5, 2)))


def _bilinear_np(maps, pts):
  """grid_sample(align_corners=False, zeros) of maps [R, H, W] at pts [R, P, 2], float64 loops."""
  r, h, w = maps.shape
  out = np.zeros(pts.shape[:2])
  for i in range(r):
    for j, (x, y) in enumerate(pts[i]):
      x, y = x * w - 0.5, y * h - 0.5
      x0, y0 = int(np.floor(x)), int(np.floor(y))
      for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
          if 0 <= yy < h and 0 <= xx < w:
            out[i, j] += wy * wx * maps[i, yy, xx]
  return out


def _with_randomness_np(logits, candidates, permutation, num_points, importance_sample_ratio):
  """detectron2's get_uncertain_point_coords_with_randomness with the given draws (class-agnostic logits)."""
  u = -np.abs(_bilinear_np(logits, candidates))
  num_uncertain = int(importance_sample_ratio * num_points)
  num_random = num_points - num_uncertain
  top = np.argsort(-u, axis=1, kind="stable")[:, :num_uncertain]
  chosen = np.take_along_axis(candidates, top[..., None], 1)
  if num_random:
    rest = np.argsort(u, axis=1, kind="stable")[:, :candidates.shape[1] - num_uncertain]
    chosen = np.concatenate([chosen, np.take_along_axis(candidates, rest[:, permutation[:num_random], None], 1)], 1)
  return chosen


@pytest.mark.parametrize("ratio", [0.75, 1.0, 0.0])
def test_select_uncertain_points_equals_detectron2(ratio):
  rng = np.random.default_rng(1)
  r, num_points, k = 3, 196, 3
  logits = rng.normal(0, 3, (r, 7, 7))
  candidates = rng.uniform(0, 1, (r, k * num_points, 2))
  permutation = rng.permutation(k * num_points - int(ratio * num_points))
  expected = _with_randomness_np(logits, candidates, permutation, num_points, ratio)
  got = jax.jit(points_lib.select_uncertain_points, static_argnums=(3, 4))(
      jnp.asarray(logits, jnp.float32), jnp.asarray(candidates, jnp.float32), jnp.asarray(permutation),
      num_points, ratio)
  assert got.shape == (r, num_points, 2)
  np.testing.assert_allclose(got, expected, atol=1e-6)


def test_uncertain_points_with_randomness_draws_uniform_candidates():
  """The key version: 147 of the 196 points the most uncertain of 588 uniform candidates, the rest from the others."""
  logits = jnp.asarray(np.random.default_rng(2).normal(0, 3, (4, 7, 7)), jnp.float32)
  got = points_lib.uncertain_points_with_randomness(jax.random.key(0), logits, 196, 3, 0.75)
  assert got.shape == (4, 196, 2) and float(got.min()) >= 0 and float(got.max()) <= 1
  u = np.asarray(points_lib.uncertainty(points_lib.point_sample(logits[..., None], got)[..., 0]))
  assert np.all(u[:, :147].min(1) >= u[:, 147:].max(1))  # importance-sampled points are the most uncertain
  assert len({tuple(p) for p in np.asarray(got).reshape(-1, 2)}) == 4 * 196  # distinct candidates


def _on_grid_np(uncertainty_map, num_points):
  """detectron2's get_uncertain_point_coords_on_grid."""
  r, h, w = uncertainty_map.shape
  num_points = min(h * w, num_points)
  index = np.argsort(-uncertainty_map.reshape(r, h * w), axis=1, kind="stable")[:, :num_points]
  coords = np.stack([0.5 / w + (index % w) / w, 0.5 / h + (index // w) / h], -1)
  return index, coords


@pytest.mark.parametrize("shape,num_points", [((3, 28, 28), 784), ((2, 14, 14), 784), ((2, 56, 40), 100)])
def test_uncertain_points_on_grid_equals_detectron2(shape, num_points):
  u = -np.abs(np.random.default_rng(3).normal(size=shape))
  index, coords = jax.jit(points_lib.uncertain_points_on_grid, static_argnums=1)(jnp.asarray(u, jnp.float32),
                                                                               num_points)
  expected_index, expected_coords = _on_grid_np(u, num_points)
  np.testing.assert_array_equal(index, expected_index)
  np.testing.assert_allclose(coords, expected_coords, atol=1e-6)


def test_regular_grid_points_are_affine_grid_cell_centres():
  """generate_regular_grid_point_coords: affine_grid([[.5, 0, .5], [0, .5, .5]]) of a side x side grid."""
  side = 5
  ys, xs = np.mgrid[:side, :side]
  expected = np.stack([(xs + 0.5) / side, (ys + 0.5) / side], -1).reshape(-1, 2)
  np.testing.assert_allclose(points_lib.regular_grid_points(side), expected, atol=1e-7)
