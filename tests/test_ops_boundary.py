"""Boundary-aware mask encoding (Hayder et al. 2017): the truncated distance transform against SciPy's exact
Euclidean distance transform, decoding of encoded masks, and the soft decoder against float64 SciPy convolutions
with the disks."""
import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

from segjax.ops.boundary import decode_boundary_aware, encode_boundary_aware, quantisation_bins
from segjax.ops.boundary import disk_evidence, soft_decode_boundary_aware, truncated_distance_transform

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


def _disk(radius):
  r = int(np.floor(radius))
  y, x = np.mgrid[-r:r + 1, -r:r + 1]
  return (x * x + y * y <= radius * radius).astype(np.float64)


def test_soft_decoding_is_one_minus_exp_of_the_disk_convolutions():
  """M = 1 - exp(-sum_n softplus(z_n) conv disk(r_n)) on the grid grown by `pad`, from SciPy's zero-padded
  convolution in float64: the probability that no disk covers a pixel is the product of its coverers' 1 - B_n."""
  rng = np.random.default_rng(2)
  logits = rng.normal(-4, 2, (K, 20, 24))
  pad = R
  _, radii = quantisation_bins(R, K)
  absent = np.pad(np.log1p(np.exp(logits)), ((0, 0), (pad, pad), (pad, pad)))  # -log(1 - sigmoid(z))
  evidence = sum(ndimage.convolve(b, _disk(r), mode="constant", cval=0.0) for b, r in zip(absent, radii))
  got = np.asarray(soft_decode_boundary_aware(jnp.asarray(logits, jnp.float32), R, pad=pad))
  np.testing.assert_allclose(got, 1 - np.exp(-evidence), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(disk_evidence(jnp.asarray(logits, jnp.float32), R, pad=pad)), evidence,
                             rtol=1e-5, atol=1e-6)
  assert 0.05 < (got > 0.5).mean() < 0.95  # both sides of 0.5


def test_soft_decoding_of_confident_maps_is_the_exact_decoding_and_has_gradients():
  rng = np.random.default_rng(4)
  mask = _blobs(rng)
  bins = np.asarray(encode_boundary_aware(mask, R, K))
  soft = np.asarray(soft_decode_boundary_aware(np.where(bins, 30.0, -30.0).astype(np.float32), R, pad=2))
  exact = np.asarray(decode_boundary_aware(bins, R, pad=2))
  assert np.abs(soft - exact).max() < 1e-6
  grad = jax.grad(lambda z: soft_decode_boundary_aware(z, R).sum())(jnp.full(bins.shape, -6.0, jnp.float32))
  assert np.asarray(grad).min() > 0  # every map cell moves the pixels its disk covers
