"""Bed-of-nails unpooling against its definition in NumPy."""
import numpy as np
import pytest

from segjax.ops import bed_of_nails_unpool


def test_values_at_the_cell_corners_zeros_elsewhere():
  x = np.random.default_rng(0).normal(size=(2, 3, 4, 5)).astype(np.float32)
  for stride in (2, 3):
    expected = np.zeros((2, 3 * stride, 4 * stride, 5), np.float32)
    expected[:, ::stride, ::stride] = x
    np.testing.assert_array_equal(np.asarray(bed_of_nails_unpool(x, stride)), expected)
  with pytest.raises(ValueError, match="stride"):
    bed_of_nails_unpool(x, 0)
