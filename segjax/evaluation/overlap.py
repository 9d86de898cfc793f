"""The overlap precision / recall / F-measure of unseen object instance segmentation (the OCID / OSD protocol of
Xie et al. 2019 and Xiang et al. 2020, "Learning RGB-D Feature Embeddings for Unseen Object Instance Segmentation";
the authors' `multilabel_metrics`, github.com/NVlabs/UnseenObjectClustering lib/utils/evaluation.py, commit
f5a00c78f61eff70a2477ab77475c12ef821d739), per image on label images (0 background, one integer per object):

- F_ij = 2 P_ij R_ij / (P_ij + R_ij) for ground-truth object i and predicted object j, with P_ij = |i & j| / |j| and
  R_ij = |i & j| / |i| (0 without overlap);
- predicted objects matched one-to-one to ground-truth ones by the Hungarian algorithm maximising the summed F
  (scipy.optimize.linear_sum_assignment; the authors run munkres on max F - F);
- precision = sum over the matched pairs of |i & j| / the predicted object pixels, recall = the same sum / the
  ground-truth object pixels, F = 2 P R / (P + R) (0 when both are 0);
- detected_075: the fraction of ground-truth objects whose match has F_ij > 0.75;
- an image with no predicted object scores P 1, R 0, F 0 (objects in the truth), with no ground-truth object P 0,
  R 1, F 0, with neither P = R = F = 1 (the authors' edge cases).

The boundary precision / recall / F of the same protocol (the authors' `boundary_overlap` and `seg2bmap`, adapted
there from the DAVIS 2017 f_boundary measure) use the same matching:

- an object's boundary map holds the pixels that differ from their east, south or south-east neighbour (the last row
  compared with its east neighbour only, the last column with its south one, the corner never): one pixel wide, offset
  half a pixel towards the origin;
- a matched pair's precision hits are the predicted object's boundary pixels within a disk of radius
  ceil(0.003 * image diagonal) of the ground-truth object's boundary (a binary dilation), its recall hits the other
  way round;
- boundary precision = the matched pairs' precision hits / all predicted objects' boundary pixels, boundary recall =
  their recall hits / all ground-truth objects' boundary pixels, boundary F = 2 P R / (P + R); the edge cases as
  above.

Metrics average over the images.
"""
import numpy as np
from scipy import ndimage
from scipy import optimize

from segjax.evaluation import leaf


BOUNDARY_TOLERANCE = 0.003  # the authors' bound_th: a fraction of the image diagonal


def boundary_map(mask):
  """The one-pixel boundary [H, W] bool of a binary mask (the authors' seg2bmap at the mask's own size)."""
  mask = np.asarray(mask, bool)
  east, south, south_east = (np.zeros_like(mask) for _ in range(3))
  east[:, :-1] = mask[:, 1:]
  south[:-1, :] = mask[1:, :]
  south_east[:-1, :-1] = mask[1:, 1:]
  boundary = (mask ^ east) | (mask ^ south) | (mask ^ south_east)
  boundary[-1, :] = mask[-1, :] ^ east[-1, :]
  boundary[:, -1] = mask[:, -1] ^ south[:, -1]
  boundary[-1, -1] = False
  return boundary


def _disk(radius):
  """skimage.morphology.disk(radius): the pixels within `radius` of the centre of a (2r + 1)^2 square."""
  y, x = np.mgrid[-radius:radius + 1, -radius:radius + 1]
  return x ** 2 + y ** 2 <= radius ** 2


def _boundary_hits(predicted, truth, radius):
  """(precision hits, recall hits) of one predicted and one ground-truth boundary map within `radius`."""
  disk = _disk(radius)
  near_truth = ndimage.binary_dilation(truth, disk)
  near_predicted = ndimage.binary_dilation(predicted, disk)
  return int(np.sum(predicted & near_truth)), int(np.sum(truth & near_predicted))


def _ratio(hits, pixels):
  """hits / pixels; 0 where no object has a boundary pixel (an object filling the image, or one pixel in its last
  corner), where the authors' division gives NaN."""
  return hits / pixels if pixels else 0.0


