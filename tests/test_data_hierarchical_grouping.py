"""Selective search's hierarchical grouping as MCG candidates: whole superpixels, connected, unique, a binary merge
tree ending in the whole image, the most similar pair first; flat shapes on a plain background are recovered; the
generator script writes files the reader reads back."""
import importlib.util
import os

import numpy as np
import pytest
from scipy import ndimage

from references import requires_opencv
from segjax.data import hierarchical_grouping as grouping
from segjax.data import region_candidate_files
from train_util import REPO

EIGHT = np.ones((3, 3), bool)


def _textured(seed, h=48, w=64):
  """Smooth random colours plus noise: many segments of irregular shapes."""
  rng = np.random.default_rng(seed)
  image = ndimage.gaussian_filter(rng.random((h, w, 3)), (4, 4, 0))
  image = (image - image.min()) / (image.max() - image.min()) * 230 + rng.integers(0, 25, (h, w, 3))
  return image.astype(np.uint8)


def _shapes(seed, h=96, w=128):
  """Flat-coloured shapes (a disc, a rectangle, a triangle) apart on a plain background: (image, [masks])."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[:h, :w] + 0.5
  cy, cx = rng.uniform(22, 26), rng.uniform(22, 30)
  disc = (y - cy) ** 2 + (x - cx) ** 2 < rng.uniform(14, 18) ** 2
  top, left = rng.integers(55, 60), rng.integers(15, 25)
  rectangle = (y > top) & (y < top + rng.integers(20, 30)) & (x > left) & (x < left + rng.integers(30, 40))
  apex = rng.uniform(80, 95)
  triangle = (y > 10) & (y < 45) & (np.abs(x - apex) < (y - 10) * 0.6)
  colours = rng.permutation([(220, 40, 40), (40, 60, 210), (40, 170, 60)])
  image = np.empty((h, w, 3), np.uint8)
  image[:] = (205, 200, 190)
  for mask, colour in zip((disc, rectangle, triangle), colours):
    image[mask] = colour
  return image, [disc, rectangle, triangle]


@requires_opencv
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_flat_shapes_are_recovered(seed):
  """Each shape is flat and differs from the background, so the graph segmentation cuts along its edge: the shape
  is a union of superpixels up to the band its smoothing (sigma 0.8) blurs, about a pixel wide, and the grouping
  merges the shape's similar adjacent pieces (its interior, its side of the band) before the background. A band a
  pixel wide half outside a shape of perimeter p and area a costs about p / (2 a) of IoU: <= 0.07 here, so >= 0.9."""
  image, shapes = _shapes(seed)
  superpixels, candidates, _ = grouping.region_candidates(image, seed=seed)
  masks = np.stack([np.isin(superpixels, c) for c in candidates])
  for shape in shapes:
    iou = (masks & shape).sum((1, 2)) / (masks | shape).sum((1, 2))
    assert iou.max() >= 0.9


@requires_opencv
@pytest.mark.parametrize("seed", [0, 1])
def test_candidates_are_connected_unique_unions_of_whole_segments(seed):
  image = _textured(seed)
  superpixels, candidates, scores = grouping.region_candidates(image, seed=seed)
  s = int(superpixels.max())
  assert set(np.unique(superpixels)) == set(range(1, s + 1))
  # The superpixels refine every strategy's segmentation: each lies inside one segment of each.
  for space in grouping.FAST.colour_spaces:
    for k in grouping.FAST.ks:
      segments = grouping.felzenszwalb(grouping.colour_image(image, space), k)
      assert len(np.unique(superpixels.astype(np.int64) * (segments.max() + 1) + segments)) == s
  masks = np.stack([np.isin(superpixels, c) for c in candidates])
  assert len({m.tobytes() for m in masks}) == len(masks)  # each region once
  assert all(len(np.unique(c)) == len(c) and c.min() >= 1 and c.max() <= s for c in candidates)
  assert all(ndimage.label(m, EIGHT)[1] == 1 for m in masks)  # merges of adjacent connected segments
  assert masks.all((1, 2)).sum() == 1  # the hierarchies' last region, the whole image, once
  assert (np.diff(scores) <= 0).all()


def test_the_hierarchy_is_a_binary_merge_tree_of_adjacent_regions_ending_in_the_image():
  image = _textured(3, 40, 40)
  labels = (np.arange(40)[:, None] // 8 * 5 + np.arange(40)[None] // 8).astype(np.int32)  # a 5 x 5 grid
  merges = grouping.hierarchy(labels, image, grouping.TERMS)
  n = 25
  assert merges.shape == (n - 1, 2)
  assert sorted(merges.ravel().tolist()) == list(range(2 * n - 2))  # every region but the last merged once
  regions = [labels == i for i in range(n)]
  for t, (a, b) in enumerate(merges):
    assert a < n + t and b < n + t  # regions that exist
    regions.append(regions[a] | regions[b])
    assert ndimage.label(regions[-1], EIGHT)[1] == 1  # adjacent
  assert regions[-1].all()


def test_the_most_similar_pair_merges_first():
  """Four stripes coloured red, blue, blue, red: by colour alone (histogram intersection: 1 for equal histograms, 0
  for disjoint ones) the adjacent equal pair (1, 2) merges first; the equal pair (0, 3) does not touch."""
  image = np.zeros((10, 40, 3), np.uint8)
  labels = np.repeat(np.arange(4)[None], 10, 0).repeat(10, 1).astype(np.int32)
  colours = [(200, 10, 10), (10, 10, 200), (10, 10, 200), (200, 10, 10)]
  for i, colour in enumerate(colours):
    image[labels == i] = colour
  merges = grouping.hierarchy(labels, image, ("colour",))
  assert tuple(merges[0]) == (1, 2)


@requires_opencv
def test_the_script_writes_files_the_reader_reads(tmp_path):
  spec = importlib.util.spec_from_file_location("region_candidates", os.path.join(REPO, "scripts",
                                                                                   "region_candidates.py"))
  script = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(script)
  from PIL import Image  # pylint: disable=g-import-not-at-top
  image, _ = _shapes(0)
  Image.fromarray(image).save(tmp_path / "a.png")
  count = script.write_image(str(tmp_path / "a.png"), str(tmp_path / "a.mat"), seed=4, max_candidates=20)
  superpixels, candidates, scores = region_candidate_files.read(tmp_path / "a.mat", image.shape[:2])
  expected = grouping.region_candidates(image, seed=4)
  np.testing.assert_array_equal(superpixels, expected[0])
  assert count == len(candidates) == 20
  assert [c.tolist() for c in candidates] == [c.tolist() for c in expected[1][:20]]
  np.testing.assert_allclose(scores, expected[2][:20])
