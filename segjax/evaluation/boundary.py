"""Boundary AP (Cheng, Girshick, Dollar, Berg, Kirillov, "Boundary IoU: Improving Object-Centric Image Segmentation
Evaluation", CVPR 2021), as its reference implementation computes it (github.com/bowenc0221/boundary-iou-api,
commit 37d25586a677b043ed585f10e5c42d4e80176ea9: boundary_iou/utils/boundary_utils.py `mask_to_boundary`,
boundary_iou/coco_instance_api/cocoeval.py `computeBoundaryIoU`):

- a mask's boundary region is the mask minus its erosion by a 3x3 square `d` times, d = max(1, round(0.02 x the
  image diagonal)), the image padded by one pixel of zeros first so that a mask cut by the image border has a
  boundary along it (G_d intersected with G in the paper's Eq. 2);
- the IoU of a detection and a (non-crowd) object is min(mask IoU, boundary IoU) (Sec. 6, "Boundary AP"); crowd
  objects keep pycocotools' crowd mask IoU;
- the rest is COCOeval's: matching at IoU thresholds .50:.95, 101-point AP, area ranges by mask area.
Reported as fractions: boundary_AP (.50:.95), boundary_AP50, boundary_AP75.

Cost: the reference computes the boundary of every object and every result up front. Here a boundary is computed
only for the detections COCOeval compares (the top maxDets per image and category) and the non-crowd objects, once
each, and the erosion runs on the mask's bounding box only (pixels outside it are zero and stay zero): one
full-image decode, one separable minimum filter over the box and one full-image encode per mask. That is several
times pycocotools' RLE-only mask AP, but no more than what InstanceEvaluator.update already does for every
detection (paste its mask into the full image and encode it), so boundary AP is computed in every instance
evaluation, with no config key to turn it off.
"""
import contextlib
import io

import numpy as np
from pycocotools import cocoeval
from pycocotools import mask as mask_util
from scipy import ndimage

from segjax.evaluation import coco

DILATION_RATIO = 0.02  # the paper's and the reference's default (Sec. 4: 2% of the image diagonal)


def boundary_width(height, width, dilation_ratio=DILATION_RATIO):
  """The erosion count d of an image: max(1, round(dilation_ratio x diagonal)) (mask_to_boundary's `dilation`)."""
  return max(1, int(round(dilation_ratio * np.sqrt(height ** 2 + width ** 2))))


def mask_to_boundary(mask, dilation_ratio=DILATION_RATIO):
  """The boundary region [H, W] uint8 of a binary mask [H, W]: mask minus the mask eroded d times by a 3x3 square
  in an image padded by one zero pixel (d = boundary_width(H, W)).

  d 3x3 erosions are one erosion by a (2d + 1) x (2d + 1) square, and the zero padding makes every pixel outside
  the image count as 0 (an erosion never raises the zero ring); so the eroded mask is a minimum filter of size
  2d + 1 with a constant 0 border, computed over the mask's bounding box (outside it the mask is 0)."""
  mask = np.asarray(mask).astype(bool)
  h, w = mask.shape
  boundary = np.zeros((h, w), np.uint8, order="F")  # pycocotools encodes column-major arrays without a copy
  rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
  if not len(rows):
    return boundary
  y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
  crop = mask[y0:y1, x0:x1].view(np.uint8)
  size = 2 * boundary_width(h, w, dilation_ratio) + 1
  eroded = ndimage.minimum_filter(crop, size=size, mode="constant", cval=0)
  boundary[y0:y1, x0:x1] = crop & (1 - eroded)
  return boundary


def rle_boundary(rle, dilation_ratio=DILATION_RATIO):
  """The compressed RLE of the boundary region of a compressed RLE mask."""
  boundary = mask_to_boundary(mask_util.decode(rle), dilation_ratio)
  return mask_util.encode(np.asfortranarray(boundary))


class BoundaryCOCOeval(cocoeval.COCOeval):
  """pycocotools' COCOeval for "segm" whose IoU of a detection and a non-crowd object is min(mask IoU, boundary
  IoU) (the reference's computeBoundaryIoU); boundaries are computed on first use and kept per annotation id."""

  def __init__(self, coco_gt, coco_dt, dilation_ratio=DILATION_RATIO):
    super().__init__(coco_gt, coco_dt, "segm")
    self.dilation_ratio = dilation_ratio
    self._boundaries = {}

  def _boundary(self, which, ann):
    key = (which, ann["id"])
    if key not in self._boundaries:
      self._boundaries[key] = rle_boundary(ann["segmentation"], self.dilation_ratio)
    return self._boundaries[key]

  def computeIoU(self, imgId, catId):  # pylint: disable=invalid-name  (pycocotools' name)
    p = self.params
    if p.useCats:
      gt, dt = self._gts[imgId, catId], self._dts[imgId, catId]
    else:
      gt = [g for c in p.catIds for g in self._gts[imgId, c]]
      dt = [d for c in p.catIds for d in self._dts[imgId, c]]
    if not gt and not dt:
      return []
    order = np.argsort([-d["score"] for d in dt], kind="mergesort")
    dt = [dt[i] for i in order][:p.maxDets[-1]]
    crowd = np.array([int(g["iscrowd"]) for g in gt], bool)
    ious = mask_util.iou([d["segmentation"] for d in dt], [g["segmentation"] for g in gt], crowd.astype(int).tolist())
    if not gt or not dt or crowd.all():
      return ious
    objects = [g for g, c in zip(gt, crowd) if not c]
    boundary_ious = mask_util.iou([self._boundary("dt", d) for d in dt], [self._boundary("gt", g) for g in objects],
                                  [0] * len(objects))
    ious = np.array(ious)
    ious[:, ~crowd] = np.minimum(ious[:, ~crowd], boundary_ious)
    return ious


def boundary_ap_metrics(coco_gt, segm_results, dilation_ratio=DILATION_RATIO) -> dict[str, float]:
  """{"boundary_AP", "boundary_AP50", "boundary_AP75"} of COCO segm results against a pycocotools COCO ground truth
  (no results give 0, as coco.evaluate_results)."""
  coco_gt = coco.load_ground_truth(coco_gt)
  if not segm_results:
    return {"boundary_AP": 0.0, "boundary_AP50": 0.0, "boundary_AP75": 0.0}
  # Only a result's own fields: COCO.loadRes adds area and bbox to the dicts it is given, and with a bbox field a
  # later loadRes would take a mask result's area from its box (coco.py's module docstring).
  own = [{k: r[k] for k in ("image_id", "category_id", "segmentation", "score")} for r in segm_results]
  with contextlib.redirect_stdout(io.StringIO()):
    evaluator = BoundaryCOCOeval(coco_gt, coco_gt.loadRes(own), dilation_ratio)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
  return {"boundary_AP": float(evaluator.stats[0]), "boundary_AP50": float(evaluator.stats[1]),
          "boundary_AP75": float(evaluator.stats[2])}
