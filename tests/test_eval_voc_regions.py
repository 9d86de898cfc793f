"""SDS's region AP (segjax.evaluation.voc_regions) against a float64 NumPy port of FCIS's evaluation
(github.com/msracver/FCIS, lib/dataset/pascal_voc_eval.py `voc_eval_sds` and `voc_ap`, commit
309f6c9a1669bf05a955b66519a807951e70197f): per class, detections by descending score, each matched to the ground-truth
mask of its image with the largest IoU (the first of equal ones), a true positive at IoU >= t if not yet detected,
VOC2007's 11-point AP. FCIS pastes each detection's mask into its box; here detections are whole-image masks, so its
mask_overlap is the plain mask IoU."""
import numpy as np
import pytest

from segjax.evaluation import voc_regions
import coco_masks

H, W = 24, 32


def _scene(rng, num_images=5, num_classes=3):
  """Ground truth (images of 1-4 random rectangles of random classes, crowds none) and detections: each object
  found with a jittered copy of its mask (sometimes twice, sometimes with another class), plus random false ones;
  scores distinct."""
  gt, dets = [], []
  for image_id in range(1, num_images + 1):
    for _ in range(int(rng.integers(1, 5))):
      mask = np.zeros((H, W), bool)
      y, x = rng.integers(0, H - 6), rng.integers(0, W - 6)
      mask[y:y + rng.integers(4, 12), x:x + rng.integers(4, 14)] = True
      label = int(rng.integers(1, num_classes + 1))
      gt.append((image_id, label, mask))
      for _ in range(int(rng.integers(0, 3))):
        found = np.roll(mask, (int(rng.integers(-3, 4)), int(rng.integers(-3, 4))), (0, 1))
        dets.append((image_id, label if rng.random() < 0.8 else int(rng.integers(1, num_classes + 1)), found))
    for _ in range(int(rng.integers(0, 3))):
      mask = np.zeros((H, W), bool)
      y, x = rng.integers(0, H - 4), rng.integers(0, W - 4)
      mask[y:y + 5, x:x + 7] = True
      dets.append((image_id, int(rng.integers(1, num_classes + 1)), mask))
  scores = rng.permutation(len(dets)) / len(dets) + 0.01
  return gt, [(i, c, m, float(s)) for (i, c, m), s in zip(dets, scores)], num_classes


def _coco(gt, num_images, num_classes, crowd=()):
  """The ground truth of (image id, label, mask) objects, those at the indices `crowd` crowds."""
  objects = [(i, c, m, k in crowd) for k, (i, c, m) in enumerate(gt)]
  return coco_masks.ground_truth(objects, (H, W), num_images, num_classes)


def _voc07_ap(rec, prec):
  ap = 0.0
  for t in np.arange(0.0, 1.1, 0.1):
    ap += (np.max(prec[rec >= t]) if np.sum(rec >= t) else 0.0) / 11.0
  return ap


def _reference_ap(gt, dets, label, threshold):
  """voc_eval_sds for one class."""
  gt_by_image = {}
  for i, c, m in gt:
    if c == label:
      gt_by_image.setdefault(i, []).append({"mask": m, "already_detect": False})
  mine = [d for d in dets if d[1] == label]
  order = np.argsort(-np.array([d[3] for d in mine]))
  tp, fp = np.zeros(len(mine)), np.zeros(len(mine))
  for n, k in enumerate(order):
    image, _, mask, _ = mine[k]
    if image not in gt_by_image:
      fp[n] = 1
      continue
    best, best_index = -1000.0, -1
    for j, g in enumerate(gt_by_image[image]):
      overlap = np.logical_and(g["mask"], mask).sum() / np.logical_or(g["mask"], mask).sum()
      if overlap > best:
        best, best_index = overlap, j
    if best >= threshold and not gt_by_image[image][best_index]["already_detect"]:
      tp[n] = 1
      gt_by_image[image][best_index]["already_detect"] = True
    else:
      fp[n] = 1
  num_pos = sum(len(v) for v in gt_by_image.values())
  tp, fp = np.cumsum(tp), np.cumsum(fp)
  return _voc07_ap(tp / num_pos, tp / np.maximum(fp + tp, np.finfo(np.float64).eps))


@pytest.mark.parametrize("seed", range(6))
def test_matches_fcis_evaluation(seed):
  rng = np.random.default_rng(seed)
  gt, dets, num_classes = _scene(rng)
  got = voc_regions.region_ap_metrics(_coco(gt, 5, num_classes), coco_masks.segm_results(dets))
  present = [c for c in range(1, num_classes + 1) if any(g[1] == c for g in gt)]
  want = {t: np.mean([_reference_ap(gt, dets, c, t) if c in present else 0.0 for c in range(1, num_classes + 1)])
          for t in voc_regions.THRESHOLDS}
  assert got["mask_APr50"] == pytest.approx(want[0.5], abs=1e-12)
  assert got["mask_APr70"] == pytest.approx(want[0.7], abs=1e-12)
  assert got["mask_APr_vol"] == pytest.approx(np.mean(list(want.values())), abs=1e-12)


def test_perfect_results_and_a_crowd():
  """Ground-truth masks as results score 1 at every threshold; a detection of a crowd region counts neither as a
  true nor as a false positive, and the crowd is not an object to recall."""
  gt, _, num_classes = _scene(np.random.default_rng(0))
  crowd = np.zeros((H, W), bool)
  crowd[:4, :] = True
  gt = gt + [(1, 1, crowd)]
  ground_truth = _coco(gt, 5, num_classes, crowd=(len(gt) - 1,))
  perfect = [(i, c, m, 1.0 - 0.01 * k) for k, (i, c, m) in enumerate(gt[:-1])]
  want = {"mask_APr50": 1.0, "mask_APr70": 1.0, "mask_APr_vol": 1.0}
  assert voc_regions.region_ap_metrics(ground_truth, coco_masks.segm_results(perfect)) == pytest.approx(want)
  on_crowd = perfect + [(1, 1, crowd, 2.0)]  # ranked first: as a false positive it would lower every AP
  assert voc_regions.region_ap_metrics(ground_truth, coco_masks.segm_results(on_crowd)) == pytest.approx(want)
