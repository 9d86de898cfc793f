"""Cityscapes instances (leftImg8bit + gtFine instanceIds) from a tiny fake copy of the layout: converted to a COCO
folder and read by the pipeline; group regions are crowds; bad files are named; the instance evaluator reports the
benchmark's AP."""
import json
import os

import ml_collections
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from segjax.data import DatasetError
from segjax.data import cityscapes_instances
from segjax.data import compact
from segjax.data import config as config_lib
from segjax.data import pipeline

SIZE = (32, 40)
NAMES = {"train": ["aachen_000000_000019", "aachen_000001_000019", "bochum_000000_000019"],
         "val": ["frankfurt_000000_000019", "lindau_000000_000019"]}


def write_cityscapes(root):
  """Every image: RGB noise; instanceIds (16-bit) with road, void, instances of 2-3 thing classes (one of at least
  100 px each), on some a car group and a caravan. Returns {name: instanceIds}."""
  rng = np.random.default_rng(0)
  truth = {}
  for split, names in NAMES.items():
    for n, name in enumerate(names):
      city = name.split("_")[0]
      for folder in ("leftImg8bit", "gtFine"):
        os.makedirs(root / folder / split / city, exist_ok=True)
      Image.fromarray(rng.integers(0, 255, SIZE + (3,)).astype(np.uint8)).save(
          root / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png")
      ids = np.full(SIZE, 7, np.int32)
      ids[:4] = 0
      ids[20:30, 2:12] = 24000  # person: 100 px
      ids[5:12, 20:34] = 26000 + n  # car
      ids[14:18, 30:36] = 33001  # bicycle
      if n % 2 == 0:
        ids[28:, 20:30] = 26  # a car group
        ids[0:3, 30:38] = 29000  # a caravan
      Image.fromarray(ids.astype(np.uint16)).save(root / "gtFine" / split / city / f"{name}_gtFine_instanceIds.png")
      truth[name] = ids
  return truth


def _config(root, data_dir):
  config = ml_collections.ConfigDict({"seed": 0, "batch_size": 2, "dataset": config_lib.default_dataset_config()})
  config.dataset.update(dict(name="cityscapes_instances", root=str(root), data_dir=str(data_dir), train_split="train",
                             eval_split="val", image_size=SIZE, max_instances=8))
  return config


def test_to_coco_keeps_every_instance_and_group(tmp_path):
  truth = write_cityscapes(tmp_path / "cs")
  out = cityscapes_instances.to_coco(tmp_path / "cs", ("train", "val"), str(tmp_path / "coco"))
  with open(os.path.join(out, "annotations", "instances_train.json")) as f:
    data = json.load(f)
  assert [c["id"] for c in data["categories"]] == [24, 25, 26, 27, 28, 31, 32, 33]
  assert [im["file_name"] for im in data["images"]] == [n + "_leftImg8bit.png" for n in NAMES["train"]]
  for image in data["images"]:
    ids = truth[image["file_name"][:-len("_leftImg8bit.png")]]
    assert image["instance_ids_file"].endswith("_gtFine_instanceIds.png")
    np.testing.assert_array_equal(np.asarray(Image.open(image["instance_ids_file"])), ids)
    anns = [a for a in data["annotations"] if a["image_id"] == image["id"]]
    expected = {v for v in np.unique(ids) if v >= 1000 and v // 1000 != 29} | ({26} if (ids == 26).any() else set())
    assert len(anns) == len(expected)
    for a in anns:
      mask = mask_utils.decode(a["segmentation"]).astype(bool)
      (value,) = np.unique(ids[mask])
      assert value in expected and np.array_equal(mask, ids == value) and a["area"] == mask.sum()
      assert a["iscrowd"] == int(value < 1000) and a["category_id"] == (value // 1000 if value >= 1000 else value)
    linked = np.asarray(Image.open(os.path.join(out, "train", image["file_name"])))
    assert linked.shape == SIZE + (3,)


def test_pipeline_reads_instances_with_crowds(tmp_path):
  truth = write_cityscapes(tmp_path / "cs")
  config = _config(tmp_path / "cs", tmp_path / "tfds")
  info = pipeline.dataset_info(config)
  assert (info.num_thing_classes, info.num_train, info.num_eval) == (8, 3, 2)
  (batch,) = [b for b, _ in zip(pipeline.make_eval_iterator(config), range(1))]
  batch = compact.expand(batch)
  for i in np.flatnonzero(batch["valid_image"]):
    ids = truth[NAMES["val"][batch["image_id"][i] - 1]]
    valid = batch["instance_valid"][i]
    crowd = batch["is_crowd"][i] & valid
    assert crowd.sum() == int((ids == 26).any())
    # thing labels 1..8 in category order: person 1, car 3, bicycle 8
    assert sorted(batch["classes"][i][valid & ~crowd].tolist()) == [1, 3, 8]
    for k in np.flatnonzero(valid):
      values = np.unique(ids[batch["masks"][i, k] > 0])
      assert len(values) == 1


def test_bad_files_are_named(tmp_path):
  root = tmp_path / "cs"
  write_cityscapes(root)
  label = root / "gtFine" / "train" / "aachen" / "aachen_000001_000019_gtFine_instanceIds.png"
  os.remove(label)
  with pytest.raises(DatasetError, match=f"{label}: instanceIds PNG does not exist"):
    cityscapes_instances.to_coco(root, ("train",), str(tmp_path / "out"))
  Image.fromarray(np.zeros(SIZE + (3,), np.uint8)).save(label)
  with pytest.raises(DatasetError, match=f"{label}: instanceIds PNG must be single-channel"):
    cityscapes_instances.to_coco(root, ("train",), str(tmp_path / "out"))
  Image.fromarray(np.full(SIZE, 40001, np.uint16)).save(label)
  with pytest.raises(DatasetError, match=f"{label}: instance id 40001 is neither"):
    cityscapes_instances.to_coco(root, ("train",), str(tmp_path / "out"))
  Image.fromarray(np.zeros((10, 10), np.uint16)).save(label)
  with pytest.raises(DatasetError, match="aachen_000001_000019_gtFine_instanceIds.png: instanceIds is 10x10, its "
                                         "image .* is 32x40"):
    cityscapes_instances.to_coco(root, ("train",), str(tmp_path / "out"))
  (root / "leftImg8bit" / "train" / "aachen" / "aachen_000000_000019_leftImg8bit.png").write_bytes(b"not a png")
  with pytest.raises(DatasetError, match="aachen_000000_000019_leftImg8bit.png: image fails to decode"):
    cityscapes_instances.to_coco(root, ("train",), str(tmp_path / "out"))
  with pytest.raises(DatasetError, match="leftImg8bit/test: Cityscapes image folder of split 'test' does not exist"):
    cityscapes_instances.to_coco(root, ("test",), str(tmp_path / "out"))
  assert not os.path.exists(tmp_path / "out")


def test_instance_evaluator_reports_the_benchmark_ap(tmp_path):
  """The eval batches' own instances fed back as detections score AP 1 (car, bicycle at 98 and 24 px are below the
  100 px minimum and NaN; person, 100 px, counts); dropping the person gives its class AP 0."""
  from segjax.evaluation.instance import InstanceEvaluator  # pylint: disable=g-import-not-at-top
  write_cityscapes(tmp_path / "cs")
  config = _config(tmp_path / "cs", tmp_path / "tfds")
  info = pipeline.dataset_info(config)
  for drop in (False, True):
    evaluator = InstanceEvaluator(info, str(tmp_path / f"work{drop}"))
    for batch in map(compact.expand, pipeline.make_eval_iterator(config)):
      keep = batch["instance_valid"] & ~batch["is_crowd"] & ~(drop & (batch["classes"] == 1))
      predictions = {"boxes": batch["boxes"], "scores": np.ones(keep.shape, np.float32), "labels": batch["classes"],
                     "masks": batch["masks"].astype(np.float32), "valid": keep}
      evaluator.update((), predictions, batch)
    metrics = evaluator.result()
    assert metrics["cityscapes_AP_person"] == (0.0 if drop else 1.0)
    assert np.isnan(metrics["cityscapes_AP_car"]) and np.isnan(metrics["cityscapes_AP_bus"])
    assert metrics["cityscapes_AP"] == metrics["cityscapes_AP50"] == (0.0 if drop else 1.0)