def image_overlap_metrics(prediction, truth) -> dict:
  """{"precision", "recall", "F", "detected_075", "boundary_precision", "boundary_recall", "boundary_F"} of one
  predicted label image against the ground-truth one."""
  prediction, truth = np.asarray(prediction), np.asarray(truth)
  if prediction.shape != truth.shape:
    raise ValueError(f"label images differ in size: {prediction.shape} vs {truth.shape}")
  pred_ids = np.unique(prediction[prediction != 0])
  gt_ids = np.unique(truth[truth != 0])
  if not len(pred_ids) or not len(gt_ids):
    none = not len(pred_ids) and not len(gt_ids)
    precision, recall = 1.0 if not len(pred_ids) else 0.0, 1.0 if not len(gt_ids) else 0.0
    return {"precision": precision, "recall": recall, "F": 1.0 if none else 0.0, "detected_075": 1.0 if none else 0.0,
            "boundary_precision": precision, "boundary_recall": recall, "boundary_F": 1.0 if none else 0.0}
  # Contingency table of (ground-truth object, predicted object) pixel counts; index 0 is the background.
  a = np.where(truth != 0, np.searchsorted(gt_ids, truth) + 1, 0)
  b = np.where(prediction != 0, np.searchsorted(pred_ids, prediction) + 1, 0)
  n, m = len(gt_ids), len(pred_ids)
  table = np.bincount((a * (m + 1) + b).ravel(), minlength=(n + 1) * (m + 1)).reshape(n + 1, m + 1)
  overlap = table[1:, 1:].astype(np.float64)
  gt_area, pred_area = table[1:].sum(1).astype(np.float64), table[:, 1:].sum(0).astype(np.float64)
  f = 2 * overlap / (gt_area[:, None] + pred_area[None, :])  # = 2 P R / (P + R), 0 without overlap
  rows, cols = optimize.linear_sum_assignment(f, maximize=True)
  matched = overlap[rows, cols].sum()
  precision, recall = matched / pred_area.sum(), matched / gt_area.sum()
  f_measure = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
  radius = int(np.ceil(BOUNDARY_TOLERANCE * np.linalg.norm(truth.shape)))
  gt_boundaries = [boundary_map(truth == i) for i in gt_ids]
  pred_boundaries = [boundary_map(prediction == j) for j in pred_ids]
  hits = np.array([_boundary_hits(pred_boundaries[j], gt_boundaries[i], radius) for i, j in zip(rows, cols)])
  boundary_precision = _ratio(hits[:, 0].sum(), sum(b.sum() for b in pred_boundaries))
  boundary_recall = _ratio(hits[:, 1].sum(), sum(b.sum() for b in gt_boundaries))
  boundary_sum = boundary_precision + boundary_recall
  boundary_f = 2 * boundary_precision * boundary_recall / boundary_sum if boundary_sum > 0 else 0.0
  return {"precision": float(precision), "recall": float(recall), "F": float(f_measure),
          "detected_075": float(np.sum(f[rows, cols] > 0.75) / n), "boundary_precision": float(boundary_precision),
          "boundary_recall": float(boundary_recall), "boundary_F": float(boundary_f)}


def overlap_metrics(pairs) -> dict:
  """{"overlap_precision", "overlap_recall", "overlap_F", "objects_detected_075", "boundary_precision",
  "boundary_recall", "boundary_F"} averaged over (prediction, truth) label-image pairs ({} without pairs)."""
  rows = [image_overlap_metrics(p, t) for p, t in pairs]
  if not rows:
    return {}
  names = {"precision": "overlap_precision", "recall": "overlap_recall", "F": "overlap_F",
           "detected_075": "objects_detected_075", "boundary_precision": "boundary_precision",
           "boundary_recall": "boundary_recall", "boundary_F": "boundary_F"}
  return {names[k]: float(np.mean([r[k] for r in rows])) for k in names}


def coco_overlap_metrics(coco_gt, segm_results) -> dict:
  """`overlap_metrics` over every image of a pycocotools COCO ground truth: its non-crowd annotations painted as
  objects 1..n (in annotation-id order, a later one over an earlier), against the label image of every segm result
  of the image (RLE masks at the image's size) painted by score (`leaf.label_image`: the best-scoring instance wins
  where masks overlap). Crowd pixels outside the objects count for neither side; an image without results is all
  background."""
  from pycocotools import mask as mask_util  # pylint: disable=g-import-not-at-top
  by_image = {}
  for r in segm_results:
    by_image.setdefault(int(r["image_id"]), []).append(r)
  pairs = []
  for image_id, image in sorted(coco_gt.imgs.items()):
    truth = np.zeros((image["height"], image["width"]), np.int32)
    ignore = np.zeros(truth.shape, bool)
    anns = sorted(coco_gt.imgToAnns.get(image_id, []), key=lambda a: a["id"])
    for a in anns:
      if a.get("iscrowd", 0):
        ignore |= coco_gt.annToMask(a) > 0
    for k, a in enumerate(a for a in anns if not a.get("iscrowd", 0)):
      truth[coco_gt.annToMask(a) > 0] = k + 1
    found = by_image.get(image_id, [])
    if found:
      masks = mask_util.decode([r["segmentation"] for r in found]).transpose(2, 0, 1).astype(np.float32)
      prediction = leaf.label_image(masks, np.array([r["score"] for r in found]), np.ones(len(found), bool))
    else:
      prediction = np.zeros_like(truth)
    prediction = np.where(ignore & (truth == 0), 0, prediction)
    pairs.append((prediction, truth))
  return overlap_metrics(pairs)
