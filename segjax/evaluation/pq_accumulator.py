"""Panoptic quality accumulated over batches of padded (static-shape) model outputs.

Same statistics as `panoptic.pq_compute` on the same data written in the COCO panoptic format
(gt areas taken as pixel counts), without writing files: call `update` per eval batch, `result` at
the end.
"""
import numpy as np

from segjax.evaluation import panoptic


class PQAccumulator:
  """Accumulates PQ statistics; `result()` gives `pq_compute`'s dict.

  Attributes:
    categories: the COCO "categories" list ({"id", "isthing", ...}) that results average over.
    offset: bound on segment ids, 0 <= id < offset (256**3 for ids decoded from COCO PNGs).
  """

  def __init__(self, categories, offset=panoptic.OFFSET):
    self.categories = list({c["id"]: c for c in categories}.values())
    self.offset = int(offset)
    if not 0 < self.offset <= 2**31:
      raise ValueError(f"offset must lie in (0, 2**31] so that gt_id * offset + pred_id fits "
                       f"int64, got {offset}")
    self._category_ids = np.array([c["id"] for c in self.categories], np.int64)
    self._stats = panoptic.PQStats.zeros(len(self.categories))
    self._num_images = 0

  def update(self, gt_ids, gt_segments, pred_ids, pred_segments, image_valid):
    """Adds a batch.

    Args:
      gt_ids: int [B, H, W] gt segment ids (0 = VOID).
      gt_segments: dict of [B, S] arrays: "ids", "category_ids", "iscrowd", "valid" (bool; padded
        slots False).
      pred_ids: int [B, H, W] predicted segment ids (0 = no segment).
      pred_segments: dict of [B, T] arrays: "ids", "category_ids", "valid".
      image_valid: bool [B]; False for padding images of the last batch.
    """
    gt_ids, pred_ids = np.asarray(gt_ids), np.asarray(pred_ids)
    image_valid = np.asarray(image_valid, bool)
    gt = {k: np.asarray(gt_segments[k]) for k in ("ids", "category_ids", "iscrowd", "valid")}
    pred = {k: np.asarray(pred_segments[k]) for k in ("ids", "category_ids", "valid")}
    if gt_ids.ndim != 3 or pred_ids.shape != gt_ids.shape:
      raise ValueError(f"gt_ids and pred_ids must have one shape [B, H, W], got {gt_ids.shape} and "
                       f"{pred_ids.shape}")
    batch = gt_ids.shape[0]
    if image_valid.shape != (batch,):
      raise ValueError(f"image_valid must have shape ({batch},), got {image_valid.shape}")
    for name, fields in (("gt_segments", gt), ("pred_segments", pred)):
      shapes = {k: v.shape for k, v in fields.items()}
      ids = fields["ids"]
      if len(set(shapes.values())) != 1 or ids.ndim != 2 or len(ids) != batch:
        raise ValueError(f"{name} arrays must share one shape [{batch}, S], got {shapes}")
    for name, ids in (("gt_ids", gt_ids), ("pred_ids", pred_ids)):
      if ids.size and (ids.min() < 0 or ids.max() >= self.offset):
        raise ValueError(f"{name} must lie in [0, offset={self.offset}), got range "
                         f"[{ids.min()}, {ids.max()}]")

    for b in np.flatnonzero(image_valid):
      gv, pv = gt["valid"][b].astype(bool), pred["valid"][b].astype(bool)
      gt_b = {"id": gt["ids"][b][gv].astype(np.int64),
              "category_id": gt["category_ids"][b][gv].astype(np.int64),
              "iscrowd": gt["iscrowd"][b][gv].astype(bool), "area": None}
      pred_b = {"id": pred["ids"][b][pv].astype(np.int64),
                "category_id": pred["category_ids"][b][pv].astype(np.int64)}
      where = f"batch element {b} (image {self._num_images})"
      self._stats += panoptic.image_pq_stats(gt_ids[b], gt_b, pred_ids[b], pred_b,
                                             self._category_ids, self.offset, where)
      self._num_images += 1

  @property
  def stats(self) -> panoptic.PQStats:
    """The statistics so far (to sum the accumulators of several processes)."""
    return self._stats

  def result(self):
    """{"All" | "Things" | "Stuff": {"pq", "sq", "rq", "n"}, "per_class": {...}} as pq_compute."""
    return panoptic.pq_from_stats(self._stats, self.categories)
