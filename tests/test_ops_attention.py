"""Gaussian glimpses of Recurrent Attention (Ren & Zemel 2017) against the filterbank formula in NumPy."""
import numpy as np

from segjax.ops.attention import extract_patch, gaussian_filterbank, write_patch


def _filterbank(center, extent, sigma, size, k):
  """DRAW Eqs. 19-22 written out: point i at g + (i - K/2 + 0.5) delta / K, Gaussian weights over pixel centres."""
  f = np.zeros((size, k))
  for i in range(k):
    mu = center + (i - k / 2 + 0.5) * extent / k
    for a in range(size):
      f[a, i] = np.exp(-((a + 0.5 - mu) ** 2) / (2 * sigma ** 2))
  return f / f.sum(axis=0, keepdims=True)


def test_filterbank_equals_the_formula_and_columns_sum_to_one():
  f = np.asarray(gaussian_filterbank(13.3, 9.0, 1.7, 30, 6))
  np.testing.assert_allclose(f, _filterbank(13.3, 9.0, 1.7, 30, 6), atol=1e-6)
  np.testing.assert_allclose(f.sum(axis=0), 1, atol=1e-6)


def test_extract_reads_the_box_and_its_transpose_writes_it_back():
  rng = np.random.default_rng(0)
  image = rng.random((20, 24, 2)).astype(np.float32)
  # A box of 8 x 6 pixels whose patch points fall on pixel centres, with narrow Gaussians: a crop.
  fy = gaussian_filterbank(center=9.0, extent=6.0, sigma=0.05, image_size=20, patch_size=6)
  fx = gaussian_filterbank(center=12.0, extent=8.0, sigma=0.05, image_size=24, patch_size=8)
  patch = np.asarray(extract_patch(image, fy, fx))
  np.testing.assert_allclose(patch, image[6:12, 8:16], atol=1e-5)
  back = np.asarray(write_patch(patch, fy, fx))
  expected = np.zeros_like(image)
  expected[6:12, 8:16] = image[6:12, 8:16]
  np.testing.assert_allclose(back, expected, atol=1e-5)
