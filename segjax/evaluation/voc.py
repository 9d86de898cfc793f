"""PASCAL VOC detection AP (the devkit's VOCevaldet.m / VOCap.m rules) and its evaluator over eval batches.

Per class, detections of all images are sorted by descending score (stable); each is matched to the
ground-truth box of its image with the largest IoU: IoU >= 0.5 with a non-difficult box not yet taken is a
true positive, with a difficult box it is ignored (neither TP nor FP), otherwise (below 0.5, or the box was
taken) a false positive. Recall counts only non-difficult objects. AP is VOC2007's 11-point interpolation
(mean over recall thresholds 0, 0.1, ..., 1 of the best precision at recall >= t) or VOC2010+'s all-point
area under the monotone precision envelope. A class without non-difficult objects has AP 0 (recall is
undefined; the devkit divides by zero there).

Boxes are (x1, y1, x2, y2) pixel edges, so IoU has no "+1": the VOC readers turn the XML's 1-based inclusive
pixel indices into edges (x1 = xmin - 1, x2 = xmax), which gives exactly the devkit's "+1" IoU.
"""
import dataclasses
import os
import pickle

import jax
import numpy as np
from jax.experimental import multihost_utils


def iou_matrix(boxes1, boxes2) -> np.ndarray:
  """IoU float64 [N, M] of (x1, y1, x2, y2) edge boxes."""
  a = np.asarray(boxes1, np.float64).reshape(-1, 4)
  b = np.asarray(boxes2, np.float64).reshape(-1, 4)
  iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
  ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
  inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
  area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
  area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
  union = area_a[:, None] + area_b[None, :] - inter
  return np.divide(inter, union, out=np.zeros_like(inter), where=inter > 0)


def average_precision(recall, precision, use_07_metric: bool) -> float:
  """VOC2007 11-point (use_07_metric) or VOC2010+ all-point AP of a precision/recall curve (VOCap.m)."""
  recall = np.asarray(recall, np.float64)
  precision = np.asarray(precision, np.float64)
  if use_07_metric:
    return float(sum(precision[recall >= t].max() if (recall >= t).any() else 0.0
                     for t in np.linspace(0.0, 1.0, 11)) / 11)
  mrec = np.concatenate([[0.0], recall, [1.0]])
  mpre = np.concatenate([[0.0], precision, [0.0]])
  mpre = np.maximum.accumulate(mpre[::-1])[::-1]
  steps = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
  return float(np.sum((mrec[steps] - mrec[steps - 1]) * mpre[steps]))


@dataclasses.dataclass
class ImageDetections:
  """One image's detections and ground truth (numpy, edge boxes in the same pixel frame)."""
  boxes: np.ndarray  # float [D, 4]
  scores: np.ndarray  # float [D]
  labels: np.ndarray  # int [D], 1..C
  gt_boxes: np.ndarray  # float [G, 4]
  gt_labels: np.ndarray  # int [G], 1..C
  gt_difficult: np.ndarray  # bool [G]
  # Overlaps [D, G] of every detection with every ground-truth object, where they are not the boxes' IoU (the mask
  # IoU of region AP, segjax.evaluation.voc_regions); None: iou_matrix(boxes, gt_boxes).
  ious: np.ndarray | None = None


def class_pr(images: list[ImageDetections], label: int, iou_threshold=0.5):
  """(recall, precision) float64 [D] of class `label` over `images`, the devkit's matching."""
  scores, image_index, det_index = [], [], []
  npos = 0
  for i, image in enumerate(images):
    gt = image.gt_labels == label
    npos += int(np.sum(gt & ~image.gt_difficult))
    det = np.flatnonzero(image.labels == label)
    scores.append(image.scores[det])
    det_index.append(det)
    image_index.append(np.full(len(det), i))
  scores = np.concatenate(scores) if scores else np.zeros(0)
  order = np.argsort(-scores, kind="stable")
  image_index = np.concatenate(image_index)[order] if len(order) else np.zeros(0, int)
  det_index = np.concatenate(det_index)[order] if len(order) else np.zeros(0, int)
  taken = {i: np.zeros(int(np.sum(im.gt_labels == label)), bool) for i, im in enumerate(images)}
  tp = np.zeros(len(order))
  fp = np.zeros(len(order))
  for d, (i, k) in enumerate(zip(image_index, det_index)):
    image = images[i]
    gt = image.gt_labels == label
    if image.ious is None:
      overlaps = iou_matrix(image.boxes[k][None], image.gt_boxes[gt])[0]
    else:
      overlaps = np.asarray(image.ious, np.float64)[k, gt]
    if overlaps.size and overlaps.max() >= iou_threshold:
      j = int(np.argmax(overlaps))
      if image.gt_difficult[gt][j]:
        continue  # neither TP nor FP
      if not taken[i][j]:
        tp[d] = 1
        taken[i][j] = True
      else:
        fp[d] = 1  # a duplicate detection
    else:
      fp[d] = 1
  tp, fp = np.cumsum(tp), np.cumsum(fp)
  recall = tp / npos if npos else np.zeros_like(tp)
  precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
  return recall, precision, npos


