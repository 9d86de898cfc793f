"""Region candidates by selective search's hierarchical grouping (Uijlings et al. 2013), as MCG-format lists of
superpixels (segjax/data/region_candidate_files.py), for scripts/region_candidates.py at data-build time.

Each strategy is (colour space, k): the image converted to the colour space (OpenCV's 8-bit HSV or Lab) is
over-segmented by Felzenszwalb and Huttenlocher's graph segmentation (cv2.ximgproc.segmentation, sigma 0.8,
min_size = k, as rbgirshick/rcnn's selective_search/selective_search_boxes.m at commit
026236268a44709ddd9f79b01f58ed29d23920a1 sets it), then grouped greedily once per similarity: the most similar
pair of adjacent regions (8-neighbourhood) is merged until one region is left (Sec. 3.1). The similarity is the sum
of the terms a similarity names (Sec. 3.2):
  colour   histogram intersection of 25-bin histograms per channel, L1-normalised (75 bins)
  texture  histogram intersection of 10-bin histograms of Gaussian derivatives (sigma 1) in 8 orientations per
           channel (the positive and negative parts of the derivatives along 0, 45, 90 and 135 degrees, each map
           binned over its own [0, max] as opencv/opencv_contrib's
           modules/ximgproc/src/selectivesearchsegmentation.cpp at commit 1ee9867ead4a54c24528f622e6c53e3d446eec13
           does), L1-normalised (240 bins)
  size     1 - (size_i + size_j) / image size
  fill     1 - (box_ij - size_i - size_j) / image size, box_ij the tight box around both regions
A merged region's histograms are the size-weighted means of its parts'. The fast mode (FAST, the paper's, as
selective_search_boxes.m's fast_mode sets it) is the colour spaces HSV and Lab, k in (50, 100) and the similarities
colour + texture + size + fill and texture + size + fill: 8 hierarchies. Every region of every hierarchy (leaves
included) is a candidate.

MCG's format holds one superpixel map per image; the strategies' segmentations differ, so the superpixels are their
overlay (the pixels that share a segment in every segmentation; SDS intersects partitions alike,
bharath272/sds_eccv2014, preprocess_mcg_candidates.m, intersect_partitions), and each candidate is the list of the
superpixels that its segments cover: exactly its pixels.

Ranking: selective search's pseudo-random order (selective_search_boxes.m: "pseudo random sorting as in paper",
each hierarchy's priorities times uniform random numbers, ascending): a merged region's priority is its position
from the top of its hierarchy (1 the whole image, the last merge; 2 the merge before; ...), a leaf's one more than
the hierarchy's merges (below them all), each times a uniform random number drawn from `seed`; duplicates (the same
superpixels) keep their first place. The score written for MCG's `scores` field is 1 / (1 + that value), so MCG's
descending order is this one.
"""
import dataclasses
import heapq

import numpy as np
from scipy import ndimage

COLOUR_BINS = 25
TEXTURE_BINS = 10
TEXTURE_SIGMA = 1.0
SIGMA = 0.8  # Felzenszwalb-Huttenlocher's smoothing
TERMS = ("colour", "texture", "size", "fill")


@dataclasses.dataclass(frozen=True)
class Strategies:
  """Selective search's diversification: one grouping per (colour space, k, similarity), similarities as tuples of
  TERMS."""
  colour_spaces: tuple[str, ...] = ("hsv", "lab")
  ks: tuple[float, ...] = (50, 100)
  similarities: tuple[tuple[str, ...], ...] = (("colour", "texture", "size", "fill"), ("texture", "size", "fill"))


FAST = Strategies()
_RANGES = {"hsv": (180, 256, 256), "lab": (256, 256, 256), "rgb": (256, 256, 256)}  # OpenCV's 8-bit channel ranges


def colour_image(image, space):
  """image uint8 [H, W, 3] RGB -> uint8 [H, W, 3] in `space` ("hsv", "lab", "rgb"), OpenCV's 8-bit encoding."""
  import cv2  # pylint: disable=g-import-not-at-top  (a data-preparation dependency only)
  codes = {"hsv": cv2.COLOR_RGB2HSV, "lab": cv2.COLOR_RGB2Lab}
  if space not in _RANGES:
    raise ValueError(f"colour space {space!r}: expected one of {sorted(_RANGES)}")
  image = np.ascontiguousarray(image, np.uint8)
  return image if space == "rgb" else cv2.cvtColor(image, codes[space])


