"""Cityscapes instance-level semantic labelling AP (Cordts et al. 2016), as the benchmark's official evaluation.

A NumPy port of cityscapesScripts 2.3.0 (PyPI `cityscapesscripts`, repository mcordts/cityscapesScripts),
cityscapesscripts/evaluation/evalInstanceLevelSemanticLabeling.py: `assignGt2Preds`, `evaluateMatches` and
`computeAverages`, without the distance-based variants (the benchmark's AP and AP50% use the first region size).

Per image: the ground-truth instances are the instanceIds values of the 8 evaluated classes (values >= 1000 are
instances, a plain label id is a group region); void pixels are those whose value is a label id with ignoreInEval.
Each prediction (binary mask, label id, confidence) with a non-empty mask is intersected with every ground-truth
value of its class. For each class and overlap t in 0.5:0.05:0.95:
  - a ground-truth instance (id >= 1000, at least `min_region_size` = 100 pixels) is a true positive with the
    confidence of a prediction of IoU > t (a second such prediction is a false positive with the lower confidence)
    and a hard false negative otherwise;
  - a prediction with IoU > t against no ground truth of its class (groups and small instances included) is a false
    positive unless more than t of its pixels are void, group or small-instance pixels (then it is ignored);
  - AP is the step integral of the precision-recall curve over the unique confidences with an artificial point
    (recall 0, precision 1); NaN where the class has no ground-truth instance, 0 where it has some but no prediction.
AP is the mean over classes (NaN skipped) and overlaps; AP50 the mean over classes at t = 0.5; per class the mean over
the overlaps. All are fractions in [0, 1] (the official script prints them so as well).
"""
import numpy as np

from segjax.data import cityscapes
from segjax.data.cityscapes_instances import THING_CLASSES

OVERLAPS = np.arange(0.5, 1.0, 0.05)
MIN_REGION_SIZE = 100
VOID_IDS = tuple(label_id for _, label_id, train_id in cityscapes.LABELS
                 if train_id == 255 or train_id == -1)  # ignoreInEval in labels.py
CLASS_IDS = tuple(label_id for _, label_id in THING_CLASSES)


