"""Spatial pyramid pooling (segjax.ops.spp) against a float64 NumPy version written from SPP-net's Sec. 2.3 (each
level a max pooling with window ceil(a/n) and stride floor(a/n)), on odd map and region sizes."""
import math

import jax
import numpy as np
import pytest

from segjax.ops import spp
from train_util import counting_jit


def _numpy_spp(region, levels):
  """region [h, w, C] float64 -> concatenated levels, bin (i, j) the max of rows [i sh, i sh + wh) and columns
  [j sw, j sw + ww), wh = ceil(h/n), sh = floor(h/n) (and the same for w), as the paper's pooling layers."""
  h, w, _ = region.shape
  out = []
  for n in levels:
    wh, sh, ww, sw = math.ceil(h / n), h // n, math.ceil(w / n), w // n
    level = np.empty((n, n, region.shape[-1]))
    for i in range(n):
      for j in range(n):
        level[i, j] = region[i * sh:min(i * sh + wh, h), j * sw:min(j * sw + ww, w)].max((0, 1))
    out.append(level.reshape(-1))
  return np.concatenate(out)


@pytest.mark.parametrize("size", [(13, 13), (11, 17), (7, 9)])
def test_whole_map_bins_follow_the_window_and_stride_formula(size):
  rng = np.random.default_rng(size[0])
  features = rng.normal(size=(2, *size, 5)).astype(np.float32)
  got = np.asarray(jax.jit(spp.spatial_pyramid_pool)(features))
  assert got.shape == (2, (36 + 9 + 4 + 1) * 5)
  for b in range(2):
    np.testing.assert_array_equal(got[b], _numpy_spp(features[b].astype(np.float64), spp.SPPNET_LEVELS))


def test_regions_of_odd_sizes_one_program():
  rng = np.random.default_rng(0)
  features = rng.normal(size=(15, 19, 3)).astype(np.float32)
  cells = np.array([[0, 0, 18, 14], [2, 3, 8, 13], [5, 1, 17, 5], [4, 4, 10, 10], [7, 9, 7, 9], [1, 2, 3, 12]])
  pool = counting_jit(spp.region_pyramid_pool)
  got = np.asarray(pool(features, cells))
  for row, (x1, y1, x2, y2) in zip(got, cells):
    np.testing.assert_array_equal(row, _numpy_spp(features[y1:y2 + 1, x1:x2 + 1].astype(np.float64),
                                                  spp.SPPNET_LEVELS))
  pool(features, cells[::-1])  # other regions: the same program
  assert pool.traces == 1


def test_window_and_stride_on_a_13x13_conv5():
  """The paper's example (Sec. 2.3, conv5 13x13, level 3x3): window 5, stride 4, so the bins read rows (and
  columns) 0..4, 4..8 and 8..12: rows 4 and 8 belong to two bins each."""
  features = np.zeros((13, 13, 1), np.float32)
  features[8, 12, 0] = 1.0  # row 8: bins 1 and 2; column 12: bin 2
  features[4, 0, 0] = 2.0  # row 4: bins 0 and 1; column 0: bin 0
  features[2, 6, 0] = 3.0  # row 2: bin 0; column 6: bin 1
  level3 = np.asarray(spp.region_pyramid_pool(features, np.array([[0, 0, 12, 12]]), (3,)))[0].reshape(3, 3)
  np.testing.assert_array_equal(level3, [[2, 3, 0], [2, 0, 1], [0, 0, 1]])


def test_box_projection_of_the_appendix():
  boxes = np.array([[0.0, 0.0, 16.0, 16.0], [17.0, 33.0, 100.0, 64.0], [40.0, 40.0, 41.0, 41.0]], np.float32)
  np.testing.assert_array_equal(np.asarray(spp.project_boxes(boxes, 16)),
                                [[0, 0, 0, 0], [1, 2, 6, 3], [2, 2, 2, 2]])
