"""segjax.ops.depth.backproject against a float64 NumPy loop over pixels of the pinhole equation X = (u - cx) Z / fx,
Y = (v - cy) Z / fy (as compute_xyz of github.com/NVlabs/UnseenObjectClustering, lib/datasets/tabletop_object.py,
commit 2600526d9159b020a73da421970b6e867d4007ee), per image intrinsics; and a point projects back to its pixel."""
import jax
import numpy as np

from segjax.ops import depth as depth_ops


def _reference(depth, intrinsics):
  b, h, w = depth.shape
  out = np.zeros((b, h, w, 3))
  for i in range(b):
    fx, fy, cx, cy = intrinsics[i]
    for v in range(h):
      for u in range(w):
        z = depth[i, v, u]
        out[i, v, u] = ((u - cx) * z / fx, (v - cy) * z / fy, z)
  return out


def test_backproject_matches_the_pinhole_equation():
  rng = np.random.default_rng(0)
  depth = rng.uniform(0.3, 8.0, (3, 9, 11))
  depth[0, 2, 3] = 0  # no depth: the origin
  intrinsics = np.array([[11.0, 11.0, 5.5, 4.5], [20.0, 18.0, 3.2, 7.9], [7.5, 9.0, -1.0, 2.0]])
  xyz = np.asarray(jax.jit(depth_ops.backproject)(depth.astype(np.float32), intrinsics.astype(np.float32)))
  assert xyz.shape == (3, 9, 11, 3) and xyz.dtype == np.float32
  np.testing.assert_allclose(xyz, _reference(depth, intrinsics), rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(xyz[0, 2, 3], 0)
  # Projection inverts it: u = fx X / Z + cx, v = fy Y / Z + cy.
  fx, fy, cx, cy = intrinsics[1]
  v, u = np.mgrid[:9, :11]
  np.testing.assert_allclose(fx * xyz[1, ..., 0] / xyz[1, ..., 2] + cx, u, atol=1e-4)
  np.testing.assert_allclose(fy * xyz[1, ..., 1] / xyz[1, ..., 2] + cy, v, atol=1e-4)
