"""COCO box and mask AP of an instance model over an eval split, from padded, sharded eval batches.

The eval pipeline resizes each source image by `scale` (aspect ratio kept), puts it at the top left and pads
it to the batch size (segjax/data/augment.py). Detections are mapped back to the source image before
evaluation, as the official protocol scores them: boxes divided by `scale`, mask probabilities cropped to the
unpadded region and resized bilinearly to the source size, then binarised at 0.5 and RLE-encoded at once
(an image's masks at full size would not fit in memory over a whole split).

With several processes each one converts its own rows; the results meet through JSON files in the workdir
(the directory every process already shares for checkpoints) and process 0 runs pycocotools.
"""
import json

import jax
import numpy as np
from PIL import Image

from segjax import paths
from segjax.evaluation import boundary
from segjax.evaluation import cityscapes_instances
from segjax.evaluation import coco
from segjax.evaluation import leaf
from segjax.evaluation import overlap
from segjax.evaluation import voc_regions
from segjax.ops.masks import paste_masks_in_image
from segjax.train import multihost




def to_source_image(boxes, masks, scale, orig_size, mask_probabilities=None, mask_boxes=None):
  """Batch-input detections -> source-image ones: boxes [K, 4] / scale, masks [K, H, W] -> [K, h, w]. With the
  mask head's M x M masks [K, M, M], those are pasted into the source image over its boxes, as torchvision's and
  detectron2's post-processing does, instead; over mask_boxes [K, 4] / scale where given (a mask grid that covers
  more than the box, as the boundary-aware model's)."""
  h, w = (int(s) for s in orig_size)
  boxes = np.asarray(boxes, np.float64) / float(scale)
  boxes = np.clip(boxes, 0, [w, h, w, h]).astype(np.float32)
  if mask_probabilities is not None:
    if not len(boxes):
      return boxes, np.zeros((0, h, w), np.float32)
    region = boxes if mask_boxes is None else (np.asarray(mask_boxes, np.float64) / float(scale)).astype(np.float32)
    return boxes, np.asarray(paste_masks_in_image(np.asarray(mask_probabilities, np.float32), region, h, w))
  crop_h = min(max(int(round(h * float(scale))), 1), masks.shape[1])
  crop_w = min(max(int(round(w * float(scale))), 1), masks.shape[2])
  masks = masks[:, :crop_h, :crop_w]
  if (crop_h, crop_w) != (h, w):  # PIL's "F" images keep float probabilities; BILINEAR as cv2/torch resize.
    masks = np.stack([np.asarray(Image.fromarray(m.astype(np.float32), "F").resize((w, h), Image.BILINEAR))
                      for m in masks]) if len(masks) else np.zeros((0, h, w), np.float32)
  return boxes, masks


