"""Boundary-aware mask encoding (Hayder et al. 2017): the truncated distance transform against SciPy's exact
Euclidean distance transform, and decoding of encoded masks."""
import numpy as np
from scipy import ndimage

from segjax.ops.boundary import decode_boundary_aware, encode_boundary_aware, truncated_distance_transform

R, K = 6, 3


def _blobs(rng, shape=(40, 48)):
  """Random shapes: smoothed noise thresholded (several components, holes, thin parts)."""
  noise = ndimage.gaussian_filter(rng.normal(size=shape), 3)
  return noise > 0.1 * noise.std()


def _reference_distance(mask):
  """ceil(EDT to the nearest outside pixel) truncated at R; the array border is not outside."""
  padded = np.pad(mask, R + 1, constant_values=True)  # beyond the array: not outside
  d = ndimage.distance_transform_edt(padded)[R + 1:-R - 1, R + 1:-R - 1]
  return np.where(mask, np.minimum(np.ceil(d), R), 0)


def test_truncated_distance_equals_scipy():
  rng = np.random.default_rng(0)
  for _ in range(5):
    mask = _blobs(rng)
    np.testing.assert_array_equal(np.asarray(truncated_distance_transform(mask, R)), _reference_distance(mask))


def test_decoding_gives_the_mask_back():
  rng = np.random.default_rng(1)
  for _ in range(5):
    mask = _blobs(rng)
    bins = encode_boundary_aware(mask, R, K)
    assert np.asarray(bins).sum(0).max() <= 1  # the bins partition the object
    np.testing.assert_array_equal(np.asarray(decode_boundary_aware(bins, R)), mask)


def test_a_box_that_cuts_the_object_decodes_past_its_edge():
  mask = np.zeros((40, 40), bool)
  mask[8:32, 6:34] = True  # a rectangle; the box keeps its left part only
  box = (slice(4, 36), slice(2, 20))
  bins = encode_boundary_aware(mask[box], R, K)
  decoded = np.asarray(decode_boundary_aware(bins, R, pad=R))
  inside = decoded[R:-R, R:-R]
  np.testing.assert_array_equal(inside, mask[box])  # exact inside the box
  past = decoded[R:-R, -R:]  # the R columns right of the box
  truth = mask[4:36, 20:20 + R]
  assert past.any() and not (past & ~truth).any()  # reaches past the cut, only onto the object
