"""Panoptic quality (Kirillov et al., "Panoptic Segmentation", CVPR 2019), panopticapi semantics.

Per image and category (panopticapi/evaluation.py, pq_compute_single_core):
  * a gt segment and a predicted segment of the same category match when IoU > 0.5, where the
    union leaves out the predicted pixels lying on VOID (gt id 0); matches are unique because two
    segments of one image never overlap;
  * gt segments not listed in segments_info are never matched nor counted; crowd gt segments are
    never matched nor false negatives;
  * an unmatched predicted segment is not a false positive when more than half of its area lies on
    VOID plus on the crowd segment of its category (the last one listed, as in panopticapi).
PQ = sum(IoU of matches) / (TP + FP/2 + FN/2), SQ = sum(IoU) / TP, RQ = TP / (TP + FP/2 + FN/2)
(eq. 1-2 of the paper), averaged over the categories with TP + FP + FN > 0.

Differences from panopticapi, all on input it mishandles: a duplicated segment id in one image's
segments_info raises ValueError; a split with no category to average gives 0.0 (n = 0) instead of
ZeroDivisionError; a gt segment without "area" uses its pixel count. Sums of IoU are exact
(math.fsum), so results do not depend on `num_workers` or image order.
"""
import dataclasses
import json
import math
import multiprocessing
import os

import numpy as np

from segjax.evaluation import panoptic_io

OFFSET = 256**3  # panopticapi's key multiplier: joint key = gt_id * OFFSET + pred_id
VOID = 0


@dataclasses.dataclass
class PQStats:
  """Per-category sums over images; slot K (past the last category) holds unknown gt categories.

  Attributes:
    tp, fp, fn: int64 [K + 1] counts.
    tp_category: list of int arrays, category index of each match.
    tp_iou: list of float64 arrays, IoU of each match.
  """
  tp: np.ndarray
  fp: np.ndarray
  fn: np.ndarray
  tp_category: list
  tp_iou: list

  @classmethod
  def zeros(cls, num_categories):
    z = lambda: np.zeros(num_categories + 1, np.int64)
    return cls(z(), z(), z(), [], [])

  def __iadd__(self, other):
    self.tp += other.tp
    self.fp += other.fp
    self.fn += other.fn
    self.tp_category += other.tp_category
    self.tp_iou += other.tp_iou
    return self

  def iou_sums(self):
    """Exactly rounded sum of the matched IoUs per category, float64 [K + 1]."""
    sums = np.zeros(len(self.tp))
    if self.tp_iou:
      category = np.concatenate(self.tp_category)
      iou = np.concatenate(self.tp_iou)
      for k in np.unique(category):
        sums[k] = math.fsum(iou[category == k])
    return sums


def _index_of(values, keys):
  """Position of each of values in the 1-d array keys (distinct), -1 where absent."""
  if len(keys) == 0:
    return np.full(len(values), -1)
  order = np.argsort(keys)
  pos = np.searchsorted(keys[order], values).clip(max=len(keys) - 1)
  return np.where(keys[order][pos] == values, order[pos], -1)


