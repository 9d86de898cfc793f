"""The CVPPP leaf segmentation challenge's metrics (Scharr et al. 2016, "Leaf segmentation in plant phenotyping:
a collation study", Sec. 3.2), with the semantics of the challenge's evaluation program (the LSC kit's BestDice,
DiffFGLabels; `evaluate.py` on CodaLab):

- label images hold one integer per pixel; the lowest value of an image is its background and the labels from it + 1
  to its maximum are its objects (a value in that range that no pixel has is an object of size 0);
- BestDice(La, Lb) = 1/M sum_{i in La's objects} max_{j in Lb's objects} Dice(i, j), 0 when La has no object;
- SBD = min(BestDice(prediction, truth), BestDice(truth, prediction));
- DiC = (max - min of the prediction) - (max - min of the truth); |DiC| its absolute value.

Dice comes from one contingency table (np.bincount) instead of the kit's loop over label pairs.
"""
import numpy as np


def _objects(labels):
  """Labels shifted so that background is 0 and objects are 1..M; M."""
  labels = np.asarray(labels).astype(np.int64)
  low = labels.min()
  return labels - low, int(labels.max() - low)


def best_dice(in_labels, gt_labels) -> float:
  """BestDice of the LSC kit: each object of `in_labels` scored by its best Dice against any of `gt_labels`."""
  if np.shape(in_labels) != np.shape(gt_labels):
    raise ValueError(f"label images differ in size: {np.shape(in_labels)} vs {np.shape(gt_labels)}")
  a, m = _objects(in_labels)
  b, n = _objects(gt_labels)
  if m == 0:
    return 0.0
  table = np.bincount((a * (n + 1) + b).ravel(), minlength=(m + 1) * (n + 1)).reshape(m + 1, n + 1)
  size_a, size_b = table.sum(1), table.sum(0)
  denominator = size_a[1:, None] + size_b[None, 1:]
  dice = np.where(denominator > 0, 2 * table[1:, 1:] / np.maximum(denominator, 1), 0.0)
  best = dice.max(1) if n > 0 else np.zeros(m)
  return float(best.sum() / m)


def symmetric_best_dice(prediction, truth) -> float:
  """SBD: the smaller of the two directions' BestDice."""
  return min(best_dice(prediction, truth), best_dice(truth, prediction))


def difference_in_count(prediction, truth) -> int:
  """DiC (DiffFGLabels): the prediction's number of object labels minus the truth's."""
  if np.shape(prediction) != np.shape(truth):
    raise ValueError(f"label images differ in size: {np.shape(prediction)} vs {np.shape(truth)}")
  return _objects(prediction)[1] - _objects(truth)[1]


def label_image(masks, scores, valid, threshold=0.5):
  """A label image [H, W] (0 background, objects 1..n) from instance masks [K, H, W] (probabilities), painted in
  increasing score order so that the best-scoring instance wins where masks overlap; objects numbered by score."""
  masks, scores, valid = np.asarray(masks), np.asarray(scores), np.asarray(valid, bool)
  order = [k for k in np.argsort(-scores, kind="stable") if valid[k] and (masks[k] > threshold).any()]
  labels = np.zeros(masks.shape[1:], np.int32)
  for rank, k in reversed(list(enumerate(order))):
    labels[masks[k] > threshold] = rank + 1
  present = np.unique(labels[labels > 0])  # an instance covered by better ones leaves no gap in the numbering
  return np.searchsorted(np.concatenate([[0], present]), labels).astype(np.int32)


def leaf_metrics(pairs) -> dict:
  """{"SBD", "abs_DiC", "DiC", "FBD"} averaged over (prediction, truth) label-image pairs; FBD is the kit's
  foreground/background Dice (FGBGDice)."""
  sbd, dic, fbd = [], [], []
  for prediction, truth in pairs:
    sbd.append(symmetric_best_dice(prediction, truth))
    dic.append(difference_in_count(prediction, truth))
    p, t = _objects(prediction)[0] > 0, _objects(truth)[0] > 0
    total = p.sum() + t.sum()
    fbd.append(2 * (p & t).sum() / total if total else 0.0)
  if not sbd:
    return {}
  return {"SBD": float(np.mean(sbd)), "abs_DiC": float(np.mean(np.abs(dic))), "DiC": float(np.mean(dic)),
          "FBD": float(np.mean(fbd))}


def coco_leaf_metrics(coco_gt, segm_results) -> dict:
  """`leaf_metrics` over every image of a pycocotools COCO ground truth: its non-crowd annotations painted as objects
  1..n, against the label image of the COCO segm results (RLE masks at the image's size) painted by `label_image`;
  an image without results is all background, as the challenge's program scores a missing answer."""
  from pycocotools import mask as mask_util  # pylint: disable=g-import-not-at-top
  by_image = {}
  for r in segm_results:
    by_image.setdefault(int(r["image_id"]), []).append(r)
  pairs = []
  for image_id, image in sorted(coco_gt.imgs.items()):
    truth = np.zeros((image["height"], image["width"]), np.int32)
    anns = [a for a in coco_gt.imgToAnns.get(image_id, []) if not a.get("iscrowd", 0)]
    for k, a in enumerate(sorted(anns, key=lambda a: a["id"])):
      truth[coco_gt.annToMask(a) > 0] = k + 1
    found = by_image.get(image_id, [])
    if found:
      masks = mask_util.decode([r["segmentation"] for r in found]).transpose(2, 0, 1).astype(np.float32)
      scores = np.array([r["score"] for r in found])
      prediction = label_image(masks, scores, np.ones(len(found), bool))
    else:
      prediction = np.zeros_like(truth)
    pairs.append((prediction, truth))
  return leaf_metrics(pairs)
