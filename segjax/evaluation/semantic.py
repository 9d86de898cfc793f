"""Semantic segmentation metrics from one confusion matrix over the whole split (FCN/VOC protocol).

Long et al. 2015, Sec. 5: with n_ij the number of pixels of class i predicted as j and t_i = sum_j n_ij,
  pixel accuracy  sum_i n_ii / sum_i t_i
  mean accuracy   (1/L) sum_i n_ii / t_i
  mean IoU        (1/L) sum_i n_ii / (t_i + sum_j n_ji - n_ii)
  fw IoU          (sum_k t_k)^-1 sum_i t_i n_ii / (t_i + sum_j n_ji - n_ii)
Classes absent from both ground truth and prediction (zero union) are left out of the means, as the VOC
devkit and mmseg do.
"""
import jax.numpy as jnp
import numpy as np

from segjax.constants import IGNORE_LABEL


def confusion_matrix(labels, predictions, num_classes, ignore_label=IGNORE_LABEL, valid=None):
  """Counts [L, L] (rows ground truth, columns prediction) of the pixels whose label is not ignored.

  Args:
    labels: int [...] ground-truth class ids; `ignore_label` (and any id outside [0, L)) is skipped.
    predictions: int [...] predicted class ids, same shape.
    num_classes: L.
    ignore_label: label value that is not counted.
    valid: optional bool broadcastable to labels' shape (e.g. [B, 1, 1] for padded images).
  Returns:
    int32 [L, L]; jittable, static shapes.
  """
  if labels.shape != predictions.shape:
    raise ValueError(f"labels {labels.shape} and predictions {predictions.shape} differ in shape")
  keep = (labels != ignore_label) & (labels >= 0) & (labels < num_classes)
  if valid is not None:
    keep = keep & valid
  index = jnp.where(keep, labels * num_classes + predictions, num_classes * num_classes)
  counts = jnp.bincount(index.reshape(-1), length=num_classes * num_classes + 1)
  return counts[:-1].reshape(num_classes, num_classes).astype(jnp.int32)


def semantic_metrics(confusion):
  """mIoU, pixel_acc, mean_acc, fwIoU (fractions) and per-class IoU from an [L, L] confusion matrix."""
  n = np.asarray(confusion, dtype=np.float64)
  true_positive = np.diag(n)
  gt_total = n.sum(axis=1)
  union = gt_total + n.sum(axis=0) - true_positive
  present = union > 0
  iou = np.divide(true_positive, union, out=np.full_like(true_positive, np.nan), where=present)
  accuracy = np.divide(true_positive, gt_total, out=np.full_like(true_positive, np.nan), where=gt_total > 0)
  total = gt_total.sum()
  return {
      "mIoU": float(np.nanmean(iou)) if present.any() else 0.0,
      "pixel_acc": float(true_positive.sum() / total) if total else 0.0,
      "mean_acc": float(np.nanmean(accuracy)) if (gt_total > 0).any() else 0.0,
      "fwIoU": float(np.nansum(gt_total * iou) / total) if total else 0.0,
      "per_class_IoU": iou.tolist(),
  }


class SemanticEvaluator:
  """Accumulates one confusion matrix over a split from padded, possibly sharded eval batches."""
  PREDICTION_KEYS = ()  # everything it needs is reduced on device

  def __init__(self, num_classes: int, ignore_label: int = IGNORE_LABEL):
    self.num_classes = num_classes
    self.ignore_label = ignore_label
    self.reset()

  def reset(self):
    self.confusion = np.zeros((self.num_classes, self.num_classes), np.int64)

  def device_stats(self, predictions, batch):
    """Runs inside the jitted eval step: the batch's confusion matrix over valid images."""
    return confusion_matrix(batch["semantic"], predictions["labels"], self.num_classes, self.ignore_label,
                            valid=batch["valid_image"][:, None, None])

  def update(self, stats, local_predictions=None, local_batch=None):
    del local_predictions, local_batch
    self.confusion += np.asarray(stats, np.int64)

  def result(self):
    metrics = semantic_metrics(self.confusion)
    metrics.pop("per_class_IoU")
    return metrics
