"""Panoptic quality against panopticapi and hand-computed cases; COCO panoptic I/O; accumulator."""
import json
import os

import numpy as np
import pytest

from segjax.evaluation import panoptic
from segjax.evaluation import panoptic_io
from segjax.evaluation import pq_accumulator
from references import optional, requires_panopticapi

CATEGORIES = [
    {"id": 1, "name": "person", "isthing": 1},
    {"id": 2, "name": "car", "isthing": 1},
    {"id": 3, "name": "dog", "isthing": 1},  # never in gt nor predictions: excluded from averages
    {"id": 10, "name": "sky", "isthing": 0},
    {"id": 11, "name": "road", "isthing": 0},
    {"id": 12, "name": "grass", "isthing": 0},  # never in gt, predicted: false positives only
]
UNLISTED_CATEGORY = 99  # a gt category missing from CATEGORIES: counted nowhere


def _random_image(rng, index, h=48, w=64):
  """gt and pred id maps with their segments_info: things, stuff, crowd, VOID, unlisted gt ids."""
  used = {0}

  def new_id():
    while True:
      i = int(rng.integers(1, 256**3))
      if i not in used:
        used.add(i)
        return i

  def rect(m, value, min_size=6, max_size=24):
    y, x = rng.integers(0, h - min_size), rng.integers(0, w - min_size)
    sy, sx = rng.integers(min_size, max_size, size=2)
    m[y:y + sy, x:x + sx] = value

  gt, info = np.zeros((h, w), np.int64), {}
  for cat, rows in ((10, slice(0, h // 2)), (11, slice(h // 2, h))):
    gt[rows] = i = new_id()
    info[i] = (cat, 0)
  for _ in range(rng.integers(3, 7)):
    rect(gt, i := new_id())
    info[i] = (int(rng.choice([1, 2])), 0)
  for _ in range(2 if index == 0 else 1):  # image 0 has two crowd segments of one category
    rect(gt, i := new_id())
    info[i] = (1, 1)
  if index == 1:
    rect(gt, i := new_id())
    info[i] = (UNLISTED_CATEGORY, 0)
  rect(gt, 0)  # VOID
  unlisted = new_id()
  rect(gt, unlisted, max_size=10)
  present = set(np.unique(gt).tolist())
  gt_segments = [{"id": i, "category_id": c, "iscrowd": z, "area": int((gt == i).sum())}
                 for i, (c, z) in info.items() if i in present]
  # Listed but absent from the PNG: a false negative.
  gt_segments.append({"id": new_id(), "category_id": 2, "iscrowd": 0, "area": 0})

  # Prediction: gt segments under new ids (some shifted, some relabelled), plus extra segments.
  pred, pred_cat = np.zeros((h, w), np.int64), {}
  for i in [i for i in [*info, 0, unlisted] if i in present]:  # in the order gt was painted
    cat = info.get(i, (int(rng.choice([1, 2, 10, 12])), 0))[0]
    if cat == UNLISTED_CATEGORY or rng.random() < 0.2:
      cat = {1: 2, 2: 1, 10: 12, 11: 10, 12: 10, UNLISTED_CATEGORY: 1}[cat]
    mask = np.roll(gt == i, rng.integers(-2, 3, size=2), axis=(0, 1))
    if rng.random() < 0.1:
      continue
    pred[mask] = j = new_id()
    pred_cat[j] = cat
  for _ in range(3):
    rect(pred, j := new_id(), max_size=16)
    pred_cat[j] = int(rng.choice([1, 2, 10, 11, 12]))
  rect(pred, 0, max_size=12)  # unlabelled predicted pixels
  pred_segments = [{"id": j, "category_id": pred_cat[j]} for j in np.unique(pred).tolist() if j]
  return gt, gt_segments, pred, pred_segments


def _write(folder, json_name, images):
  """COCO panoptic JSON + PNG folder for [(image_id, id_map, segments_info)]."""
  png_folder = os.path.join(folder, json_name[:-len(".json")])
  os.makedirs(png_folder, exist_ok=True)
  annotations = []
  for image_id, id_map, segments in images:
    file_name = f"{image_id:012d}.png"
    panoptic_io.write_panoptic_png(os.path.join(png_folder, file_name), id_map)
    annotations.append({"image_id": image_id, "file_name": file_name, "segments_info": segments})
  data = {"annotations": annotations, "categories": CATEGORIES}
  data["images"] = [{"id": a["image_id"], "file_name": a["file_name"]} for a in annotations]
  path = os.path.join(folder, json_name)
  with open(path, "w") as f:
    json.dump(data, f)
  return path


def _edge_image():
  """A 48x64 image of crowd / VOID corner cases; the comments give panopticapi's verdict."""
  gt = np.full((48, 64), 100)  # stuff, cat 10
  gt[0:10, 0:10], gt[0:10, 20:30], gt[0:10, 40:50] = 201, 202, 203  # crowds: cat 1, cat 1, cat 2
  gt[20:30, 0:30] = 0  # VOID
  gt[20:30, 40:60] = 999  # not in segments_info
  gt[35:45, 0:20] = 300  # thing, cat 2
  gt_segments = [{"id": i, "category_id": c, "iscrowd": z, "area": int((gt == i).sum())}
                 for i, c, z in ((100, 10, 0), (201, 1, 1), (202, 1, 1), (203, 2, 1), (300, 2, 0))]
  pred = np.full((48, 64), 5000)  # cat 10: TP
  pred[0:10, 0:5], pred[0:10, 5:10] = 5001, 5008  # cat 1 on the first crowd of cat 1: 2 FP (only
  # the last crowd listed counts)
  pred[0:10, 20:30] = 5002  # cat 1 on the last crowd of cat 1: ignored
  pred[0:5, 40:50] = 5003  # cat 1 on the crowd of cat 2: FP
  pred[20:30, 25:35] = 5004  # cat 2, exactly half on VOID: FP (ignored needs > 1/2)
  # cat 2, 50 px on its crowd + 30 on VOID of 120 (each alone < 1/2): ignored
  pred[5:10, 40:50] = pred[22:25, 0:10] = pred[46:48, 40:60] = 5005
  pred[20:30, 40:60] = 5006  # cat 1 on the unlisted gt id: FP
  pred[35:45, 2:22] = 5007  # cat 2 on the thing: IoU 180 / 220, TP
  pred[46:48, 0:10] = 0
  cats = {5000: 10, 5001: 1, 5002: 1, 5003: 1, 5004: 2, 5005: 2, 5006: 1, 5007: 2, 5008: 1}
  pred_segments = [{"id": j, "category_id": c} for j, c in cats.items()]
  return gt, gt_segments, pred, pred_segments


def test_image_pq_stats_edge_cases():
  gt, gt_segments, pred, pred_segments = _edge_image()
  arrays = lambda segs: {"id": np.array([s["id"] for s in segs]),
                         "category_id": np.array([s["category_id"] for s in segs]),
                         "iscrowd": np.array([s.get("iscrowd", 0) for s in segs]), "area": None}
  category_ids = np.array([c["id"] for c in CATEGORIES])
  stats = panoptic.image_pq_stats(gt, arrays(gt_segments), pred, arrays(pred_segments),
                                  category_ids, panoptic.OFFSET, "edge")
  # Slots: categories 1, 2, 3, 10, 11, 12, then the one for unknown gt categories.
  np.testing.assert_array_equal(stats.tp, [0, 1, 0, 1, 0, 0, 0])
  np.testing.assert_array_equal(stats.fp, [4, 1, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(stats.fn, [0] * 7)
  # Stuff: gt 3072 - 1000 = 2072 px; pred 5000 covers 1942 of them, 220 VOID and 20 of the thing.
  stuff_iou = 1942 / (2182 + 2072 - 1942 - 220)
  np.testing.assert_allclose(np.concatenate(stats.tp_iou), [stuff_iou, 180 / 220], rtol=1e-12)


@pytest.fixture(scope="module")
def random_split(tmp_path_factory):
  rng = np.random.default_rng(0)
  images = [_random_image(rng, index) for index in range(7)] + [_edge_image()]
  folder = str(tmp_path_factory.mktemp("panoptic"))
  gt_json = _write(folder, "gt.json", [(k + 1, g, gs) for k, (g, gs, _, _) in enumerate(images)])
  pred_json = _write(folder, "pred.json",
                     [(k + 1, p, ps) for k, (_, _, p, ps) in enumerate(images)])
  return gt_json, pred_json, images


def _assert_results_close(got, want, tol):
  assert set(got) == {"All", "Things", "Stuff", "per_class"} == set(want)
  for name in ("All", "Things", "Stuff"):
    assert got[name]["n"] == want[name]["n"], name
    for m in ("pq", "sq", "rq"):
      assert abs(got[name][m] - want[name][m]) <= tol, (name, m)
  assert set(got["per_class"]) == set(want["per_class"])
  for c, r in want["per_class"].items():
    for m in ("pq", "sq", "rq"):
      assert abs(got["per_class"][c][m] - r[m]) <= tol, (c, m)


@requires_panopticapi
def test_pq_compute_matches_panopticapi(random_split, monkeypatch):
  evaluation = optional("panopticapi.evaluation")
  gt_json, pred_json, _ = random_split
  # panopticapi's own per-image loop and averaging, run in this process instead of a forked pool
  # (forking a process that may hold JAX threads risks a deadlock).
  monkeypatch.setattr(evaluation, "pq_compute_multi_core",
                      lambda pairs, *args: evaluation.pq_compute_single_core(0, pairs, *args))
  want = evaluation.pq_compute(gt_json, pred_json)
  got = panoptic.pq_compute(gt_json, pred_json, num_workers=1)
  _assert_results_close(got, want, tol=1e-9)
  # The data exercise the cases: a category without segments is left out, partial quality.
  assert got["All"]["n"] == 5 and got["Things"]["n"] == 2 and got["Stuff"]["n"] == 3
  assert got["per_class"][3] == {"pq": 0.0, "sq": 0.0, "rq": 0.0}
  assert 0.2 < got["All"]["pq"] < 0.9 and got["per_class"][12]["pq"] == 0.0


def test_pq_compute_independent_of_num_workers(random_split):
  gt_json, pred_json, _ = random_split
  assert (panoptic.pq_compute(gt_json, pred_json, num_workers=1)
          == panoptic.pq_compute(gt_json, pred_json, num_workers=2))


def _hand_case():
  """Two 5x12 / 4x12 images whose PQ is worked out by hand below."""
  # Image 1: A (cat 1) cols 0-3, B (stuff 3) cols 4-7, VOID cols 8-9 and row 4,
  # crowd C (cat 2) cols 10-11.
  gt1 = np.zeros((5, 12), np.int64)
  gt1[:4, 0:4], gt1[:4, 4:8], gt1[:4, 10:12] = 1, 2, 3
  gt1_segments = [{"id": 1, "category_id": 1, "iscrowd": 0, "area": 16},
                  {"id": 2, "category_id": 3, "iscrowd": 0, "area": 16},
                  {"id": 3, "category_id": 2, "iscrowd": 1, "area": 8}]
  pred1 = np.zeros((5, 12), np.int64)
  # cat 1: 12 px on A + 8 px on VOID -> IoU 12/(20+16-12-8) = .75 (.5 if VOID stayed in the union)
  pred1[:4, 0:3] = pred1[:4, 8:10] = 7
  pred1[:4, 3:8] = 8  # cat 3: 16 px on B, 4 on A -> IoU 16/(20+16-16) = .8
  pred1[:4, 10:12] = 9  # cat 2, all on the crowd region of cat 2: ignored
  pred1[4, :] = 5  # cat 1, all on VOID: ignored
  pred1_segments = [{"id": 7, "category_id": 1}, {"id": 8, "category_id": 3},
                    {"id": 9, "category_id": 2}, {"id": 5, "category_id": 1}]
  # Image 2: D (cat 2) cols 0-5, E (stuff 3) cols 6-11.
  gt2 = np.zeros((4, 12), np.int64)
  gt2[:, :6], gt2[:, 6:] = 4, 6
  gt2_segments = [{"id": 4, "category_id": 2, "iscrowd": 0, "area": 24},
                  {"id": 6, "category_id": 3, "iscrowd": 0, "area": 24}]
  pred2 = np.zeros((4, 12), np.int64)
  pred2[:, :6] = 11  # cat 1 on D (cat 2): FP for 1, FN for 2
  pred2[:, 6:9] = 12  # cat 3, IoU 12/24 = .5, not > .5: FP and FN for 3
  pred2_segments = [{"id": 11, "category_id": 1}, {"id": 12, "category_id": 3}]
  categories = [{"id": 1, "isthing": 1}, {"id": 2, "isthing": 1}, {"id": 3, "isthing": 0},
                {"id": 4, "isthing": 0}]
  return (categories, [(1, gt1, gt1_segments), (2, gt2, gt2_segments)],
          [(1, pred1, pred1_segments), (2, pred2, pred2_segments)])


# cat 1: TP .75, FP 1; cat 2: FN 1; cat 3: TP .8, FP 1, FN 1; cat 4: no segments.
HAND_PER_CLASS = {1: {"pq": .75 / 1.5, "sq": .75, "rq": 1 / 1.5},
                  2: {"pq": 0.0, "sq": 0.0, "rq": 0.0},
                  3: {"pq": .8 / 2, "sq": .8, "rq": 1 / 2}, 4: {"pq": 0.0, "sq": 0.0, "rq": 0.0}}
HAND_RESULTS = {
    "All": {"pq": (.5 + .4) / 3, "sq": (.75 + .8) / 3, "rq": (2 / 3 + .5) / 3, "n": 3},
    "Things": {"pq": .5 / 2, "sq": .75 / 2, "rq": 2 / 3 / 2, "n": 2},
    "Stuff": {"pq": .4, "sq": .8, "rq": .5, "n": 1},
    "per_class": HAND_PER_CLASS,
}


def _write_case(folder, categories, gt_images, pred_images):
  gt_json = _write(folder, "gt.json", gt_images)
  pred_json = _write(folder, "pred.json", pred_images)
  for path in (gt_json, pred_json):
    with open(path) as f:
      data = json.load(f)
    data["categories"] = categories
    with open(path, "w") as f:
      json.dump(data, f)
  return gt_json, pred_json


def test_pq_compute_hand_computed(tmp_path):
  gt_json, pred_json = _write_case(str(tmp_path), *_hand_case())
  _assert_results_close(panoptic.pq_compute(gt_json, pred_json, num_workers=1), HAND_RESULTS, 1e-12)
  # Without "area" in the gt segments_info, pixel counts stand in (panopticapi raises KeyError).
  categories, gt_images, pred_images = _hand_case()
  for _, _, segments in gt_images:
    for segment in segments:
      del segment["area"]
  gt_json, pred_json = _write_case(str(tmp_path / "no_area"), categories, gt_images, pred_images)
  _assert_results_close(panoptic.pq_compute(gt_json, pred_json, num_workers=1), HAND_RESULTS, 1e-12)


def test_no_category_to_average_gives_zero():
  results = pq_accumulator.PQAccumulator([{"id": 1, "isthing": 1}]).result()
  assert results == {"All": {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 0},
                     "Things": {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 0},
                     "Stuff": {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 0},
                     "per_class": {1: {"pq": 0.0, "sq": 0.0, "rq": 0.0}}}


@pytest.mark.parametrize("defect, message", [
    ("png_not_json", r"segment id\(s\) \[8\] are in the PNG but not in segments_info"),
    ("json_not_png", r"segment id\(s\) \[77\] are in segments_info but not in the PNG"),
    ("unknown_category", r"segment id\(s\) \[8\] have unknown category_id\(s\) \[42\]"),
    ("duplicate", r"prediction segments_info repeats segment id\(s\) \[7\]"),
])
def test_pq_compute_bad_prediction_errors(tmp_path, defect, message):
  categories, gt_images, pred_images = _hand_case()
  segments = pred_images[0][2]
  if defect == "png_not_json":
    segments.pop(1)
  elif defect == "json_not_png":
    segments.append({"id": 77, "category_id": 1})
  elif defect == "duplicate":
    segments.append({"id": 7, "category_id": 2})
  else:
    segments[1]["category_id"] = 42
  gt_json, pred_json = _write_case(str(tmp_path), categories, gt_images, pred_images)
  with pytest.raises(ValueError, match=message) as error:
    panoptic.pq_compute(gt_json, pred_json, num_workers=1)
  assert "pred.json" in str(error.value) and "000000000001.png (image_id 1)" in str(error.value)


def test_pq_compute_missing_prediction_and_shape_errors(tmp_path):
  categories, gt_images, pred_images = _hand_case()
  gt_json, pred_json = _write_case(str(tmp_path), categories, gt_images, pred_images[:1])
  with pytest.raises(ValueError, match=r"no prediction for image_id\(s\) \[2\]"):
    panoptic.pq_compute(gt_json, pred_json, num_workers=1)
  pred_images[1] = (2, pred_images[1][1][:, :10], pred_images[1][2])
  gt_json, pred_json = _write_case(str(tmp_path), categories, gt_images, pred_images)
  with pytest.raises(ValueError,
                     match=r"image_id 2\): prediction has shape \(4, 10\), ground truth \(4, 12\)"):
    panoptic.pq_compute(gt_json, pred_json, num_workers=1)


def _padded(segment_lists, fields, size):
  """[B, size] arrays of the given fields plus "valid" from per-image segments_info lists."""
  out = {f: np.full((len(segment_lists), size), -5, np.int32) for f in fields}
  out["valid"] = np.zeros((len(segment_lists), size), bool)
  for b, segments in enumerate(segment_lists):
    for s, seg in enumerate(segments):
      for f in fields:
        out[f][b, s] = seg[{"ids": "id", "category_ids": "category_id", "iscrowd": "iscrowd"}[f]]
      out["valid"][b, s] = True
  return out


def test_accumulator_equals_pq_compute(random_split):
  gt_json, pred_json, images = random_split
  acc = pq_accumulator.PQAccumulator(CATEGORIES)
  batch = 4
  for start in range(0, len(images), batch):
    chunk = images[start:start + batch]
    pad = batch - len(chunk)
    chunk = chunk + [images[0]] * pad  # padding images, masked out by image_valid
    acc.update(np.stack([c[0] for c in chunk]).astype(np.int32),
               _padded([c[1] for c in chunk], ("ids", "category_ids", "iscrowd"), 16),
               np.stack([c[2] for c in chunk]).astype(np.int32),
               _padded([c[3] for c in chunk], ("ids", "category_ids"), 24),
               np.arange(batch) < batch - pad)
  assert acc.result() == panoptic.pq_compute(gt_json, pred_json, num_workers=1)


def test_accumulator_hand_computed_and_errors():
  categories, gt_images, pred_images = _hand_case()
  acc = pq_accumulator.PQAccumulator(categories)
  for (_, gt, gs), (_, pred, ps) in zip(gt_images, pred_images):
    acc.update(gt[None], _padded([gs], ("ids", "category_ids", "iscrowd"), 4), pred[None],
               _padded([ps], ("ids", "category_ids"), 5), [True])
  _assert_results_close(acc.result(), HAND_RESULTS, 1e-12)

  (_, gt, gs), (_, pred, ps) = gt_images[1], pred_images[1]
  gt_segments = _padded([gs], ("ids", "category_ids", "iscrowd"), 4)
  with pytest.raises(ValueError, match=r"pred_ids must lie in \[0, offset=10\)"):
    pq_accumulator.PQAccumulator(categories, offset=10).update(
        gt[None], gt_segments, pred[None], _padded([ps], ("ids", "category_ids"), 5), [True])
  with pytest.raises(ValueError,
                     match=r"batch element 0 \(image 2\): segment id\(s\) \[12\] are in the PNG"):
    acc.update(gt[None], gt_segments, pred[None], _padded([ps[:1]], ("ids", "category_ids"), 5),
               [True])
  with pytest.raises(ValueError, match="gt_ids and pred_ids must have one shape"):
    acc.update(gt[None], gt_segments, pred[None, :, :5], _padded([ps], ("ids", "category_ids"), 5),
               [True])


@requires_panopticapi
def test_rgb_id_conversion_matches_panopticapi():
  utils = optional("panopticapi.utils")
  rng = np.random.default_rng(1)
  ids = rng.integers(0, 256**3, size=(5, 7))
  rgb = panoptic_io.id_to_rgb(ids)
  np.testing.assert_array_equal(rgb, utils.id2rgb(ids))
  np.testing.assert_array_equal(panoptic_io.rgb_to_id(rgb), utils.rgb2id(rgb))
  np.testing.assert_array_equal(panoptic_io.rgb_to_id(rgb), ids)


def test_png_round_trip_and_errors(tmp_path):
  ids = np.array([[0, 1, 255, 256], [65535, 65536, 256**3 - 1, 12345678]])
  path = str(tmp_path / "x.png")
  panoptic_io.write_panoptic_png(path, ids)
  np.testing.assert_array_equal(panoptic_io.read_panoptic_png(path), ids)
  assert panoptic_io.rgb_to_id(panoptic_io.id_to_rgb(ids))[1, 3] == 188 * 256**2 + 97 * 256 + 78
  with pytest.raises(ValueError, match=r"id_map values must lie in \[0, 16777215\]"):
    panoptic_io.id_to_rgb(np.array([[256**3]]))
  with pytest.raises(ValueError, match="must end in .png"):
    panoptic_io.write_panoptic_png(str(tmp_path / "x.jpg"), ids)


def test_save_panoptic_predictions_is_read_by_pq_compute(tmp_path):
  categories, gt_images, pred_images = _hand_case()
  gt_json, _ = _write_case(str(tmp_path), categories, gt_images, pred_images)
  json_path, folder = panoptic_io.save_panoptic_predictions(
      str(tmp_path / "out"), "preds.json",
      [(image_id, f"{image_id}.png", np.int32(m), s) for image_id, m, s in pred_images], categories)
  assert json_path == str(tmp_path / "out" / "preds.json")
  assert folder == str(tmp_path / "out" / "preds")
  with open(json_path) as f:
    data = json.load(f)
  assert data["categories"] == categories
  assert data["annotations"][1] == {"image_id": 2, "file_name": "2.png", "segments_info": [
      {"id": 11, "category_id": 1}, {"id": 12, "category_id": 3}]}
  np.testing.assert_array_equal(panoptic_io.read_panoptic_png(os.path.join(folder, "2.png")),
                                pred_images[1][1])
  _assert_results_close(panoptic.pq_compute(gt_json, json_path, num_workers=1), HAND_RESULTS, 1e-12)
