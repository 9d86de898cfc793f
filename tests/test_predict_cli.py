"""python -m segjax.predict on a folder of PNG and JPEG files of different sizes: pictures, label maps at each image's
size, COCO results that pycocotools' loadRes reads back with the written images.json; errors name the file."""
import json
import os

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image
from pycocotools.coco import COCO

from segjax import models
from segjax import predict

SIZES = {"a.png": (40, 56), "b.jpg": (33, 47), "c.jpeg": (61, 30)}


def _weights(tmp_path, config, input_hw=(32, 32)):
  """config.json and variables/ of a freshly initialised model, as scripts/convert_weights.py writes them."""
  module = models.get_model(config.name).build(config, None)
  variables = module.init(jax.random.key(0), np.zeros((1, *input_hw, 3), np.float32))
  folder = tmp_path / "weights"
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(str(folder / "variables"), variables)
  checkpointer.wait_until_finished()
  with open(folder / "config.json", "w") as f:
    f.write(config.to_json())
  return str(folder / "config.json"), str(folder)


def _images(tmp_path):
  folder = tmp_path / "images"
  folder.mkdir()
  rng = np.random.default_rng(0)
  for name, (h, w) in SIZES.items():
    Image.fromarray(rng.integers(0, 256, (h, w, 3)).astype(np.uint8)).save(folder / name)
  return str(folder)


def test_semantic_label_maps_at_each_images_size(tmp_path):
  config = ml_collections.ConfigDict({"name": "deeplab_v3", "num_classes": 4, "depth": 18, "width": 8,
                                      "output_stride": 16, "multi_grid": None, "head": "aspp", "rates": (2, 4, 6),
                                      "aux": False, "aux_weight": 0.5, "dtype": "float32"})
  config_path, weights = _weights(tmp_path, config)
  output = tmp_path / "out"
  assert predict.main(["--config", config_path, "--weights", weights, "--image_size", "64", "64", "--output",
                       str(output), _images(tmp_path)]) == 0
  for name, (h, w) in SIZES.items():
    stem = os.path.splitext(name)[0]
    with Image.open(output / f"{stem}_labels.png") as labels:
      labels = np.asarray(labels)
    assert labels.shape == (h, w) and labels.max() < 4
    with Image.open(output / f"{stem}.png") as picture:
      assert picture.size == (w, h)


def test_instance_results_load_back_through_pycocotools(tmp_path, monkeypatch):
  monkeypatch.setitem(models._MODELS, "per_class_masks", "per_class_instance_model")
  config_path, weights = _weights(tmp_path, ml_collections.ConfigDict({"name": "per_class_masks", "num_classes": 4}))
  output = tmp_path / "out"
  images = _images(tmp_path)
  paths = [os.path.join(images, name) for name in SIZES]
  assert predict.main(["--config", config_path, "--weights", weights, "--output", str(output), *paths]) == 0
  ground_truth = COCO(str(output / "images.json"))
  assert [ground_truth.imgs[i + 1]["file_name"] for i in range(3)] == list(SIZES)
  for iou_type in ("bbox", "segm"):
    with open(output / f"coco_results_{iou_type}.json") as f:
      entries = json.load(f)
    assert entries and {e["category_id"] for e in entries} <= {1, 2, 3}
    loaded = ground_truth.loadRes(str(output / f"coco_results_{iou_type}.json"))
    assert len(loaded.anns) == len(entries)
  for annotation in loaded.anns.values():  # masks at their image's size
    image = ground_truth.imgs[annotation["image_id"]]
    assert annotation["segmentation"]["size"] == [image["height"], image["width"]]
  for name in SIZES:
    assert os.path.getsize(output / f"{os.path.splitext(name)[0]}.png") > 0


def test_bad_paths_and_unreadable_images_are_named(tmp_path, capsys, monkeypatch):
  monkeypatch.setitem(models._MODELS, "per_class_masks", "per_class_instance_model")
  config_path, weights = _weights(tmp_path, ml_collections.ConfigDict({"name": "per_class_masks", "num_classes": 4}))
  missing = str(tmp_path / "missing.png")
  common = ["--config", config_path, "--weights", weights, "--output", str(tmp_path / "out")]
  assert predict.main([*common, missing]) == 2
  assert f"{missing}: no such file" in capsys.readouterr().err
  broken = tmp_path / "broken.png"
  broken.write_bytes(b"not a png")
  assert predict.main([*common, str(broken)]) == 2
  assert f"{broken}: cannot read it as an image" in capsys.readouterr().err
  assert predict.main(["--config", config_path, "--weights", str(tmp_path / "nowhere"), "--output", "x",
                       missing]) == 2
  with pytest.raises(SystemExit):
    predict.main(["--output", "x", missing])  # neither --workdir nor --config
