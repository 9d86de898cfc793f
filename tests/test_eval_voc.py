"""VOC detection AP against an independent implementation of the devkit's rules.

Reference: the PyPI package mean-average-precision==2024.1.5.0 (github.com/bes-dev/mean_average_precision,
mean_average_precision/utils.py and mean_average_precision_2d.py): greedy matching to the best-IoU box,
difficult boxes ignored, 11-point and all-point AP. Two of its conventions are adapted in the test: its IoU
uses the devkit's inclusive pixel indices ("+1"), so it is given (x1 + 1, y1 + 1, x2, y2) of our edge boxes;
it counts difficult objects among the positives (`class_counter`) where the devkit (VOCevaldet.m,
npos = npos + sum(~gt(i).diff)) does not, so those counts are taken out before it computes AP; and its
`compute_match_table` lays out the per-ground-truth `difficult` flags wrongly when an image has several
detections of a class (`_tile` repeats each flag in place of the whole row), so the test builds the match
table one detection at a time, where that layout is right.
"""
import numpy as np
import pytest

from segjax.evaluation import voc


def _random_images(rng, num_images, num_classes):
  images = []
  for _ in range(num_images):
    g = rng.integers(0, 6)
    gt_xy = rng.uniform(0, 80, (g, 2))
    gt = np.concatenate([gt_xy, gt_xy + rng.uniform(5, 40, (g, 2))], 1)
    gt_labels = rng.integers(1, num_classes + 1, g)
    d = rng.integers(0, 10)
    # Detections: jittered copies of ground-truth boxes with their class (hits and duplicates), random boxes.
    source = rng.integers(0, max(g, 1), d)
    near = rng.uniform(size=d) < (0.7 if g else 0.0)
    far_xy = rng.uniform(0, 80, (d, 2))
    boxes = np.concatenate([far_xy, far_xy + rng.uniform(5, 40, (d, 2))], 1)
    labels = rng.integers(1, num_classes + 1, d)
    if g:
      boxes = np.where(near[:, None], gt[source] + rng.normal(0, 2, (d, 4)), boxes)
      labels = np.where(near, gt_labels[source], labels)
    boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
    images.append(voc.ImageDetections(
        boxes=boxes, scores=rng.uniform(size=d) + 0.5 * near, labels=labels, gt_boxes=gt, gt_labels=gt_labels,
        gt_difficult=rng.uniform(size=g) < 0.2))
  return images


def _reference_ap(images, num_classes, use_07_metric):
  import pandas as pd  # pylint: disable=g-import-not-at-top
  from mean_average_precision import mean_average_precision_2d, utils  # pylint: disable=g-import-not-at-top
  metric = mean_average_precision_2d.MeanAveragePrecision2d(num_classes)
  difficult_counts = np.zeros((len(images), num_classes), np.int32)
  for i, image in enumerate(images):
    preds = np.concatenate([image.boxes + [1, 1, 0, 0], image.labels[:, None] - 1, image.scores[:, None]], 1)
    gt = np.concatenate([image.gt_boxes + [1, 1, 0, 0], image.gt_labels[:, None] - 1,
                         image.gt_difficult[:, None], np.zeros((len(image.gt_boxes), 1))], 1)
    preds, gt = preds.reshape(-1, 6), gt.reshape(-1, 7)
    metric.add(preds[:0], gt)  # counts the image's objects per class
    for c in range(num_classes):
      for pred in preds[preds[:, 4] == c]:
        table = utils.compute_match_table(pred[None], gt[gt[:, 4] == c], metric.imgs_counter - 1)
        metric.match_table[c] = pd.concat([metric.match_table[c], table], axis=0, join="outer")
    np.add.at(difficult_counts[i], image.gt_labels[image.gt_difficult] - 1, 1)
  metric.class_counter = metric.class_counter - difficult_counts
  thresholds = np.arange(0.0, 1.1, 0.1) if use_07_metric else None
  value = metric.value(iou_thresholds=0.5, recall_thresholds=thresholds)
  return np.array([value[0.5][c]["ap"] for c in range(num_classes)], np.float64), value


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_voc_ap_equals_mean_average_precision_package(seed):
  rng = np.random.default_rng(seed)
  num_classes = 4
  images = _random_images(rng, 30, num_classes)
  assert sum(im.gt_difficult.sum() for im in images) > 0
  ours = voc.voc_ap(images, num_classes)
  for kind, use_07 in (("voc07", True), ("voc", False)):
    _, value = _reference_ap(images, num_classes, use_07)
    # The package stores AP as float32; recompute from its float64 precision/recall with its own AP functions.
    from mean_average_precision import utils  # pylint: disable=g-import-not-at-top
    reference = np.array([
        utils.compute_average_precision_with_recall_thresholds(
            value[0.5][c]["precision"], value[0.5][c]["recall"], np.arange(0.0, 1.1, 0.1)) if use_07 else
        utils.compute_average_precision(value[0.5][c]["precision"], value[0.5][c]["recall"])
        for c in range(num_classes)])
    assert 0.1 < ours[kind].mean() < 0.95  # neither trivial nor perfect
    np.testing.assert_allclose(ours[kind], reference, rtol=0, atol=1e-9)


def test_difficult_detection_is_neither_true_nor_false_positive():
  gt = np.array([[0, 0, 10, 10], [50, 50, 60, 60]], np.float64)
  image = voc.ImageDetections(boxes=np.array([[50, 50, 60, 60], [0, 0, 10, 10]], np.float64),
                              scores=np.array([0.9, 0.8]), labels=np.array([1, 1]), gt_boxes=gt,
                              gt_labels=np.array([1, 1]), gt_difficult=np.array([False, True]))
  # The hit on the difficult box (first by score) is ignored: counted as an FP it would halve the precision at
  # the only recall step (AP 0.5), counted as a positive it would halve the recall.
  for kind in ("voc", "voc07"):
    assert voc.voc_ap([image], 1)[kind][0] == 1.0
  image.gt_difficult = np.array([False, False])
  assert voc.voc_ap([image], 1)["voc"][0] == 1.0
  image.scores = np.array([0.9, 0.8])
  image.boxes = np.array([[50, 50, 60, 60], [100, 100, 110, 110]], np.float64)  # the second one misses
  image.gt_difficult = np.array([False, True])
  assert voc.voc_ap([image], 1)["voc"][0] == 0.0  # the ignored hit does not make up for the miss


def test_voc_metrics_names():
  image = voc.ImageDetections(boxes=np.array([[0, 0, 10, 10]], np.float64), scores=np.array([1.0]),
                              labels=np.array([2]), gt_boxes=np.array([[0, 0, 10, 10.0], [0, 0, 5, 5.0]]),
                              gt_labels=np.array([2, 1]), gt_difficult=np.array([False, False]))
  metrics = voc.voc_metrics([image], ("cat", "dog"))
  assert metrics["voc_AP/dog"] == 1.0 and metrics["voc_AP/cat"] == 0.0
  assert metrics["voc_mAP"] == 0.5 and metrics["voc07_mAP"] == 0.5