class InstanceEvaluator:
  """Collects COCO results over a split and scores them with pycocotools (box_AP, ..., mask_AP, ...)."""
  # What `update` reads; mask_probabilities where the model gives them (the loop leaves out what it does not).
  PREDICTION_KEYS = ("boxes", "scores", "labels", "masks", "valid", "mask_probabilities", "mask_boxes")

  def __init__(self, info, workdir=None, overlap_metrics=False, boundary_ap=True):
    """`workdir`: a local path or a URL that every process reaches (results are exchanged there). With
    `overlap_metrics`, `result` adds the unseen-object overlap precision / recall / F-measure of every result
    (segjax.evaluation.overlap): what class-agnostic, bottom-up models are scored by on OCID / OSD. Without
    `boundary_ap`, it leaves out Boundary AP (boundary_AP, boundary_AP50, boundary_AP75)."""
    if info.eval_instances_json is None:
      raise ValueError(f"dataset {info.name!r}: the eval split has no instances JSON, so an instance model "
                       "cannot be evaluated on it (config.dataset.eval_split)")
    self.info = info
    self.overlap_metrics = overlap_metrics
    self.boundary_ap = boundary_ap
    self.workdir = paths.resolve(workdir) if workdir else None
    self.label_to_category_id = {k + 1: c for k, c in enumerate(info.thing_category_ids)}
    self.reset()

  def reset(self):
    self.results = {"bbox": [], "segm": []}

  def device_stats(self, predictions, batch):
    """Nothing is reduced on device: the detections themselves go to the host."""
    del predictions, batch
    return ()

  def update(self, stats, local_predictions, local_batch):
    """Adds the detections of this process's rows of one eval batch (numpy, rows of `local_batch`)."""
    del stats
    rows = local_predictions
    for i in np.flatnonzero(local_batch["valid_image"]):
      keep = rows["valid"][i]
      roi_masks = rows["mask_probabilities"][i][keep] if "mask_probabilities" in rows else None
      mask_boxes = rows["mask_boxes"][i][keep] if "mask_boxes" in rows else None
      boxes, masks = to_source_image(rows["boxes"][i][keep], rows["masks"][i][keep], local_batch["scale"][i],
                                     local_batch["orig_size"][i], roi_masks, mask_boxes)
      detection = {"image_id": int(local_batch["image_id"][i]), "boxes": boxes, "masks": masks,
                   "scores": rows["scores"][i][keep], "labels": rows["labels"][i][keep].astype(np.int64)}
      for iou_type in self.results:
        self.results[iou_type] += coco.coco_results([detection], self.label_to_category_id, iou_type)

  def _gathered(self):
    """All processes' results on process 0 (None elsewhere)."""
    if jax.process_count() == 1:
      return self.results
    folder = self.workdir / "eval_results_parts"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"process{jax.process_index()}.json").write_text(json.dumps(self.results))
    multihost.barrier("eval_results_written")
    merged = None
    if jax.process_index() == 0:
      merged = {"bbox": [], "segm": []}
      for p in range(jax.process_count()):
        part = json.loads((folder / f"process{p}.json").read_text())
        for iou_type in merged:
          merged[iou_type] += part[iou_type]
    multihost.barrier("eval_results_read")
    return merged

  def result(self):
    """COCO metrics on process 0 ({} elsewhere), which also writes workdir/coco_results_{bbox,segm}.json."""
    results = self._gathered()
    if results is None:
      return {}
    if self.workdir:
      self.workdir.mkdir(parents=True, exist_ok=True)
      for iou_type, entries in results.items():
        (self.workdir / f"coco_results_{iou_type}.json").write_text(json.dumps(entries))
    ground_truth = coco.load_ground_truth(self.info.eval_instances_json)
    metrics = {}
    for iou_type, entries in results.items():
      metrics.update(coco.evaluate_results(ground_truth, entries, iou_type))
    # Class-agnostic mask AP (all categories merged): what bottom-up, class-agnostic models are scored by.
    agnostic = coco.evaluate_results(*coco.class_agnostic(ground_truth, results["segm"]), "segm")
    metrics.update({f"{k}_agnostic": v for k, v in agnostic.items()})
    metrics.update(voc_regions.region_ap_metrics(ground_truth, results["segm"]))  # SDS's AP^r (VOC / SBD)
    if self.boundary_ap:  # Boundary AP (Cheng et al. 2021)
      metrics.update(boundary.boundary_ap_metrics(ground_truth, results["segm"]))
    if self.overlap_metrics:
      metrics.update(overlap.coco_overlap_metrics(ground_truth, results["segm"]))
    if self.info.name == "cvppp":  # the leaf segmentation challenge's SBD and |DiC| (segjax.evaluation.leaf)
      metrics.update(leaf.coco_leaf_metrics(ground_truth, results["segm"]))
    if self.info.name == "cityscapes_instances":  # the benchmark's AP / AP50 (official protocol, per class)
      metrics.update(cityscapes_instances.coco_results_metrics(ground_truth, results["segm"]))
    return metrics
