"""coco_evaluate against pycocotools' COCOeval run by hand on hand-built result lists."""
import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools import coco as pycoco
from pycocotools import cocoeval
from pycocotools import mask as mask_util

from segjax.evaluation import coco

H, W = 128, 160
LABEL_TO_CATEGORY = {0: 1, 1: 3, 2: 5}  # contiguous labels -> sparse COCO ids; 5 has no gt
# (image_id, category_id, y0, y1, x0, x1, iscrowd): small (< 32^2), medium and large (> 96^2).
GT_OBJECTS = [
    (1, 1, 10, 30, 10, 30, 0), (1, 3, 40, 90, 20, 70, 0), (1, 1, 5, 120, 50, 150, 0),
    (2, 3, 0, 25, 0, 30, 0), (2, 1, 30, 100, 30, 110, 0), (2, 1, 100, 128, 120, 160, 1),
    (2, 3, 60, 120, 100, 150, 0),
]


def _mask(y0, y1, x0, x1):
  m = np.zeros((H, W), np.uint8)
  m[y0:y1, x0:x1] = 1
  return m


@pytest.fixture(scope="module")
def gt_file(tmp_path_factory):
  annotations = []
  for k, (image_id, cat, y0, y1, x0, x1, crowd) in enumerate(GT_OBJECTS):
    rle = mask_util.encode(np.asfortranarray(_mask(y0, y1, x0, x1)))
    rle["counts"] = rle["counts"].decode("ascii")
    annotations.append({"id": k + 1, "image_id": image_id, "category_id": cat, "iscrowd": crowd,
                        "segmentation": rle, "area": (y1 - y0) * (x1 - x0),
                        "bbox": [x0, y0, x1 - x0, y1 - y0]})
  images = [{"id": i, "height": H, "width": W, "file_name": f"{i}.jpg"} for i in (1, 2, 3)]
  data = {"images": images,
          "annotations": annotations,
          "categories": [{"id": c, "name": str(c)} for c in (1, 3, 5)]}
  path = tmp_path_factory.mktemp("coco") / "instances.json"
  path.write_text(json.dumps(data))
  return str(path)


def _perfect_detections():
  detections = {i: {"image_id": i, "boxes": [], "scores": [], "labels": [], "masks": []}
                for i in (1, 2)}
  category_to_label = {c: label for label, c in LABEL_TO_CATEGORY.items()}
  for image_id, cat, y0, y1, x0, x1, crowd in GT_OBJECTS:
    if crowd:
      continue
    d = detections[image_id]
    d["boxes"].append([x0, y0, x1, y1])
    d["scores"].append(0.9 - 0.1 * len(d["scores"]))
    d["labels"].append(category_to_label[cat])
    d["masks"].append(0.2 + 0.7 * _mask(y0, y1, x0, x1))  # probabilities: 0.9 inside, 0.2 outside
  dtypes = {"boxes": np.float32, "scores": np.float32, "labels": np.int32, "masks": np.float32}
  return [{"image_id": d["image_id"], **{k: np.asarray(d[k], t) for k, t in dtypes.items()}}
          for d in detections.values()]


def _noisy_detections(seed=0):
  """Perfect detections jittered, relabelled, duplicated, plus false positives."""
  rng = np.random.default_rng(seed)
  out = []
  for d in _perfect_detections():
    k = len(d["scores"]) + 3
    corner = rng.uniform(0, 100, (3, 2))
    extra = np.concatenate([corner, corner + rng.uniform(10, 50, (3, 2))], 1)
    boxes = np.concatenate([d["boxes"], extra]) + rng.normal(0, 4, (k, 4))
    masks = np.concatenate([d["masks"], rng.uniform(0, 1, (3, H, W))])
    masks = np.clip(masks + rng.normal(0, 0.3, masks.shape), 0, 1).astype(np.float32)
    labels = np.concatenate([d["labels"], rng.integers(0, 3, 3)]).astype(np.int32)
    labels[0] = (labels[0] + 1) % 3
    out.append({"image_id": d["image_id"], "boxes": boxes.astype(np.float32),
                "scores": rng.uniform(0.05, 1, k).astype(np.float32), "labels": labels,
                "masks": masks})
  return out


def _reference_stats(gt_file, detections, iou_type):
  """COCOeval.stats (all 12: AP and AR) on a results list built here, one detection at a time."""
  results = []
  for d in detections:
    for box, score, label, m in zip(d["boxes"], d["scores"], d["labels"], d["masks"]):
      entry = {"image_id": d["image_id"], "category_id": LABEL_TO_CATEGORY[int(label)],
               "score": float(score)}
      if iou_type == "bbox":
        x1, y1, x2, y2 = (float(v) for v in box)
        entry["bbox"] = [x1, y1, x2 - x1, y2 - y1]
      else:
        entry["segmentation"] = mask_util.encode(np.asfortranarray((m > 0.5).astype(np.uint8)))
      results.append(entry)
  with contextlib.redirect_stdout(io.StringIO()):
    coco_gt = pycoco.COCO(gt_file)
    evaluator = cocoeval.COCOeval(coco_gt, coco_gt.loadRes(results), iou_type)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
  return evaluator.stats


def test_perfect_detections_give_ap_and_ar_one(gt_file):
  metrics = coco.coco_evaluate(gt_file, _perfect_detections(), LABEL_TO_CATEGORY)
  assert set(metrics) == {f"{p}_{m}" for p in ("box", "mask") for m in coco.METRICS}
  for name, value in metrics.items():
    # AR1 allows one detection per image and category: categories 1 and 3 each have 3 objects over the two images,
    # two of them in one image, so 2 of 3 are recalled.
    assert value == pytest.approx(2 / 3 if name.endswith("_AR1") else 1.0, abs=1e-12), name


