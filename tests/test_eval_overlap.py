"""The unseen-object overlap P / R / F-measure (segjax.evaluation.overlap) against a float64 NumPy port of the
authors' definition, and through pycocotools ground truth with crowds."""
import itertools

import numpy as np
import pytest

from segjax.evaluation import overlap


def _reference(prediction, gt, threshold=0.75):
  """The overlap part of `multilabel_metrics` in github.com/NVlabs/UnseenObjectClustering, lib/utils/evaluation.py
  (commit f5a00c78f61eff70a2477ab77475c12ef821d739), pixel counts in loops over label pairs as there; its munkres
  assignment on F.max() - F replaced by an exhaustive search of the one-to-one matchings for the largest summed F
  (the same optimum), ties broken towards the larger matched overlap."""
  labels_gt = [l for l in np.unique(gt) if l != 0]
  labels_pred = [l for l in np.unique(prediction) if l != 0]
  if not labels_pred and labels_gt:
    return {"precision": 1.0, "recall": 0.0, "F": 0.0, "detected_075": 0.0}
  if labels_pred and not labels_gt:
    return {"precision": 0.0, "recall": 1.0, "F": 0.0, "detected_075": 0.0}
  if not labels_pred and not labels_gt:
    return {"precision": 1.0, "recall": 1.0, "F": 1.0, "detected_075": 1.0}
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
  for pairs in matchings:
    key = (round(sum(f[p] for p in pairs), 12), sum(tp[p] for p in pairs))
    if best is None or key > best[0]:
      best = (key, pairs)
  pairs = best[1]
  precision = sum(tp[p] for p in pairs) / np.count_nonzero(prediction.clip(0, 1) == 1)
  recall = sum(tp[p] for p in pairs) / np.count_nonzero(gt.clip(0, 1) == 1)
  f_measure = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
  return {"precision": precision, "recall": recall, "F": f_measure,
          "detected_075": sum(f[p] > threshold for p in pairs) / n}


def _random_labels(rng, shape, count):
  """A label image of `count` random rectangles (later ones on top), ids drawn from 1..9 with gaps."""
  labels = np.zeros(shape, np.int32)
  for i in rng.choice(np.arange(1, 10), count, replace=False):
    y, x = rng.integers(0, shape[0] - 2), rng.integers(0, shape[1] - 2)
    labels[y:y + rng.integers(2, 9), x:x + rng.integers(2, 9)] = i
  return labels


@pytest.mark.parametrize("seed", range(12))
def test_matches_the_reference(seed):
  rng = np.random.default_rng(seed)
  truth = _random_labels(rng, (16, 20), int(rng.integers(0, 5)))
  if seed % 3 == 0:  # predictions that overlap the truth: shifted, with objects split or merged
    prediction = np.roll(truth, (int(rng.integers(-2, 3)), int(rng.integers(-2, 3))), (0, 1))
    prediction[:, 10:] = np.where(prediction[:, 10:] > 0, prediction[:, 10:] + 10, 0)
  else:
    prediction = _random_labels(rng, (16, 20), int(rng.integers(0, 5)))
  got, want = overlap.image_overlap_metrics(prediction, truth), _reference(prediction, truth)
  for key in want:
    assert got[key] == pytest.approx(want[key], abs=1e-12), key


def test_perfect_and_edge_cases():
  truth = _random_labels(np.random.default_rng(0), (16, 20), 3)
  relabelled = np.where(truth > 0, 50 - truth, 0)  # the same objects under other ids
  assert overlap.image_overlap_metrics(relabelled, truth) == {"precision": 1.0, "recall": 1.0, "F": 1.0,
                                                              "detected_075": 1.0}
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
  from pycocotools import coco as pycoco  # pylint: disable=g-import-not-at-top
  from pycocotools import mask as mask_util  # pylint: disable=g-import-not-at-top
  masks = np.zeros((3, 12, 16), np.uint8)
  masks[0, 1:5, 1:6] = 1
  masks[1, 6:11, 8:15] = 1
  masks[2, 1:4, 10:15] = 1  # the crowd
  rles = [mask_util.encode(np.asfortranarray(m)) for m in masks]
  for r in rles:
    r["counts"] = r["counts"].decode("ascii")
  gt = pycoco.COCO()
  gt.dataset = {"images": [{"id": 1, "height": 12, "width": 16}], "categories": [{"id": 1, "name": "o"}],
                "annotations": [{"id": k + 1, "image_id": 1, "category_id": 1, "segmentation": rles[k],
                                 "area": float(masks[k].sum()), "bbox": [0, 0, 1, 1], "iscrowd": int(k == 2)}
                                for k in range(3)]}
  gt.createIndex()
  results = [{"image_id": 1, "category_id": 1, "segmentation": rles[k], "score": 0.9 - 0.1 * k} for k in range(3)]
  assert overlap.coco_overlap_metrics(gt, results) == {"overlap_precision": 1.0, "overlap_recall": 1.0,
                                                       "overlap_F": 1.0, "objects_detected_075": 1.0}
  half = masks[0].copy()  # the first object's left part only, the second whole: precision 1, recall falls
  half[:, 4:] = 0
  rle = mask_util.encode(np.asfortranarray(half))
  rle["counts"] = rle["counts"].decode("ascii")
  got = overlap.coco_overlap_metrics(gt, [dict(results[0], segmentation=rle), results[1]])
  assert got["overlap_precision"] == 1.0
  assert got["overlap_recall"] == pytest.approx((half.sum() + masks[1].sum()) / (masks[0].sum() + masks[1].sum()))
