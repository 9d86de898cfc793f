"""COCO box and mask AP and AR through pycocotools' COCOeval (its stats[0:12]).

Detections are per-image dicts {"image_id", "boxes" [K, 4] (x1, y1, x2, y2) pixels, "scores" [K],
"labels" [K] contiguous class ids, "masks" [K, H, W] probabilities or binary}. Labels map to COCO
category ids through `label_to_category_id`. Masks are binarised at > 0.5 (torchvision's
references/detection/coco_eval.py) and must already be at the image's size in the GT JSON: only
the caller knows how the network input was resized and padded, so a mask of another size raises
ValueError rather than being resized here.

As in torchvision's reference, box and mask results are separate lists: with a "bbox" field,
pycocotools would take a mask result's area from its box and so bin small/medium/large by box area.
"""
import collections.abc
import contextlib
import io
import json
import os

import numpy as np
from pycocotools import coco as pycoco
from pycocotools import cocoeval
from pycocotools import mask as mask_util

# COCOeval.stats[0:12], in order: AP at IoU .50:.95, .50, .75, and by area; AR given 1, 10, 100 detections per image,
# and by area (100 detections).
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
PREFIX = {"bbox": "box", "segm": "mask"}
_FIELDS = {"bbox": ("boxes", "scores", "labels"), "segm": ("masks", "scores", "labels")}


def _checked(detection, iou_type, label_to_category_id):
  """(image_id, category ids [K], scores [K], boxes [K, 4] | masks [K, H, W]); mapping is a dict."""
  missing = [f for f in ("image_id",) + _FIELDS[iou_type] if f not in detection]
  if missing:
    raise ValueError(f"detection {detection.get('image_id')} lacks field(s) {missing} needed for "
                     f"iou_type {iou_type!r}")
  image_id = int(detection["image_id"])
  data, scores, labels = (np.asarray(detection[f]) for f in _FIELDS[iou_type])
  num = len(scores) if scores.ndim == 1 else -1
  data_ok = data.shape == (num, 4) if iou_type == "bbox" else (data.ndim == 3 and len(data) == num)
  integer = labels.size == 0 or np.issubdtype(labels.dtype, np.integer)
  if not data_ok or labels.shape != (num,) or not integer:
    raise ValueError(f"image {image_id}: need scores [K], integer labels [K] and "
                     f"{'boxes [K, 4]' if iou_type == 'bbox' else 'masks [K, H, W]'}, got shapes "
                     f"{scores.shape}, {labels.shape} ({labels.dtype}), {data.shape}")
  unknown = sorted(set(labels.tolist()) - set(label_to_category_id))
  if unknown:
    raise ValueError(f"image {image_id}: label(s) {unknown} not in label_to_category_id")
  category_ids = [int(label_to_category_id[label]) for label in labels.tolist()]
  return image_id, category_ids, scores.astype(np.float64), data


def coco_results(detections, label_to_category_id, iou_type):
  """The COCO results list ({"image_id", "category_id", "bbox" | "segmentation", "score"}).

  Args:
    detections: list of per-image detection dicts (see the module docstring).
    label_to_category_id: mapping (or sequence) from contiguous label to COCO category id.
    iou_type: "bbox" (boxes as [x, y, w, h]) or "segm" (masks as compressed RLE).

  Returns:
    A JSON-serialisable list, one entry per detection.
  """
  if iou_type not in _FIELDS:
    raise ValueError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}")
  if not isinstance(label_to_category_id, collections.abc.Mapping):
    label_to_category_id = dict(enumerate(label_to_category_id))
  results = []
  for detection in detections:
    image_id, category_ids, scores, data = _checked(detection, iou_type, label_to_category_id)
    if iou_type == "bbox":
      boxes = data.astype(np.float64)
      shapes = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1).tolist()
      key = "bbox"
    else:
      binary = np.asfortranarray((data > 0.5).transpose(1, 2, 0).astype(np.uint8))
      shapes = mask_util.encode(binary) if len(scores) else []
      for rle in shapes:
        rle["counts"] = rle["counts"].decode("ascii")
      key = "segmentation"
    results += [{"image_id": image_id, "category_id": c, key: s, "score": float(score)}
                for c, s, score in zip(category_ids, shapes, scores)]
  return results