def test_noisy_detections_equal_cocoeval(gt_file):
  detections = _noisy_detections()
  metrics = coco.coco_evaluate(gt_file, detections, [1, 3, 5])  # a sequence works as the mapping
  for iou_type, prefix in (("bbox", "box"), ("segm", "mask")):
    want = _reference_stats(gt_file, detections, iou_type)
    got = [metrics[f"{prefix}_{m}"] for m in coco.METRICS]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, err_msg=iou_type)
    assert len(got) == 12
    assert 0.05 < got[0] < 0.95 and 0.05 < got[8] < 0.95  # AP and AR100: neither trivial nor perfect
    assert got[6] <= got[7] <= got[8]  # AR grows with the detections allowed per image


def test_empty_detections(gt_file):
  with contextlib.redirect_stdout(io.StringIO()):
    coco_gt = pycoco.COCO(gt_file)  # a COCO object is accepted as well as a path
  no_rows = [{"image_id": 1, "boxes": np.zeros((0, 4)), "scores": np.zeros(0),
              "labels": np.zeros(0, np.int32), "masks": np.zeros((0, H, W))}]
  for detections in ([], no_rows, [dict(no_rows[0], labels=[], scores=[])]):
    metrics = coco.coco_evaluate(coco_gt, detections, LABEL_TO_CATEGORY)
    assert metrics == {f"{p}_{m}": 0.0 for p in ("box", "mask") for m in coco.METRICS}


def test_save_coco_results_round_trip(gt_file, tmp_path):
  detections = _noisy_detections(1)
  path = str(tmp_path / "segm.json")
  results = coco.save_coco_results(path, detections, LABEL_TO_CATEGORY, "segm")
  assert len(results) == sum(len(d["scores"]) for d in detections)
  assert set(results[0]) == {"image_id", "category_id", "segmentation", "score"}
  with contextlib.redirect_stdout(io.StringIO()):
    coco_gt = pycoco.COCO(gt_file)
    evaluator = cocoeval.COCOeval(coco_gt, coco_gt.loadRes(path), "segm")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
  np.testing.assert_allclose(evaluator.stats, _reference_stats(gt_file, detections, "segm"),
                             rtol=0, atol=1e-12)
  boxes = coco.coco_results(detections[:1], LABEL_TO_CATEGORY, "bbox")
  x1, y1, x2, y2 = detections[0]["boxes"][1].astype(np.float64)
  np.testing.assert_allclose(boxes[1]["bbox"], [x1, y1, x2 - x1, y2 - y1], rtol=1e-12)


def test_bad_input_errors(gt_file):
  good = _perfect_detections()
  resized = [dict(good[0], masks=good[0]["masks"][:, :64])]
  with pytest.raises(ValueError, match=r"image 1: masks have size \(64, 160\), the ground truth "
                                       r"image is \(128, 160\)"):
    coco.coco_evaluate(gt_file, resized, LABEL_TO_CATEGORY)
  with pytest.raises(ValueError, match=r"image_id\(s\) \[7\] not in the ground truth"):
    coco.coco_evaluate(gt_file, [dict(good[0], image_id=7)], LABEL_TO_CATEGORY)
  with pytest.raises(ValueError, match=r"image 1: label\(s\) \[1\] not in label_to_category_id"):
    coco.coco_evaluate(gt_file, good, {0: 1}, iou_types=("bbox",))
  with pytest.raises(ValueError, match=r"category id\(s\) \[4\] that are not in the ground truth"):
    coco.coco_evaluate(gt_file, good, {0: 1, 1: 4, 2: 5}, iou_types=("bbox",))
  with pytest.raises(ValueError,
                     match=r"boxes \[K, 4\], got shapes \(3,\), \(3,\) \(int32\), \(3, 2\)"):
    coco.coco_evaluate(gt_file, [dict(good[0], boxes=good[0]["boxes"][:, :2])], LABEL_TO_CATEGORY)
  with pytest.raises(ValueError, match=r"lacks field\(s\) \['masks'\]"):
    coco.coco_evaluate(gt_file, [{k: v for k, v in good[0].items() if k != "masks"}],
                       LABEL_TO_CATEGORY)


def test_class_agnostic_merges_categories(gt_file):
  """Perfect masks under wrong labels: class-aware mask AP falls, class-agnostic AP stays 1; the agnostic AP of
  noisy detections equals COCOeval on a ground-truth file whose categories were merged by hand."""
  detections = _perfect_detections()
  for d in detections:
    d["labels"] = (d["labels"] + 1) % 3
  results = coco.coco_results(detections, LABEL_TO_CATEGORY, "segm")
  assert coco.evaluate_results(gt_file, results, "segm")["mask_AP"] < 0.5
  agnostic = coco.evaluate_results(*coco.class_agnostic(gt_file, results), "segm")
  assert agnostic["mask_AP"] == pytest.approx(1.0, abs=1e-12)

  noisy = coco.coco_results(_noisy_detections(1), LABEL_TO_CATEGORY, "segm")
  with open(gt_file) as f:
    data = json.load(f)
  for a in data["annotations"]:
    a["category_id"] = 7
  data["categories"] = [{"id": 7, "name": "thing"}]
  with contextlib.redirect_stdout(io.StringIO()):
    merged = pycoco.COCO()
    merged.dataset = data
    merged.createIndex()
    evaluator = cocoeval.COCOeval(merged, merged.loadRes([dict(r, category_id=7) for r in noisy]), "segm")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
  got = coco.evaluate_results(*coco.class_agnostic(gt_file, noisy), "segm")
  np.testing.assert_allclose([got[f"mask_{m}"] for m in coco.METRICS], evaluator.stats, rtol=0, atol=1e-12)
