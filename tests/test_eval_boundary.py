"""Boundary AP (segjax.evaluation.boundary) against the reference implementation of Cheng et al., "Boundary IoU"
(CVPR 2021), github.com/bowenc0221/boundary-iou-api at commit 37d25586a677b043ed585f10e5c42d4e80176ea9, ported here:
boundary_iou/utils/boundary_utils.py `mask_to_boundary` (with cv2) and boundary_iou/coco_instance_api/cocoeval.py
`computeBoundaryIoU` on pycocotools' COCOeval (the reference's cocoeval.py is pycocotools' with that IoU added; its
coco.py adds every annotation's and every result's boundary RLE up front, as `_with_boundaries` does here)."""
import contextlib
import io

import cv2
import numpy as np
import pytest
from pycocotools import cocoeval
from pycocotools import mask as mask_util

from segjax.evaluation import boundary
from segjax.evaluation import coco
import coco_masks


def _reference_mask_to_boundary(mask, dilation_ratio=0.02):
  """boundary_utils.py's mask_to_boundary, verbatim but for names."""
  h, w = mask.shape
  img_diag = np.sqrt(h ** 2 + w ** 2)
  dilation = int(round(dilation_ratio * img_diag))
  if dilation < 1:
    dilation = 1
  new_mask = cv2.copyMakeBorder(mask, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
  kernel = np.ones((3, 3), dtype=np.uint8)
  new_mask_erode = cv2.erode(new_mask, kernel, iterations=dilation)
  mask_erode = new_mask_erode[1:h + 1, 1:w + 1]
  return mask - mask_erode


def _blob(rng, h, w):
  """A random mask: a union of 1-3 random ellipses (some crossing the image border), or a few random pixels."""
  if rng.random() < 0.1:
    return (rng.random((h, w)) < 0.05).astype(np.uint8)
  yy, xx = np.mgrid[:h, :w]
  mask = np.zeros((h, w), bool)
  for _ in range(int(rng.integers(1, 4))):
    cy, cx = rng.uniform(-0.1 * h, 1.1 * h), rng.uniform(-0.1 * w, 1.1 * w)
    ry, rx = rng.uniform(1, max(1.5, 0.4 * h)), rng.uniform(1, max(1.5, 0.4 * w))
    mask |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
  return mask.astype(np.uint8)


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (17, 23), (31, 9), (65, 129), (101, 77), (251, 183)])
@pytest.mark.parametrize("dilation_ratio", [0.02, 0.05])
def test_boundary_matches_reference(shape, dilation_ratio):
  rng = np.random.default_rng(shape[0] * 1000 + shape[1])
  masks = [_blob(rng, *shape) for _ in range(8)] + [np.zeros(shape, np.uint8), np.ones(shape, np.uint8)]
  for mask in masks:
    want = _reference_mask_to_boundary(mask, dilation_ratio)
    np.testing.assert_array_equal(boundary.mask_to_boundary(mask, dilation_ratio), want)


H, W = 97, 131  # the reference's dilation is round(0.02 * 163.1) = 3 pixels


def _scene(rng, num_images=4, num_classes=3):
  """Ground truth (2-5 random blobs per image, one in three images with a crowd) and detections: most objects
  found by a perturbed copy (shifted by up to 2 pixels, eroded or dilated by 1, sometimes twice, sometimes with another
  class), plus random false ones; scores distinct."""
  gt, dets = [], []
  for image_id in range(1, num_images + 1):
    for k in range(int(rng.integers(2, 6))):
      mask = _blob(rng, H, W).astype(bool)
      if not mask.any():
        continue
      label = int(rng.integers(1, num_classes + 1))
      crowd = k == 0 and image_id % 3 == 0
      gt.append((image_id, label, mask, crowd))
      for _ in range(int(rng.integers(0, 3))):
        found = np.roll(mask, (int(rng.integers(-2, 3)), int(rng.integers(-2, 3))), (0, 1))
        grow = int(rng.integers(-1, 2))
        if grow:
          found = cv2.morphologyEx(found.astype(np.uint8), cv2.MORPH_DILATE if grow > 0 else cv2.MORPH_ERODE,
                                   np.ones((3, 3), np.uint8), iterations=abs(grow)).astype(bool)
        dets.append((image_id, label if rng.random() < 0.8 else int(rng.integers(1, num_classes + 1)), found))
    for _ in range(int(rng.integers(0, 3))):
      dets.append((image_id, int(rng.integers(1, num_classes + 1)), _blob(rng, H, W).astype(bool)))
  scores = rng.permutation(len(dets)) / len(dets) + 0.01
  return gt, [(i, c, m, float(s)) for (i, c, m), s in zip(dets, scores)], num_classes


def _coco(gt, num_images, num_classes):
  return coco_masks.ground_truth(gt, (H, W), num_images, num_classes)


def _with_boundaries(annotations, coco_object):
  """The reference's augment_annotations_with_boundary_single_core: every annotation gets its boundary RLE."""
  for ann in annotations:
    mask = coco_object.annToMask(ann)
    ann["boundary"] = mask_util.encode(np.array(_reference_mask_to_boundary(mask)[:, :, None], order="F",
                                                dtype="uint8"))[0]