def image_pq_stats(gt_map, gt_segments, pred_map, pred_segments, category_ids, offset, where):
  """PQ statistics of one image.

  Args:
    gt_map: int [H, W] gt segment ids, >= 0.
    gt_segments: dict of 1-d arrays over the G listed gt segments: "id", "category_id",
      "iscrowd" (bool) and "area" (int, or None to use pixel counts).
    pred_map: int [H, W] predicted segment ids, >= 0.
    pred_segments: dict of 1-d arrays over the P listed predicted segments: "id", "category_id".
    category_ids: int [K], the evaluated categories; gt segments of other categories are
      counted in an extra slot K that results ignore, predicted ones raise ValueError.
    offset: exceeds every predicted id; the joint key gt_id * offset + pred_id must fit int64.
    where: names the image in error messages.

  Returns:
    PQStats of this image.
  """
  if gt_map.shape != pred_map.shape:
    raise ValueError(f"{where}: prediction has shape {pred_map.shape}, ground truth {gt_map.shape}")
  gt_id, pred_id = gt_segments["id"], pred_segments["id"]
  for name, ids in (("ground truth", gt_id), ("prediction", pred_id)):
    uniq, count = np.unique(ids, return_counts=True)
    if (count > 1).any():
      raise ValueError(f"{where}: {name} segments_info repeats segment id(s) "
                       f"{uniq[count > 1].tolist()}")
  num_categories, num_pred = len(category_ids), len(pred_id)
  gt_category = _index_of(gt_segments["category_id"], category_ids)
  gt_category[gt_category < 0] = num_categories
  pred_category = _index_of(pred_segments["category_id"], category_ids)

  # Intersection of every (gt id, pred id) pair present in the image, as panopticapi's gt_pred_map.
  key = gt_map.astype(np.int64) * offset + pred_map.astype(np.int64)
  key, intersection = np.unique(key, return_counts=True)
  pair_gt, pair_pred = key // offset, key % offset
  gi, pi = _index_of(pair_gt, gt_id), _index_of(pair_pred, pred_id)

  # Prediction sanity checks (panopticapi's KeyErrors).
  not_listed = pair_pred[(pi < 0) & (pair_pred != VOID)]
  if len(not_listed):
    raise ValueError(f"{where}: segment id(s) {np.unique(not_listed).tolist()} are in the PNG but "
                     "not in segments_info")
  pred_area = np.bincount(pi[pi >= 0], intersection[pi >= 0], minlength=num_pred).astype(np.int64)
  if (pred_area == 0).any():
    raise ValueError(f"{where}: segment id(s) {pred_id[pred_area == 0].tolist()} are in "
                     "segments_info but not in the PNG")
  if (pred_category < 0).any():
    raise ValueError(f"{where}: segment id(s) {pred_id[pred_category < 0].tolist()} have unknown "
                     f"category_id(s) {pred_segments['category_id'][pred_category < 0].tolist()}")

  iscrowd = gt_segments["iscrowd"].astype(bool)
  gt_area = gt_segments["area"]
  if gt_area is None:
    listed = gi >= 0
    gt_area = np.bincount(gi[listed], intersection[listed], minlength=len(gt_id)).astype(np.int64)
  on_void = (pair_gt == VOID) & (pi >= 0)
  void_area = np.bincount(pi[on_void], intersection[on_void], minlength=num_pred).astype(np.int64)

  # Matches: same category, gt listed and not crowd, IoU > 0.5 with the union leaving out VOID.
  both = (gi >= 0) & (pi >= 0)
  g, p, inter = gi[both], pi[both], intersection[both]
  candidate = (gt_category[g] == pred_category[p]) & ~iscrowd[g]
  with np.errstate(divide="ignore", invalid="ignore"):
    iou = inter / (pred_area[p] + gt_area[g] - inter - void_area[p])
  match = candidate & (iou > 0.5)
  gt_matched = np.zeros(len(gt_id), bool)
  gt_matched[g[match]] = True
  pred_matched = np.zeros(num_pred, bool)
  pred_matched[p[match]] = True

  # Unmatched predictions mostly on VOID + the crowd segment of their category are ignored.
  crowd = np.flatnonzero(iscrowd)[::-1]  # reversed: np.unique's first index is then the last listed
  crowd_category, first = np.unique(gt_category[crowd], return_index=True)
  crowd_of_category = np.full(num_categories + 1, -1)
  crowd_of_category[crowd_category] = crowd[first]
  on_crowd = g == crowd_of_category[pred_category[p]]
  crowd_area = np.bincount(p[on_crowd], inter[on_crowd], minlength=num_pred).astype(np.int64)
  ignored_area = void_area + crowd_area
  fp = ~pred_matched & ~(ignored_area / pred_area > 0.5)
  fn = ~gt_matched & ~iscrowd

  count = lambda c: np.bincount(c, minlength=num_categories + 1)
  return PQStats(tp=count(gt_category[g[match]]), fp=count(pred_category[fp]),
                 fn=count(gt_category[fn]), tp_category=[gt_category[g[match]]],
                 tp_iou=[iou[match]])


def pq_from_stats(stats, categories):
  """panopticapi's result dict from PQStats and the gt "categories" list ({"id", "isthing"})."""
  iou_sum = stats.iou_sums()
  per_class = {}
  for k, cat in enumerate(categories):
    tp, fp, fn = int(stats.tp[k]), int(stats.fp[k]), int(stats.fn[k])
    if tp + fp + fn == 0:
      per_class[cat["id"]] = {"pq": 0.0, "sq": 0.0, "rq": 0.0}
      continue
    denominator = tp + 0.5 * fp + 0.5 * fn
    per_class[cat["id"]] = {"pq": iou_sum[k] / denominator,
                            "sq": iou_sum[k] / tp if tp else 0.0, "rq": tp / denominator}
  results = {}
  for name, isthing in (("All", None), ("Things", True), ("Stuff", False)):
    ks = [k for k, cat in enumerate(categories)
          if (isthing is None or (cat["isthing"] == 1) == isthing)
          and stats.tp[k] + stats.fp[k] + stats.fn[k] > 0]
    n = len(ks)
    mean = lambda m: float(sum(per_class[categories[k]["id"]][m] for k in ks) / n) if n else 0.0
    results[name] = {"pq": mean("pq"), "sq": mean("sq"), "rq": mean("rq"), "n": n}
  results["per_class"] = {c: {m: float(v) for m, v in r.items()} for c, r in per_class.items()}
  return results


