"""The unseen-object overlap and boundary P / R / F-measure (segjax.evaluation.overlap) against a float64 NumPy port
of the authors' definition, and through pycocotools ground truth with crowds."""
import itertools

import numpy as np
import pytest

from segjax.evaluation import overlap
import coco_masks


def _seg2bmap(mask):
  """seg2bmap of the same file (from the DAVIS 2017 f_boundary measure), pixel by pixel: a pixel is on the boundary
  when it differs from its east, south or south-east neighbour (0 outside the image); the last row looks east only,
  the last column south only, the bottom-right corner never."""
  h, w = mask.shape
  at = lambda y, x: bool(mask[y, x]) if y < h and x < w else False
  out = np.zeros((h, w), bool)
  for y in range(h):
    for x in range(w):
      if y == h - 1 and x == w - 1:
        continue
      if y == h - 1:
        out[y, x] = at(y, x) != at(y, x + 1)
      elif x == w - 1:
        out[y, x] = at(y, x) != at(y + 1, x)
      else:
        out[y, x] = at(y, x) != at(y, x + 1) or at(y, x) != at(y + 1, x) or at(y, x) != at(y + 1, x + 1)
  return out


def _within(a, b, radius):
  """The pixels of boundary map `a` within Euclidean `radius` of a pixel of `b` (a dilation of b by skimage's disk,
  as the authors' cv2.dilate with disk(bound_pix))."""
  pb = np.argwhere(b)
  if not len(pb):
    return 0
  pa = np.argwhere(a)
  return int(sum(((pb - p) ** 2).sum(1).min() <= radius ** 2 for p in pa))


def _reference(prediction, gt, threshold=0.75):
  """The overlap part of `multilabel_metrics` in github.com/NVlabs/UnseenObjectClustering, lib/utils/evaluation.py
  (commit f5a00c78f61eff70a2477ab77475c12ef821d739), pixel counts in loops over label pairs as there; its munkres
  assignment on F.max() - F replaced by an exhaustive search of the one-to-one matchings for the largest summed F
  (the same optimum), ties broken towards the larger matched overlap."""
  labels_gt = [l for l in np.unique(gt) if l != 0]
  labels_pred = [l for l in np.unique(prediction) if l != 0]
  edge = lambda p, r, f, d: [{"precision": p, "recall": r, "F": f, "detected_075": d, "boundary_precision": p,
                                "boundary_recall": r, "boundary_F": f}]
  if not labels_pred and labels_gt:
    return edge(1.0, 0.0, 0.0, 0.0)
  if labels_pred and not labels_gt:
    return edge(0.0, 1.0, 0.0, 0.0)
  if not labels_pred and not labels_gt:
    return edge(1.0, 1.0, 1.0, 1.0)
  f = np.zeros((len(labels_gt), len(labels_pred)))
  tp = np.zeros_like(f)
  for i, g in enumerate(labels_gt):
    for j, p in enumerate(labels_pred):
      both = np.count_nonzero((gt == g) & (prediction == p))
      tp[i, j] = both
      prec, rec = both / np.count_nonzero(prediction == p), both / np.count_nonzero(gt == g)
      if prec + rec > 0:
        f[i, j] = 2 * prec * rec / (prec + rec)
  n, m = f.shape
  best = None
  if n <= m:  # each ground-truth object matched to a distinct predicted one, or the other way round
    matchings = [list(zip(range(n), cols)) for cols in itertools.permutations(range(m), n)]
  else:
    matchings = [list(zip(rows, range(m))) for rows in itertools.permutations(range(n), m)]
  keys = [(round(sum(f[p] for p in pairs), 12), sum(tp[p] for p in pairs)) for pairs in matchings]
  radius = np.ceil(0.003 * np.linalg.norm(gt.shape))
  gt_maps = [_seg2bmap(gt == g) for g in labels_gt]
  pred_maps = [_seg2bmap(prediction == p) for p in labels_pred]
  results = []
  for pairs in (m for m, k in zip(matchings, keys) if k == max(keys)):  # every optimum: they may differ in boundary
    precision = sum(tp[p] for p in pairs) / np.count_nonzero(prediction.clip(0, 1) == 1)
    recall = sum(tp[p] for p in pairs) / np.count_nonzero(gt.clip(0, 1) == 1)
    f_measure = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    b_precision = sum(_within(pred_maps[j], gt_maps[i], radius) for i, j in pairs) / sum(m.sum() for m in pred_maps)
    b_recall = sum(_within(gt_maps[i], pred_maps[j], radius) for i, j in pairs) / sum(m.sum() for m in gt_maps)
    b_f = 2 * b_precision * b_recall / (b_precision + b_recall) if b_precision + b_recall > 0 else 0.0
    results.append({"precision": precision, "recall": recall, "F": f_measure,
                    "detected_075": sum(f[p] > threshold for p in pairs) / n, "boundary_precision": b_precision,
                    "boundary_recall": b_recall, "boundary_F": b_f})
  return results