def save_coco_results(path, detections, label_to_category_id, iou_type):
  """Writes `coco_results(...)` as JSON to path (a COCO submission file) and returns the list."""
  results = coco_results(detections, label_to_category_id, iou_type)
  with open(path, "w") as f:
    json.dump(results, f)
  return results


def load_ground_truth(coco_gt):
  if isinstance(coco_gt, pycoco.COCO):
    return coco_gt
  with contextlib.redirect_stdout(io.StringIO()):
    return pycoco.COCO(os.fspath(coco_gt))


def _check_against_gt(coco_gt, detections, iou_types):
  """Unknown image ids and masks not at the image's size raise ValueError."""
  unknown = sorted({int(d["image_id"]) for d in detections} - set(coco_gt.imgs))
  if unknown:
    raise ValueError(f"detections for image_id(s) {unknown[:10]} not in the ground truth")
  if "segm" not in iou_types:
    return
  for d in detections:
    image = coco_gt.imgs[int(d["image_id"])]
    size = np.shape(d["masks"])[1:] if "masks" in d else None
    if size is not None and tuple(size) != (image["height"], image["width"]):
      raise ValueError(f"image {image['id']}: masks have size {tuple(size)}, the ground truth "
                       f"image is {(image['height'], image['width'])}; resize (and unpad) first")


def coco_evaluate(coco_gt, detections, label_to_category_id, iou_types=("bbox", "segm")):
  """COCO AP of detections, through pycocotools.

  Args:
    coco_gt: path of a COCO instances JSON, or a pycocotools COCO object.
    detections: list of per-image detection dicts (see the module docstring); may be empty.
    label_to_category_id: mapping (or sequence) from contiguous label to COCO category id.
    iou_types: any of "bbox", "segm".

  Returns:
    {"box_AP", ..., "box_APl", "box_AR1", "box_AR10", "box_AR100", "box_ARs", "box_ARm", "box_ARl", "mask_AP",
    ...}: COCOeval stats as fractions in [0, 1]; -1.0 where the ground truth has no object of that area range.
    No detections give AP and AR 0 (COCOeval on an empty result set; its loadRes rejects []).
  """
  coco_gt = load_ground_truth(coco_gt)
  _check_against_gt(coco_gt, detections, iou_types)
  metrics = {}
  for iou_type in iou_types:
    metrics.update(evaluate_results(coco_gt, coco_results(detections, label_to_category_id, iou_type),
                                    iou_type))
  return metrics


def class_agnostic(coco_gt, results):
  """(ground truth, results) with every category merged into one (id 1): COCOeval then matches detections to any
  object whatever its class, the class-agnostic AP of bottom-up instance segmentation."""
  coco_gt = load_ground_truth(coco_gt)
  dataset = dict(coco_gt.dataset, categories=[{"id": 1, "name": "object", "supercategory": "object"}],
                 annotations=[dict(a, category_id=1) for a in coco_gt.dataset["annotations"]])
  merged = pycoco.COCO()
  merged.dataset = dataset
  with contextlib.redirect_stdout(io.StringIO()):
    merged.createIndex()
  # Only a result's own fields: COCO.loadRes adds id, area and bbox to the dicts it is given.
  fields = ("image_id", "segmentation", "bbox", "score")
  own = lambda r: {k: r[k] for k in fields if k in r and not (k == "bbox" and "segmentation" in r)}
  return merged, [dict(own(r), category_id=1) for r in results]


def evaluate_results(coco_gt, results, iou_type):
  """COCOeval of a COCO results list (`coco_results` output) -> {"box_AP", ...} or {"mask_AP", ...}."""
  coco_gt = load_ground_truth(coco_gt)
  unknown = sorted({r["category_id"] for r in results} - set(coco_gt.cats))
  if unknown:
    raise ValueError(f"label_to_category_id gives category id(s) {unknown} that are not in "
                     "the ground truth")
  with contextlib.redirect_stdout(io.StringIO()):
    if results:
      coco_dt = coco_gt.loadRes(results)
    else:
      coco_dt = pycoco.COCO()
      coco_dt.dataset = {"images": list(coco_gt.dataset["images"]),
                         "categories": list(coco_gt.dataset["categories"]), "annotations": []}
      coco_dt.createIndex()
    evaluator = cocoeval.COCOeval(coco_gt, coco_dt, iou_type)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
  return {f"{PREFIX[iou_type]}_{name}": float(evaluator.stats[i]) for i, name in enumerate(METRICS)}