def _segment_arrays(segments_info):
  """image_pq_stats' segment arrays from a COCO segments_info list."""
  areas = [s.get("area") for s in segments_info]
  return {"id": np.array([s["id"] for s in segments_info], np.int64),
          "category_id": np.array([s["category_id"] for s in segments_info], np.int64),
          "iscrowd": np.array([s.get("iscrowd", 0) == 1 for s in segments_info], bool),
          "area": None if None in areas else np.array(areas, np.int64)}


def _pq_stats_of_images(pairs, gt_folder, pred_folder, pred_json_file, category_ids):
  """PQStats summed over (gt annotation, pred annotation) pairs, reading their PNGs."""
  stats = PQStats.zeros(len(category_ids))
  for gt_ann, pred_ann in pairs:
    pred_file = os.path.join(pred_folder, pred_ann["file_name"])
    where = f"{pred_json_file}, {pred_file} (image_id {gt_ann['image_id']})"
    gt_map = panoptic_io.read_panoptic_png(os.path.join(gt_folder, gt_ann["file_name"]))
    pred_map = panoptic_io.read_panoptic_png(pred_file)
    stats += image_pq_stats(gt_map, _segment_arrays(gt_ann["segments_info"]), pred_map,
                            _segment_arrays(pred_ann["segments_info"]), category_ids, OFFSET, where)
  return stats


def _pq_stats_of_chunk(args):
  return _pq_stats_of_images(*args)


def pq_compute(gt_json_file, pred_json_file, gt_folder=None, pred_folder=None, num_workers=None):
  """Panoptic quality of COCO panoptic predictions, as panopticapi.evaluation.pq_compute.

  Args:
    gt_json_file, pred_json_file: COCO panoptic JSON files.
    gt_folder, pred_folder: folders of the PNGs; default: the JSON path without ".json".
    num_workers: processes reading and matching images; default min(cpu_count, 8); 1 runs inline.

  Returns:
    {"All" | "Things" | "Stuff": {"pq", "sq", "rq", "n"},
     "per_class": {category_id: {"pq", "sq", "rq"}}}, fractions in [0, 1]; per_class holds every
    gt category (0.0 for those without segments).
  """
  gt_json_file, pred_json_file = os.fspath(gt_json_file), os.fspath(pred_json_file)
  with open(gt_json_file) as f:
    gt_json = json.load(f)
  with open(pred_json_file) as f:
    pred_json = json.load(f)
  strip = lambda path: path[:-len(".json")] if path.endswith(".json") else path
  gt_folder = strip(gt_json_file) if gt_folder is None else gt_folder
  pred_folder = strip(pred_json_file) if pred_folder is None else pred_folder
  for folder in (gt_folder, pred_folder):
    if not os.path.isdir(folder):
      raise FileNotFoundError(f"segmentation folder {folder} does not exist")
  categories = list({c["id"]: c for c in gt_json["categories"]}.values())

  pred_annotations = {a["image_id"]: a for a in pred_json["annotations"]}
  missing = [a["image_id"] for a in gt_json["annotations"]
             if a["image_id"] not in pred_annotations]
  if missing:
    raise ValueError(f"{pred_json_file} has no prediction for image_id(s) {missing[:10]}"
                     + (f" and {len(missing) - 10} more" if len(missing) > 10 else ""))
  pairs = [(a, pred_annotations[a["image_id"]]) for a in gt_json["annotations"]]

  if num_workers is None:
    num_workers = min(os.cpu_count() or 1, 8)
  num_chunks = min(len(pairs), 4 * num_workers)
  category_ids = np.array([c["id"] for c in categories], np.int64)
  chunks = [(pairs[i::num_chunks], gt_folder, pred_folder, pred_json_file, category_ids)
            for i in range(num_chunks)]
  stats = PQStats.zeros(len(categories))
  if num_workers <= 1:
    for chunk in chunks:
      stats += _pq_stats_of_chunk(chunk)
  else:
    # Not fork: the caller may hold JAX's threads, which fork would copy mid-flight. The fork
    # server imports this module once, then forks each worker from its single thread.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    with context.Pool(num_workers) as pool:
      for chunk_stats in pool.imap_unordered(_pq_stats_of_chunk, chunks):
        stats += chunk_stats
  return pq_from_stats(stats, categories)