def match_image(instance_ids, predictions):
  """The matching record of one image.

  Args:
    instance_ids: int [H, W], the gtFine instanceIds image.
    predictions: iterable of (mask bool [H, W], label id, confidence).

  Returns:
    {"gt": {label id: [(instance id, pixel count)]}, "pred": {label id: [(pixel count, void pixels, confidence,
    [(instance id, gt pixel count, intersection)])]}} over the 8 classes.
  """
  ids = np.asarray(instance_ids).astype(np.int64)
  values, counts = np.unique(ids, return_counts=True)
  label_of = np.where(values >= 1000, values // 1000, values)
  gt = {c: [(int(v), int(n)) for v, n, l in zip(values, counts, label_of) if l == c] for c in CLASS_IDS}
  void = np.isin(ids, VOID_IDS)
  pred = {c: [] for c in CLASS_IDS}
  for mask, label_id, confidence in predictions:
    label_id = int(label_id)
    if label_id not in pred:
      continue
    mask = np.asarray(mask).astype(bool)
    count = int(mask.sum())
    if not count:
      continue
    under, inter = np.unique(ids[mask], return_counts=True)
    size = dict(gt[label_id])
    matched = [(int(v), size[int(v)], int(n)) for v, n in zip(under, inter) if int(v) in size]
    pred[label_id].append((count, int(np.count_nonzero(void & mask)), float(confidence), matched))
  return {"gt": gt, "pred": pred}


def _average_precision(y_true, y_score, hard_fns):
  """evaluateMatches' precision-recall integration."""
  order = np.argsort(y_score, kind="quicksort")
  y_score, y_true = y_score[order], y_true[order]
  cumsum = np.cumsum(y_true)
  _, unique = np.unique(y_score, return_index=True)
  n, n_true = len(y_score), cumsum[-1]
  precision, recall = np.zeros(len(unique) + 1), np.zeros(len(unique) + 1)
  cumsum = np.append(cumsum, 0)
  for k, i in enumerate(unique):
    below = cumsum[i - 1]
    tp = n_true - below
    fp = n - i - tp
    fn = below + hard_fns
    precision[k] = tp / (tp + fp)
    recall[k] = tp / (tp + fn)
  precision[-1], recall[-1] = 1.0, 0.0
  padded = np.concatenate([recall[:1], recall, [0.0]])
  return float(np.dot(precision, np.convolve(padded, [-0.5, 0, 0.5], "valid")))


def average_precisions(matches, overlaps=OVERLAPS, min_region_size=MIN_REGION_SIZE):
  """AP [classes, overlaps] (NaN: no ground truth of the class) over the images' `match_image` records."""
  ap = np.zeros((len(CLASS_IDS), len(overlaps)))
  for o, threshold in enumerate(overlaps):
    for c, label_id in enumerate(CLASS_IDS):
      y_true, y_score, hard_fns, have_gt, have_pred = [], [], 0, False, False
      for record in matches:
        sizes = dict(record["gt"][label_id])
        kept = [v for v, n in record["gt"][label_id] if v >= 1000 and n >= min_region_size]
        preds = record["pred"][label_id]
        have_gt |= bool(kept)
        have_pred |= bool(preds)
        true, score, matched = [1.0] * len(kept), [-np.inf] * len(kept), [False] * len(kept)
        for g, gid in enumerate(kept):
          found = False
          for count, _, confidence, overlapping in preds:
            for v, _, inter in overlapping:
              if v != gid or not inter / (sizes[gid] + count - inter) > threshold:
                continue
              if matched[g]:
                score[g], low = max(score[g], confidence), min(score[g], confidence)
                true.append(0.0)
                score.append(low)
                matched.append(True)
              else:
                found, matched[g], score[g] = True, True, confidence
          hard_fns += not found
        true = [t for t, m in zip(true, matched) if m]
        score = [s for s, m in zip(score, matched) if m]
        for count, void, confidence, overlapping in preds:
          if any(inter / (n + count - inter) > threshold for _, n, inter in overlapping):
            continue
          ignored = void + sum(inter for v, _, inter in overlapping if v < 1000)
          ignored += sum(inter for _, n, inter in overlapping if n < min_region_size)
          if ignored / count <= threshold:
            true.append(0.0)
            score.append(confidence)
        y_true += true
        y_score += score
      if have_gt and have_pred and y_true:
        ap[c, o] = _average_precision(np.asarray(y_true), np.asarray(y_score), hard_fns)
      elif have_gt:
        ap[c, o] = 0.0  # the official script fails on predictions that are all ignored; nothing was found
      else:
        ap[c, o] = np.nan
  return ap


def summarize(ap, overlaps=OVERLAPS) -> dict:
  """computeAverages: {"AP", "AP50", "AP_<class>", "AP50_<class>"} (fractions; NaN where a class has no ground
  truth; the means skip those)."""
  o50 = np.flatnonzero(np.isclose(overlaps, 0.5))
  out = {"AP": float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan"),
         "AP50": float(np.nanmean(ap[:, o50])) if np.isfinite(ap[:, o50]).any() else float("nan")}
  for c, (name, _) in enumerate(THING_CLASSES):
    out[f"AP_{name}"] = float(np.mean(ap[c]))
    out[f"AP50_{name}"] = float(np.mean(ap[c, o50]))
  return out


def evaluate(images, overlaps=OVERLAPS, min_region_size=MIN_REGION_SIZE) -> dict:
  """`summarize` of the AP over (instance_ids, predictions) pairs, one per image (see `match_image`)."""
  matches = [match_image(ids, predictions) for ids, predictions in images]
  return summarize(average_precisions(matches, overlaps, min_region_size), overlaps)


def coco_results_metrics(ground_truth, segm_results) -> dict:
  """{"cityscapes_AP", "cityscapes_AP50", "cityscapes_AP_<class>", ...} of COCO "segm" results (RLE masks at the
  source size, category ids = Cityscapes label ids) against the instanceIds PNG named by each ground-truth image's
  `instance_ids_file` (segjax.data.cityscapes_instances.to_coco)."""
  from pycocotools import mask as mask_utils  # pylint: disable=g-import-not-at-top
  from segjax.data.cityscapes_instances import read_instance_ids  # pylint: disable=g-import-not-at-top
  per_image = {}
  for r in segm_results:
    per_image.setdefault(int(r["image_id"]), []).append(r)
  images = []
  for image_id, record in sorted(ground_truth.imgs.items()):
    if "instance_ids_file" not in record:
      raise ValueError(f"ground-truth image {image_id} has no 'instance_ids_file' (write the split with "
                       "segjax.data.cityscapes_instances.to_coco)")
    predictions = [(mask_utils.decode(r["segmentation"]).astype(bool), r["category_id"], r["score"])
                   for r in per_image.get(image_id, [])]
    images.append((read_instance_ids(record["instance_ids_file"]), predictions))
  return {f"cityscapes_{k}": v for k, v in evaluate(images).items()}