def felzenszwalb(image, k, sigma=SIGMA, min_size=None):
  """Felzenszwalb-Huttenlocher segments int32 [H, W] (0..n-1) of image uint8 [H, W, C] (OpenCV's implementation)."""
  import cv2  # pylint: disable=g-import-not-at-top
  segmentation = cv2.ximgproc.segmentation.createGraphSegmentation(sigma, float(k), int(k if min_size is None
                                                                                         else min_size))
  labels = segmentation.processImage(np.ascontiguousarray(image))
  return np.unique(labels, return_inverse=True)[1].reshape(labels.shape).astype(np.int32)  # ids 0..n-1


def adjacent_pairs(labels):
  """The pairs (i, j), i < j, int [E, 2] of segments that touch in the 8-neighbourhood."""
  pairs = [np.stack([a.ravel(), b.ravel()], 1) for a, b in (
      (labels[:, :-1], labels[:, 1:]), (labels[:-1], labels[1:]),
      (labels[:-1, :-1], labels[1:, 1:]), (labels[:-1, 1:], labels[1:, :-1]))]
  pairs = np.concatenate(pairs)
  pairs = pairs[pairs[:, 0] != pairs[:, 1]]
  return np.unique(np.sort(pairs, 1), axis=0)


def _histograms(labels, n, maps, bins, ranges):
  """[n, len(maps) * bins] per-segment histograms of maps [C, H, W] (each binned over [0, its range)),
  L1-normalised."""
  out = np.zeros((n, len(maps) * bins))
  flat = labels.ravel()
  for c, (values, top) in enumerate(zip(maps, ranges)):
    index = np.minimum((values.ravel() * (bins / top)).astype(np.int64), bins - 1)
    out[:, c * bins:(c + 1) * bins] = np.bincount(flat * bins + index, minlength=n * bins).reshape(n, bins)
  return out / np.maximum(out.sum(1, keepdims=True), 1)


def texture_maps(image):
  """The 8 oriented Gaussian-derivative maps of each channel of image [H, W, C]: float [8 C, H, W], each >= 0."""
  maps = []
  for c in range(image.shape[2]):
    channel = image[..., c].astype(np.float64)
    gy = ndimage.gaussian_filter(channel, TEXTURE_SIGMA, order=(1, 0))
    gx = ndimage.gaussian_filter(channel, TEXTURE_SIGMA, order=(0, 1))
    for angle in np.deg2rad([0, 45, 90, 135]):
      derivative = np.cos(angle) * gx + np.sin(angle) * gy
      maps += [np.maximum(derivative, 0), np.maximum(-derivative, 0)]
  return np.stack(maps)


def hierarchy(labels, image, terms, space="rgb", maps=None):
  """Selective search's greedy grouping of segments labels int [H, W] (0..n-1) of image uint8 [H, W, 3] in colour
  space `space` (colour_image's; the colour histograms bin each channel over its range) by the similarity summing
  `terms` (of TERMS); maps: texture_maps(image) where the caller has them.

  Returns merges int [n - 1, 2]: merge t joins regions merges[t] into region n + t (regions 0..n-1 are the
  segments), the last one the whole image.
  """
  unknown = set(terms) - set(TERMS)
  if unknown or not terms:
    raise ValueError(f"similarity terms {tuple(terms)}: expected some of {TERMS}")
  n = int(labels.max()) + 1
  total = float(labels.size)
  size = np.bincount(labels.ravel(), minlength=n).astype(np.float64)
  boxes = np.array([(s[0].start, s[1].start, s[0].stop, s[1].stop) for s in ndimage.find_objects(labels + 1)],
                   np.float64).reshape(n, 4)
  hist = {}
  if "colour" in terms:
    hist["colour"] = _histograms(labels, n, np.moveaxis(image, -1, 0), COLOUR_BINS, _RANGES[space])
  if "texture" in terms:
    maps = texture_maps(image) if maps is None else maps
    hist["texture"] = _histograms(labels, n, maps, TEXTURE_BINS, np.maximum(maps.max((1, 2)), 1e-12))
  # Region arrays grow to 2n - 1 rows: the merged regions after the segments.
  size = np.concatenate([size, np.zeros(n - 1)])
  boxes = np.concatenate([boxes, np.zeros((n - 1, 4))])
  hist = {k: np.concatenate([v, np.zeros((n - 1, v.shape[1]))]) for k, v in hist.items()}

  def similarity(i, j):
    s = sum(np.minimum(h[i], h[j]).sum() for h in hist.values())
    if "size" in terms:
      s += 1 - (size[i] + size[j]) / total
    if "fill" in terms:
      box = np.concatenate([np.minimum(boxes[i, :2], boxes[j, :2]), np.maximum(boxes[i, 2:], boxes[j, 2:])])
      s += 1 - ((box[2] - box[0]) * (box[3] - box[1]) - size[i] - size[j]) / total
    return s

  neighbours = [set() for _ in range(2 * n - 1)]
  heap = []
  for i, j in adjacent_pairs(labels):
    neighbours[i].add(j)
    neighbours[j].add(i)
    heap.append((-similarity(i, j), int(i), int(j)))
  heapq.heapify(heap)
  alive = np.zeros(2 * n - 1, bool)
  alive[:n] = True
  merges = []
  while heap:
    _, i, j = heapq.heappop(heap)
    if not (alive[i] and alive[j]):
      continue
    new = n + len(merges)
    merges.append((i, j))
    size[new] = size[i] + size[j]
    boxes[new] = np.concatenate([np.minimum(boxes[i, :2], boxes[j, :2]), np.maximum(boxes[i, 2:], boxes[j, 2:])])
    for h in hist.values():
      h[new] = (h[i] * size[i] + h[j] * size[j]) / size[new]
    alive[[i, j]] = False
    alive[new] = True
    for other in (neighbours[i] | neighbours[j]) - {i, j}:
      neighbours[other] -= {i, j}
      neighbours[other].add(new)
      neighbours[new].add(other)
      heapq.heappush(heap, (-similarity(new, other), new, other))
  if len(merges) != n - 1:
    raise ValueError(f"the segments do not form one connected image: {n - 1 - len(merges)} regions left apart")
  return np.array(merges, np.int64).reshape(-1, 2)



