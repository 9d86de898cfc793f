"""Panoptic quality of a panoptic model over an eval split, from padded, sharded eval batches (and, where the split
has an instances JSON, the box and mask AP of its detections).

The predicted panoptic map (network input size) is taken back to the source image as the official protocol scores
it: cropped to the unpadded region and resized to the source size by nearest neighbour; segments that no pixel
keeps are dropped. It is then compared with the split's COCO panoptic PNG by `PQAccumulator` (panopticapi
semantics). With several processes, each one accumulates its own rows; the sums meet through files in the workdir
and process 0 reports.
"""
import json
import os

import jax
import numpy as np
from PIL import Image

from segjax import paths
from segjax.evaluation import panoptic, panoptic_io
from segjax.evaluation.instance import InstanceEvaluator
from segjax.evaluation.pq_accumulator import PQAccumulator
from segjax.train import multihost

_SPLITS = (("All", ""), ("Things", "_th"), ("Stuff", "_st"))  # metric suffixes as detectron2's PQ, SQ, RQ


def to_source_map(id_map, scale, orig_size):
  """Segment ids [H, W] at batch input size -> [h, w] of the source image (crop the padding, nearest resize)."""
  h, w = (int(s) for s in orig_size)
  crop_h = min(max(int(round(h * float(scale))), 1), id_map.shape[0])
  crop_w = min(max(int(round(w * float(scale))), 1), id_map.shape[1])
  id_map = np.asarray(id_map[:crop_h, :crop_w], np.int32)
  if (crop_h, crop_w) != (h, w):
    id_map = np.asarray(Image.fromarray(id_map).resize((w, h), Image.NEAREST), np.int32)
  return id_map


def segment_category_ids(segment_category, segment_is_thing, info):
  """Segment rows' category ids: a thing row's label 1..K is info.thing_category_ids[label - 1], a stuff row's class
  1..S info.stuff_category_ids[class - 1] (0 for rows out of range, padding)."""
  thing_ids = np.array((0,) + tuple(info.thing_category_ids))
  stuff_ids = np.array((0,) + tuple(info.stuff_category_ids))
  label = np.asarray(segment_category)
  return np.where(segment_is_thing, thing_ids[np.clip(label, 0, len(thing_ids) - 1)],
                  stuff_ids[np.clip(label, 0, len(stuff_ids) - 1)])


class PanopticEvaluator:
  """PQ, SQ, RQ over all, thing and stuff categories (fractions), plus box_AP, ..., mask_AP, ... if available."""

  def __init__(self, info, workdir=None, things_only=False, boundary_ap=True):
    """`workdir`: a local path or a URL that every process reaches (PQ statistics are exchanged there). With
    `things_only` (a model that segments no stuff, as the instance CRF's labelling), `result` reports PQ, SQ and RQ
    over the thing categories only (PQ_th, SQ_th, RQ_th): over all categories they would count every stuff segment
    as missed. `boundary_ap`: the detections' Boundary AP, as InstanceEvaluator's."""
    if info.eval_panoptic_json is None:
      raise ValueError(f"dataset {info.name!r}: the eval split has no panoptic JSON, so a panoptic model cannot be "
                       "evaluated on it (config.dataset.eval_split)")
    self.info = info
    self.things_only = things_only
    self.workdir = paths.resolve(workdir) if workdir else None
    self.instances = InstanceEvaluator(info, workdir, boundary_ap=boundary_ap) if info.eval_instances_json else None
    with open(info.eval_panoptic_json) as f:
      ground_truth = json.load(f)
    self.categories = ground_truth["categories"]
    self.annotations = {a["image_id"]: a for a in ground_truth["annotations"]}
    self.PREDICTION_KEYS = ("panoptic", "segment_id", "segment_category", "segment_is_thing", "segment_valid") + (
        self.instances.PREDICTION_KEYS if self.instances else ())
    self.reset()

  def reset(self):
    self.accumulator = PQAccumulator(self.categories)
    if self.instances:
      self.instances.reset()

  def device_stats(self, predictions, batch):
    """Nothing is reduced on device: the panoptic maps go to the host."""
    del predictions, batch
    return ()

  def update(self, stats, local_predictions, local_batch):
    """Adds this process's rows of one eval batch (numpy, rows of `local_batch`)."""
    if self.instances:
      self.instances.update(stats, local_predictions, local_batch)
    p = local_predictions
    for i in np.flatnonzero(local_batch["valid_image"]):
      annotation = self.annotations[int(local_batch["image_id"][i])]
      gt_map = panoptic_io.read_panoptic_png(os.path.join(self.info.eval_panoptic_dir, annotation["file_name"]))
      pred_map = to_source_map(p["panoptic"][i], local_batch["scale"][i], local_batch["orig_size"][i])
      keep = p["segment_valid"][i] & np.isin(p["segment_id"][i], pred_map)
      category = segment_category_ids(p["segment_category"][i], p["segment_is_thing"][i], self.info)
      segments = annotation["segments_info"]
      gt_segments = {"ids": [[s["id"] for s in segments]], "category_ids": [[s["category_id"] for s in segments]],
                     "iscrowd": [[s.get("iscrowd", 0) == 1 for s in segments]], "valid": [[True] * len(segments)]}
      pred_segments = {"ids": p["segment_id"][i][None], "category_ids": category[None], "valid": keep[None]}
      self.accumulator.update(gt_map[None], gt_segments, pred_map[None], pred_segments, np.ones(1, bool))

  def _gathered_stats(self):
    """All processes' PQ statistics on process 0 (None elsewhere)."""
    stats = self.accumulator.stats
    if jax.process_count() == 1:
      return stats
    folder = self.workdir / "eval_pq_parts"
    folder.mkdir(parents=True, exist_ok=True)
    matches = lambda parts: np.concatenate(parts) if parts else np.zeros(0)
    with (folder / f"process{jax.process_index()}.npz").open("wb") as f:
      np.savez(f, tp=stats.tp, fp=stats.fp, fn=stats.fn, tp_category=matches(stats.tp_category).astype(np.int64),
               tp_iou=matches(stats.tp_iou))
    multihost.barrier("PQ_statistics_written")
    merged = None
    if jax.process_index() == 0:
      merged = panoptic.PQStats.zeros(len(self.accumulator.categories))
      for index in range(jax.process_count()):
        with (folder / f"process{index}.npz").open("rb") as f, np.load(f) as part:
          merged += panoptic.PQStats(part["tp"], part["fp"], part["fn"], [part["tp_category"]], [part["tp_iou"]])
    multihost.barrier("PQ_statistics_read")
    return merged

  def result(self):
    """Metrics on process 0 ({} elsewhere)."""
    metrics = self.instances.result() if self.instances else {}
    stats = self._gathered_stats()
    if stats is None:
      return {}
    pq = panoptic.pq_from_stats(stats, self.accumulator.categories)
    for split, suffix in _SPLITS[1:2] if self.things_only else _SPLITS:
      metrics.update({f"{name.upper()}{suffix}": pq[split][name] for name in ("pq", "sq", "rq")})
    return metrics