def _random_labels(rng, shape, count):
  """A label image of `count` random rectangles (later ones on top), ids drawn from 1..9 with gaps."""
  labels = np.zeros(shape, np.int32)
  for i in rng.choice(np.arange(1, 10), count, replace=False):
    y, x = rng.integers(0, shape[0] - 2), rng.integers(0, shape[1] - 2)
    labels[y:y + rng.integers(2, 9), x:x + rng.integers(2, 9)] = i
  return labels


def _assert_matches_an_optimum(prediction, truth):
  """segjax's metrics equal the reference's under one of the optimal matchings; returns segjax's."""
  got, optima = overlap.image_overlap_metrics(prediction, truth), _reference(prediction, truth)
  assert set(got) == set(optima[0])
  assert any(all(got[k] == pytest.approx(want[k], abs=1e-12) for k in want) for want in optima), (got, optima)
  return got


@pytest.mark.parametrize("seed", range(12))
def test_matches_the_reference(seed):
  rng = np.random.default_rng(seed)
  truth = _random_labels(rng, (16, 20), int(rng.integers(0, 5)))
  if seed % 3 == 0:  # predictions that overlap the truth: shifted, with objects split or merged
    prediction = np.roll(truth, (int(rng.integers(-2, 3)), int(rng.integers(-2, 3))), (0, 1))
    prediction[:, 10:] = np.where(prediction[:, 10:] > 0, prediction[:, 10:] + 10, 0)
  else:
    prediction = _random_labels(rng, (16, 20), int(rng.integers(0, 5)))
  _assert_matches_an_optimum(prediction, truth)


@pytest.mark.parametrize("seed", range(3))
def test_boundary_tolerance_follows_the_image_diagonal(seed):
  """On 150 x 200 images the tolerance is ceil(0.003 * 250) = 1 pixel, on 300 x 420 ceil(1.55) = 2: a prediction
  shifted by 2 pixels keeps every boundary pixel only at the larger size."""
  shift = [(2, 0), (0, 2), (-2, 0)][seed]
  boundary_f = []
  for shape in ((150, 200), (300, 420)):
    truth = np.zeros(shape, np.int32)
    truth[20:60, 30:90] = 3
    truth[80:130, 100:170] = 5
    prediction = np.roll(truth, shift, (0, 1))
    boundary_f.append(_assert_matches_an_optimum(prediction, truth)["boundary_F"])
  assert boundary_f[0] < 1.0 and boundary_f[1] == 1.0, boundary_f


def test_perfect_and_edge_cases():
  truth = _random_labels(np.random.default_rng(0), (16, 20), 3)
  relabelled = np.where(truth > 0, 50 - truth, 0)  # the same objects under other ids
  assert overlap.image_overlap_metrics(relabelled, truth) == {"precision": 1.0, "recall": 1.0, "F": 1.0,
                                                              "detected_075": 1.0, "boundary_precision": 1.0,
                                                              "boundary_recall": 1.0, "boundary_F": 1.0}
  empty = np.zeros_like(truth)
  assert overlap.image_overlap_metrics(empty, truth)["F"] == 0 and overlap.image_overlap_metrics(truth, empty)["F"] == 0
  assert overlap.image_overlap_metrics(empty, empty)["F"] == 1
  merged = (truth > 0).astype(np.int32)  # one predicted object over all three: precision falls, recall stays partial
  got = overlap.image_overlap_metrics(merged, truth)
  largest = np.bincount(truth.ravel())[1:].max()
  assert got["precision"] == pytest.approx(largest / (truth > 0).sum())
  assert got["recall"] == pytest.approx(largest / (truth > 0).sum())


def test_coco_ground_truth_with_a_crowd():
  """Ground-truth masks as results score F 1; crowd pixels that a result also covers count for neither side."""
  masks = np.zeros((3, 12, 16), np.uint8)
  masks[0, 1:5, 1:6] = 1
  masks[1, 6:11, 8:15] = 1
  masks[2, 1:4, 10:15] = 1  # the crowd
  gt = coco_masks.ground_truth([(1, 1, masks[k], k == 2) for k in range(3)], (12, 16), 1, 1)
  results = coco_masks.segm_results([(1, 1, masks[k], 0.9 - 0.1 * k) for k in range(3)])
  assert overlap.coco_overlap_metrics(gt, results) == {"overlap_precision": 1.0, "overlap_recall": 1.0,
                                                       "overlap_F": 1.0, "objects_detected_075": 1.0,
                                                       "boundary_precision": 1.0, "boundary_recall": 1.0,
                                                       "boundary_F": 1.0}
  half = masks[0].copy()  # the first object's left part only, the second whole: precision 1, recall falls
  half[:, 4:] = 0
  got = overlap.coco_overlap_metrics(gt, [dict(results[0], segmentation=coco_masks.rle(half)), results[1]])
  assert got["overlap_precision"] == 1.0
  assert got["overlap_recall"] == pytest.approx((half.sum() + masks[1].sum()) / (masks[0].sum() + masks[1].sum()))