def overlay(segmentations):
  """The common refinement of segmentations [J] of int [H, W]: (superpixels int32 [H, W] 1..S, the pixels that
  share a segment in every segmentation, numbered in raster order of their first pixel; segment_of int [J, S], the
  segment of each segmentation that holds superpixel s + 1)."""
  key = np.zeros(segmentations[0].size, np.int64)
  for labels in segmentations:
    key = np.unique(key * (int(labels.max()) + 1) + labels.ravel(), return_inverse=True)[1].ravel()
  _, first, cells = np.unique(key, return_index=True, return_inverse=True)
  order = np.argsort(first, kind="stable")  # raster order of first pixels
  rank = np.empty_like(order)
  rank[order] = np.arange(len(order))
  superpixels = (rank[cells.ravel()] + 1).reshape(segmentations[0].shape).astype(np.int32)
  segment_of = np.stack([labels.ravel()[first[order]] for labels in segmentations])
  return superpixels, segment_of


def _region_superpixels(merges, segment_of):
  """The superpixel ids (1-based, sorted) of every region of a hierarchy: segments 0..n-1, then its merges."""
  n = len(merges) + 1
  order = np.argsort(segment_of, kind="stable")
  starts = np.searchsorted(segment_of[order], np.arange(n + 1))
  regions = [order[starts[i]:starts[i + 1]] + 1 for i in range(n)]
  for a, b in merges:
    regions.append(np.concatenate([regions[a], regions[b]]))
  return [np.sort(r) for r in regions]


def region_candidates(image, strategies=FAST, seed=0):
  """Selective search's regions of image uint8 [H, W, 3] RGB as MCG candidates (the module docstring):
  (superpixels int32 [H, W] 1..S, candidates: [K] int arrays of sorted superpixel ids, scores float64 [K]
  descending), in the pseudo-random ranking drawn from `seed`, each set of superpixels once."""
  segmentations, hierarchies = [], []
  for space in strategies.colour_spaces:
    converted = colour_image(image, space)
    maps = texture_maps(converted) if any("texture" in terms for terms in strategies.similarities) else None
    for k in strategies.ks:
      labels = felzenszwalb(converted, k)
      segmentations.append(labels)
      hierarchies += [(len(segmentations) - 1, hierarchy(labels, converted, terms, space, maps))
                      for terms in strategies.similarities]
  superpixels, segment_of = overlay(segmentations)
  rng = np.random.default_rng(seed)
  regions, values = [], []
  for j, merges in hierarchies:
    n = len(merges) + 1
    regions += _region_superpixels(merges, segment_of[j])
    position = np.concatenate([np.full(n, n), np.arange(n - 1, 0, -1)])  # the leaves, then merge t at n - 1 - t
    values.append(position * rng.random(2 * n - 1))
  values = np.concatenate(values)
  candidates, scores, seen = [], [], set()
  for i in np.argsort(values, kind="stable"):
    key = regions[i].tobytes()
    if key not in seen:
      seen.add(key)
      candidates.append(regions[i])
      scores.append(1 / (1 + values[i]))
  return superpixels, candidates, np.array(scores)