def voc_ap(images: list[ImageDetections], num_classes: int, iou_threshold=0.5) -> dict[str, np.ndarray]:
  """{"voc07": AP float64 [C] (11-point), "voc": AP [C] (all-point)} of classes 1..C."""
  aps = {"voc07": np.zeros(num_classes), "voc": np.zeros(num_classes)}
  for c in range(num_classes):
    recall, precision, npos = class_pr(images, c + 1, iou_threshold)
    if npos:
      aps["voc07"][c] = average_precision(recall, precision, use_07_metric=True)
      aps["voc"][c] = average_precision(recall, precision, use_07_metric=False)
  return aps


def voc_metrics(images, class_names, iou_threshold=0.5) -> dict[str, float]:
  """`voc07_mAP`, `voc_mAP` (fractions) and per-class `voc07_AP/NAME`, `voc_AP/NAME`."""
  aps = voc_ap(images, len(class_names), iou_threshold)
  metrics = {"voc07_mAP": float(aps["voc07"].mean()), "voc_mAP": float(aps["voc"].mean())}
  for kind in ("voc07", "voc"):
    metrics.update({f"{kind}_AP/{name}": float(ap) for name, ap in zip(class_names, aps[kind])})
  return metrics


class VOCEvaluator:
  """VOC mAP of a detection model over an eval split, from its padded eval batches.

  Detections and ground truth are both mapped back to the source image (boxes / `scale`, the eval pipeline's
  resize factor). Ground truth comes from the batch, so `config.dataset.max_instances` must hold every object
  of an eval image (the pipeline logs any it drops). With several processes, each writes its images to the
  workdir and process 0 scores them all.
  """
  PREDICTION_KEYS = ("boxes", "scores", "labels", "valid")

  def __init__(self, info, workdir: str | None = None):
    self.class_names = info.thing_class_names
    self.workdir = workdir
    self.reset()

  def reset(self):
    self.images = []

  def device_stats(self, predictions, batch):
    del predictions, batch
    return ()

  def update(self, stats, local_predictions, local_batch):
    del stats
    rows = local_predictions
    for i in np.flatnonzero(local_batch["valid_image"]):
      keep, gt = rows["valid"][i], local_batch["instance_valid"][i]
      scale = float(local_batch["scale"][i])
      self.images.append(ImageDetections(
          boxes=np.asarray(rows["boxes"][i][keep], np.float64) / scale, scores=np.asarray(rows["scores"][i][keep]),
          labels=np.asarray(rows["labels"][i][keep]),
          gt_boxes=np.asarray(local_batch["boxes"][i][gt], np.float64) / scale,
          gt_labels=np.asarray(local_batch["classes"][i][gt]),
          gt_difficult=np.asarray(local_batch["difficult"][i][gt], bool)))

  def _gathered(self):
    """All processes' images on process 0 (None elsewhere)."""
    if jax.process_count() == 1:
      return self.images
    folder = os.path.join(self.workdir, "eval_voc_parts")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"process{jax.process_index()}.pkl"), "wb") as f:
      pickle.dump(self.images, f)
    multihost_utils.sync_global_devices("segjax: voc eval parts written")
    merged = None
    if jax.process_index() == 0:
      merged = []
      for p in range(jax.process_count()):
        with open(os.path.join(folder, f"process{p}.pkl"), "rb") as f:
          merged += pickle.load(f)
    multihost_utils.sync_global_devices("segjax: voc eval parts read")
    return merged

  def result(self):
    """VOC metrics on process 0 ({} elsewhere)."""
    images = self._gathered()
    return {} if images is None else voc_metrics(images, self.class_names)