class _ReferenceEval(cocoeval.COCOeval):
  """pycocotools' COCOeval with cocoeval.py's computeBoundaryIoU as its IoU, ported but for names."""

  def computeIoU(self, imgId, catId):  # pylint: disable=invalid-name
    p = self.params
    gt = self._gts[imgId, catId]
    dt = self._dts[imgId, catId]
    if len(gt) == 0 and len(dt) == 0:
      return []
    inds = np.argsort([-d["score"] for d in dt], kind="mergesort")
    dt = [dt[i] for i in inds]
    if len(dt) > p.maxDets[-1]:
      dt = dt[0:p.maxDets[-1]]
    g_m = [g["segmentation"] for g in gt]
    d_m = [d["segmentation"] for d in dt]
    g_b = [g["boundary"] for g in gt]
    d_b = [d["boundary"] for d in dt]
    iscrowd = [int(o["iscrowd"]) for o in gt]
    mask_ious = np.array(mask_util.iou(d_m, g_m, iscrowd))
    boundary_ious = np.array(mask_util.iou(d_b, g_b, iscrowd))
    iscrowd = np.array(iscrowd)
    ious = mask_ious
    if len(gt) and len(dt):
      ious[:, iscrowd == 0] = np.minimum(mask_ious[:, iscrowd == 0], boundary_ious[:, iscrowd == 0])
    else:
      ious = np.minimum(mask_ious, boundary_ious)
    return ious


def _reference_boundary_ap(gt, dets, num_images, num_classes):
  ground_truth = _coco(gt, num_images, num_classes)
  _with_boundaries(ground_truth.dataset["annotations"], ground_truth)
  with contextlib.redirect_stdout(io.StringIO()):
    found = ground_truth.loadRes(coco_masks.segm_results(dets))
    _with_boundaries(found.dataset["annotations"], found)
    evaluator = _ReferenceEval(ground_truth, found, "segm")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
  return evaluator.stats[:3]


@pytest.mark.parametrize("seed", range(5))
def test_boundary_ap_matches_reference(seed):
  gt, dets, num_classes = _scene(np.random.default_rng(seed))
  assert any(crowd for *_, crowd in gt) or seed, "the scenes hold crowds"
  want = _reference_boundary_ap(gt, dets, 4, num_classes)
  got = boundary.boundary_ap_metrics(_coco(gt, 4, num_classes), coco_masks.segm_results(dets))
  assert [got["boundary_AP"], got["boundary_AP50"], got["boundary_AP75"]] == pytest.approx(want, abs=1e-12)
  assert 0 < got["boundary_AP"] < 1  # the scenes are neither trivial nor hopeless


def test_results_are_not_modified_and_no_results_score_zero():
  gt, dets, num_classes = _scene(np.random.default_rng(0))
  results = coco_masks.segm_results(dets)
  before = [dict(r) for r in results]
  boundary.boundary_ap_metrics(_coco(gt, 4, num_classes), results)
  # pycocotools' loadRes would add "bbox" and "area" to the caller's dicts; a later mask evaluation of the same list
  # would then take a mask's area from its box.
  assert results == before
  assert boundary.boundary_ap_metrics(_coco(gt, 4, num_classes), []) == {
      "boundary_AP": 0.0, "boundary_AP50": 0.0, "boundary_AP75": 0.0}


def test_perfect_results_score_one():
  gt, _, num_classes = _scene(np.random.default_rng(1))
  perfect = [(i, c, m, 1.0 - 0.01 * k) for k, (i, c, m, crowd) in enumerate(gt) if not crowd]
  got = boundary.boundary_ap_metrics(_coco(gt, 4, num_classes), coco_masks.segm_results(perfect))
  assert got == pytest.approx({"boundary_AP": 1.0, "boundary_AP50": 1.0, "boundary_AP75": 1.0})


def _ring(top, left, side, width, shape):
  """The boundary region of an axis-aligned square mask away from the image border: the square minus the square
  shrunk by `width` on every side (erosion by a (2 width + 1)^2 square)."""
  ring = np.zeros(shape, bool)
  ring[top:top + side, left:left + side] = True
  ring[top + width:top + side - width, left + width:left + side - width] = False
  return ring


def test_shift_lowers_boundary_ap_more_than_mask_ap():
  """One 40 x 40 square in a 128 x 128 image, found shifted right by 1 pixel. Mask IoU 39 / 41 = 0.951 >= every
  threshold .50:.95, so mask AP = 1. The boundary band is d = round(0.02 x 181.02) = 4 pixels wide; the two bands
  overlap in 8 rows x 39 + 32 rows x (3 + 3) = 504 pixels of 2 x 576 - 504 = 648: boundary IoU 0.778, which passes
  the six thresholds .50 ... .75, so boundary AP = 0.6 (boundary AP50 = 1, boundary AP75 = 1)."""
  shape, side, d = (128, 128), 40, 4
  truth = np.zeros(shape, bool)
  truth[30:70, 50:90] = True
  found = np.roll(truth, 1, 1)
  band_iou = (_ring(30, 50, side, d, shape) & _ring(30, 51, side, d, shape)).sum() / (
      _ring(30, 50, side, d, shape) | _ring(30, 51, side, d, shape)).sum()
  assert band_iou == pytest.approx(504 / 648)
  ground_truth = coco_masks.ground_truth([(1, 1, truth, False)], shape, 1, 1)
  results = coco_masks.segm_results([(1, 1, found, 0.9)])
  mask_ap = coco.evaluate_results(ground_truth, results, "segm")["mask_AP"]
  got = boundary.boundary_ap_metrics(ground_truth, results)
  assert mask_ap == pytest.approx(1.0)
  assert got == pytest.approx({"boundary_AP": 0.6, "boundary_AP50": 1.0, "boundary_AP75": 1.0})
