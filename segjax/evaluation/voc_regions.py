"""Region AP (AP^r) of instance segmentation on VOC / SBD, the protocol of SDS (Hariharan et al., ECCV 2014) as
FCIS's evaluation implements it (github.com/msracver/FCIS, lib/dataset/pascal_voc_eval.py `voc_eval_sds` and
lib/dataset/pascal_voc.py `evaluate_sds`, commit 309f6c9a1669bf05a955b66519a807951e70197f): the VOC detection
matching (`segjax.evaluation.voc.class_pr`: per class, detections by descending score, each matched to the object of
its image with the largest overlap, a true positive at overlap >= t if that object is not yet taken) with the mask
IoU as the overlap, and VOC2007's 11-point AP ("according to SDS's evaluation protocol"). Reported as fractions:

- mask_APr50, mask_APr70: the mean over classes of AP^r at mask IoU 0.5 and 0.7;
- mask_APr_vol: the mean of the class-mean AP^r over t = 0.1, 0.2, ..., 0.9, the volume under the PR curves across
  overlap thresholds (SDS Sec. 5).

COCO crowd objects are VOC's "difficult" ones: a detection whose best overlap is a crowd counts neither way, and
crowds are not in the recall's denominator.
"""
import numpy as np
from pycocotools import mask as mask_util

from segjax.evaluation import voc

THRESHOLDS = tuple(round(0.1 * k, 1) for k in range(1, 10))


def region_images(coco_gt, segm_results):
  """voc.ImageDetections of every image of a pycocotools COCO ground truth, labels the categories' positions
  (1..C in sorted id order), overlaps the mask IoU of the results' and the objects' RLE masks."""
  label_of = {c: k + 1 for k, c in enumerate(sorted(coco_gt.cats))}
  by_image = {}
  for r in segm_results:
    by_image.setdefault(int(r["image_id"]), []).append(r)
  images = []
  for image_id, image in sorted(coco_gt.imgs.items()):
    anns = sorted(coco_gt.imgToAnns.get(image_id, []), key=lambda a: a["id"])
    found = by_image.get(image_id, [])
    gt_rles = [coco_gt.annToRLE(a) for a in anns]
    rles = [r["segmentation"] for r in found]
    ious = (np.asarray(mask_util.iou(rles, gt_rles, [0] * len(gt_rles)), np.float64).reshape(len(rles), len(anns))
            if rles and gt_rles else np.zeros((len(rles), len(anns))))
    images.append(voc.ImageDetections(
        boxes=np.zeros((len(found), 4)), scores=np.array([r["score"] for r in found], np.float64),
        labels=np.array([label_of[r["category_id"]] for r in found], np.int64), gt_boxes=np.zeros((len(anns), 4)),
        gt_labels=np.array([label_of[a["category_id"]] for a in anns], np.int64),
        gt_difficult=np.array([bool(a.get("iscrowd", 0)) for a in anns], bool), ious=ious))
  return images, len(label_of)


def region_ap_metrics(coco_gt, segm_results) -> dict[str, float]:
  """{"mask_APr50", "mask_APr70", "mask_APr_vol"} of COCO segm results against a pycocotools COCO ground truth."""
  return region_ap_of_images(*region_images(coco_gt, segm_results))


def region_ap_of_images(images, num_classes) -> dict[str, float]:
  """{"mask_APr50", "mask_APr70", "mask_APr_vol"} of voc.ImageDetections whose `ious` are mask IoUs."""
  means = {t: float(voc.voc_ap(images, num_classes, t)["voc07"].mean()) for t in THRESHOLDS}
  return {"mask_APr50": means[0.5], "mask_APr70": means[0.7], "mask_APr_vol": float(np.mean(list(means.values())))}
