"""The Cityscapes instance AP equals the official evaluation's.

Reference: cityscapesScripts 2.3.0 (PyPI `cityscapesscripts`, repository mcordts/cityscapesScripts), file
cityscapesscripts/evaluation/evalInstanceLevelSemanticLabeling.py, driven through its `evaluateImgLists` with an args
object on files the test writes: gtFine instanceIds PNGs and, per image, a prediction txt listing mask PNGs with their
label id and confidence.
"""
import json
import os

import numpy as np
import pytest
from PIL import Image

from references import cityscapes_eval, requires_cityscapesscripts
from segjax.data.cityscapes_instances import THING_CLASSES
from segjax.evaluation import cityscapes_instances

H, W = 48, 64


def _scene(rng):
  """(instanceIds int32 [H, W], predictions [(mask, label id, confidence)]): instances of several classes, some
  small, a car group, a caravan, void and road background; predictions near the instances, duplicates, shifted and
  grown copies, boxes over void and over the group, a caravan and an empty one, with tied confidences."""
  ids = rng.choice([7, 7, 8, 0, 4, 9], size=(H // 8, W // 8)).repeat(8, 0).repeat(8, 1).astype(np.int32)
  ids[rng.integers(0, H - 10):, :6] = 26  # a car group region
  ids[:8, -12:] = 29001  # a caravan (not evaluated)
  instances = []
  for k, label_id in enumerate(rng.choice([24, 26, 26, 33, 25, 24, 32], size=rng.integers(3, 7))):
    h, w = rng.integers(4, 18, size=2)
    y, x = rng.integers(0, H - h), rng.integers(0, W - w)
    value = int(label_id) * 1000 + k
    ids[y:y + h, x:x + w] = value
    instances.append((value, int(label_id)))
  predictions = []
  for value, label_id in instances:
    mask = ids == value
    if not mask.any():
      continue
    predictions.append((mask, label_id, round(float(rng.uniform(0.5, 1)), 1)))  # exact: IoU 1
    for _ in range(rng.integers(0, 3)):
      moved = np.roll(mask, tuple(rng.integers(-2, 3, size=2)), axis=(0, 1))
      if rng.uniform() < 0.5:
        moved |= np.roll(moved, 1, axis=int(rng.integers(0, 2)))
      label = label_id if rng.uniform() < 0.8 else int(rng.choice([24, 26, 33]))
      predictions.append((moved, label, round(float(rng.uniform(0, 1)), 1)))
  for _ in range(rng.integers(1, 5)):  # boxes anywhere: over void, the group, the caravan or nothing
    h, w = rng.integers(3, 20, size=2)
    y, x = rng.integers(0, H - h), rng.integers(0, W - w)
    box = np.zeros((H, W), bool)
    box[y:y + h, x:x + w] = True
    predictions.append((box, int(rng.choice([24, 26, 33, 25])), round(float(rng.uniform(0, 1)), 1)))
  predictions.append((np.zeros((H, W), bool), 26, 0.9))  # empty: skipped
  predictions.append((ids == 29001, 29, 0.8))  # caravan: not an evaluated class
  return ids, predictions


def _official(tmp_path, monkeypatch, images, min_region_size):
  """resDict["averages"] of the official evaluateImgLists on the images written as files."""
  # assignGt2Preds calls np.in1d, which NumPy 2 removed; np.isin is its documented replacement (same result).
  monkeypatch.setattr(np, "in1d", lambda a, b: np.isin(a, b).ravel(), raising=False)
  # Its JSON dumps (matches.json, the ground-truth cache) meet NumPy 2's scalars, which its encoder's default
  # (o.__dict__) cannot write: the same writer, with scalars as Python numbers.
  def write_json(content, file_name):
    with open(file_name, "w") as f:
      f.write(json.dumps(content, default=lambda o: o.item() if isinstance(o, np.generic) else o.__dict__,
                         sort_keys=True, indent=4))
  monkeypatch.setattr(cityscapes_eval, "writeDict2JSON", write_json)
  gt_files, pred_files = [], []
  pred_root = tmp_path / "results"
  for n, (ids, predictions) in enumerate(images):
    name = f"aachen_{n:06d}_000019"
    gt = tmp_path / "gtFine" / "val" / "aachen" / f"{name}_gtFine_instanceIds.png"
    gt.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(ids.astype(np.uint16)).save(gt)  # 16-bit grey, as gtFine's
    (pred_root / "masks").mkdir(parents=True, exist_ok=True)
    lines = []
    for k, (mask, label_id, confidence) in enumerate(predictions):
      Image.fromarray(mask.astype(np.uint8) * 255, "L").save(pred_root / "masks" / f"{name}_{k}.png")
      lines.append(f"masks/{name}_{k}.png {label_id} {confidence}\n")
    (pred_root / f"{name}_pred.txt").write_text("".join(lines))
    gt_files.append(str(gt))
    pred_files.append(str(pred_root / f"{name}_pred.txt"))
  args = cityscapes_eval.CArgs()
  args.cityscapesPath = str(tmp_path)
  args.exportFile = str(tmp_path / "result.json")
  args.groundTruthSearch = str(tmp_path / "gtFine" / "val" / "*" / "*_gtFine_instanceIds.png")
  args.overlaps = np.arange(0.5, 1., 0.05)
  # The script's defaults; only the first region size is used without distances. The benchmark's is 100 px; the
  # test also evaluates with a smaller one so that more of its tiny instances count.
  args.minRegionSizes = np.array([min_region_size, 1000, 1000])
  args.distanceThs = np.array([float("inf"), 100, 50])
  args.distanceConfs = np.array([-float("inf"), 0.5, 0.5])
  args.gtInstancesFile = str(tmp_path / "gtInstances.json")  # its cache: written here, never read from elsewhere
  args.distanceAvailable = False
  args.JSONOutput = False
  args.quiet = True
  args.csv = False
  args.colorized = False
  args.instLabels = []
  args.predictionPath = os.path.abspath(pred_root)
  args.predictionWalk = None
  return cityscapes_eval.evaluateImgLists(pred_files, gt_files, args)["averages"]


def _assert_equal_to_official(ours, official):
  np.testing.assert_allclose(ours["AP"], official["allAp"], rtol=0, atol=1e-6)
  np.testing.assert_allclose(ours["AP50"], official["allAp50%"], rtol=0, atol=1e-6)
  for name, _ in THING_CLASSES:
    np.testing.assert_allclose(ours[f"AP_{name}"], official["classes"][name]["ap"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(ours[f"AP50_{name}"], official["classes"][name]["ap50%"], rtol=0, atol=1e-6)


@requires_cityscapesscripts
@pytest.mark.parametrize("seed,min_region_size", [(0, 100), (1, 100), (2, 20), (3, 20)])
def test_equals_the_official_evaluation(tmp_path, monkeypatch, seed, min_region_size):
  monkeypatch.chdir(tmp_path)  # evaluateImgLists writes matches.json into the working directory
  rng = np.random.default_rng(seed)
  images = [_scene(rng) for _ in range(3)]
  official = _official(tmp_path, monkeypatch, images, min_region_size)
  ours = cityscapes_instances.evaluate(images, min_region_size=min_region_size)
  _assert_equal_to_official(ours, official)
  assert np.isfinite(ours["AP"]) and 0 < ours["AP"] < 1  # the scenes exercise both hits and misses


@requires_cityscapesscripts
def test_void_group_and_missing_classes(tmp_path, monkeypatch):
  """A prediction is ignored while more than t of its pixels are void or group pixels, a false positive otherwise; a
  class with ground truth but no prediction has AP 0, one without ground truth NaN (left out of the mean)."""
  monkeypatch.chdir(tmp_path)
  ids = np.full((H, W), 7, np.int32)
  ids[:, :20] = 0  # void
  ids[30:, 20:40] = 26  # car group
  ids[5:25, 25:45] = 26001
  ids[5:20, 50:62] = 24001  # a person nobody predicts
  box = lambda y0, y1, x0, x1: np.pad(np.ones((y1 - y0, x1 - x0), bool), ((y0, H - y1), (x0, W - x1)))
  predictions = [(ids == 26001, 26, 0.9),
                 (box(0, 20, 0, 24), 26, 0.95),  # 400 void of 480 px: ignored for t <= 0.8, then a false positive
                 (box(30, 48, 12, 40), 26, 0.96),  # 144 void + 360 group of 504: ignored at every t
                 (box(0, 10, 10, 30), 26, 0.7)]  # 100 void + 25 car of 200: a false positive below the hit
  official = _official(tmp_path, monkeypatch, [(ids, predictions)], 100)
  ours = cityscapes_instances.evaluate([(ids, predictions)])
  _assert_equal_to_official(ours, official)
  assert ours["AP_person"] == 0 and np.isnan(ours["AP_bus"])
  assert ours["AP50_car"] == 1 and ours["AP_car"] < 1
