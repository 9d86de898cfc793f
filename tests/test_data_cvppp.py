"""CVPPP A1 (plantNNN_rgb.png + plantNNN_label.png) from a tiny fake copy of the challenge's layout: converted to a
COCO folder and read by the pipeline; bad files are named."""
import json
import os

import ml_collections
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from segjax.data import DatasetError
from segjax.data import compact
from segjax.data import config as config_lib
from segjax.data import cvppp
from segjax.data import pipeline


def write_cvppp(root, count=3, size=(30, 34)):
  """root/A1 with `count` plants: RGBA images (as the challenge's) and palette label PNGs with 1..4 leaves."""
  rng = np.random.default_rng(0)
  os.makedirs(root / "A1")
  truth = {}
  for n in range(1, count + 1):
    name = f"plant{n:03d}"
    rgba = rng.integers(0, 255, size + (4,)).astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(root / "A1" / f"{name}_rgb.png")
    labels = np.zeros(size, np.uint8)
    for leaf in range(1, n + 2):
      y, x = rng.integers(0, size[0] - 8), rng.integers(0, size[1] - 8)
      labels[y:y + 6, x:x + 7] = leaf
    labels = np.unique(labels, return_inverse=True)[1].reshape(size).astype(np.uint8)  # leaves 1..n, none hidden
    label_image = Image.fromarray(labels, "P")
    label_image.putpalette(rng.integers(0, 255, 768).astype(np.uint8).tolist())
    label_image.save(root / "A1" / f"{name}_label.png")
    truth[f"A1/{name}"] = (rgba[..., :3], labels)
  return truth


def _config(root, data_dir, train_split="A1", eval_split="A1"):
  config = ml_collections.ConfigDict({"seed": 0, "batch_size": 2, "dataset": config_lib.default_dataset_config()})
  config.dataset.update(dict(name="cvppp", root=str(root), data_dir=str(data_dir), train_split=train_split,
                             eval_split=eval_split, image_size=(32, 32), max_instances=8))
  return config


def test_to_coco_keeps_every_leaf_and_pixel(tmp_path):
  truth = write_cvppp(tmp_path / "cvppp")
  (tmp_path / "cvppp" / "val.txt").write_text("A1/plant003\nA1/plant001\n")
  out = cvppp.to_coco(tmp_path / "cvppp", ("A1", "val"), str(tmp_path / "coco"))
  with open(os.path.join(out, "annotations", "instances_val.json")) as f:
    val = json.load(f)
  assert [im["file_name"] for im in val["images"]] == ["A1_plant001.png", "A1_plant003.png"]
  with open(os.path.join(out, "annotations", "instances_A1.json")) as f:
    data = json.load(f)
  assert data["categories"] == [cvppp.CATEGORY]
  for image in data["images"]:
    plant = image["file_name"][:-4].replace("_", "/")
    rgb, labels = truth[plant]
    np.testing.assert_array_equal(np.asarray(Image.open(os.path.join(out, "A1", image["file_name"]))), rgb)
    painted = np.zeros_like(labels)
    anns = [a for a in data["annotations"] if a["image_id"] == image["id"]]
    assert len(anns) == len(np.unique(labels)) - 1
    for a in anns:
      mask = mask_utils.decode(a["segmentation"]).astype(bool)
      assert len(np.unique(labels[mask])) == 1 and a["area"] == mask.sum()
      painted[mask] = labels[mask]
    np.testing.assert_array_equal(painted, labels)
  assert len({a["id"] for a in data["annotations"]}) == len(data["annotations"])
  # A second call with the same files leaves the folder alone.
  stamp = os.path.getmtime(os.path.join(out, "annotations", "instances_A1.json"))
  cvppp.to_coco(tmp_path / "cvppp", ("A1", "val"), str(tmp_path / "coco"))
  assert os.path.getmtime(os.path.join(out, "annotations", "instances_A1.json")) == stamp


def test_pipeline_reads_cvppp_as_instances(tmp_path):
  truth = write_cvppp(tmp_path / "cvppp")
  config = _config(tmp_path / "cvppp", tmp_path / "tfds")
  info = pipeline.dataset_info(config)
  assert (info.num_thing_classes, info.num_train, info.num_eval) == (1, 3, 3)
  (batch,) = [b for b, _ in zip(pipeline.make_eval_iterator(config), range(1))]
  leaves = [len(np.unique(labels)) - 1 for _, labels in truth.values()]  # image ids 1..3 in plant order
  rows = np.flatnonzero(batch["valid_image"])
  assert len(rows) == 2
  for i in rows:
    assert batch["instance_valid"][i].sum() == leaves[batch["image_id"][i] - 1]
  assert set(batch["classes"][batch["instance_valid"]].tolist()) == {1}


def test_bad_files_are_named(tmp_path):
  root = tmp_path / "cvppp"
  write_cvppp(root)
  os.remove(root / "A1" / "plant002_label.png")
  with pytest.raises(DatasetError, match=f"{root / 'A1' / 'plant002_label.png'}: label PNG does not exist"):
    cvppp.to_coco(root, ("A1",), str(tmp_path / "out"))
  Image.fromarray(np.zeros((30, 34, 3), np.uint8)).save(root / "A1" / "plant002_label.png")
  with pytest.raises(DatasetError, match=f"{root / 'A1' / 'plant002_label.png'}: label PNG must be single-channel"):
    cvppp.to_coco(root, ("A1",), str(tmp_path / "out"))
  Image.fromarray(np.zeros((10, 10), np.uint8)).save(root / "A1" / "plant002_label.png")
  with pytest.raises(DatasetError, match="plant002_label.png: label is 10x10, its image .* is 30x34"):
    cvppp.to_coco(root, ("A1",), str(tmp_path / "out"))
  (root / "A1" / "plant001_rgb.png").write_bytes(b"not a png")
  with pytest.raises(DatasetError, match="plant001_rgb.png: image fails to decode"):
    cvppp.to_coco(root, ("A1",), str(tmp_path / "out"))
  with pytest.raises(DatasetError, match="split 'test' is neither a subset folder"):
    cvppp.to_coco(root, ("test",), str(tmp_path / "out"))
  assert not os.path.exists(tmp_path / "out")


def test_instance_evaluator_reports_sbd_and_dic(tmp_path):
  """The eval batches' own leaves fed back as detections score SBD 1 and |DiC| 0; dropping one leaf of every plant
  gives DiC -1 and the SBD of the LSC program on those label images."""
  from segjax.evaluation import leaf  # pylint: disable=g-import-not-at-top
  from segjax.evaluation.instance import InstanceEvaluator  # pylint: disable=g-import-not-at-top
  truth = write_cvppp(tmp_path / "cvppp")
  config = _config(tmp_path / "cvppp", tmp_path / "tfds")
  config.dataset.image_size = (30, 34)  # the plants' size: masks come back unchanged
  info = pipeline.dataset_info(config)
  for drop in (False, True):
    evaluator = InstanceEvaluator(info, str(tmp_path / f"work{drop}"))
    expected = []
    for batch in map(compact.expand, pipeline.make_eval_iterator(config)):
      keep = batch["instance_valid"].copy()
      if drop:
        keep[np.arange(len(keep)), 0] = False
      for i in np.flatnonzero(batch["valid_image"]):
        _, labels = list(truth.values())[batch["image_id"][i] - 1]
        prediction = np.zeros_like(labels, np.int32)
        for rank, k in enumerate(np.flatnonzero(keep[i])):  # consecutive labels, as a submission's
          prediction[batch["masks"][i, k] > 0] = rank + 1
        expected.append((prediction, labels))
      predictions = {"boxes": batch["boxes"], "scores": np.ones(keep.shape, np.float32), "labels": batch["classes"],
                     "masks": batch["masks"].astype(np.float32), "valid": keep}
      evaluator.update((), predictions, batch)
    metrics = evaluator.result()
    want = leaf.leaf_metrics(expected)
    assert metrics["DiC"] == want["DiC"] == (-1.0 if drop else 0.0)
    assert metrics["SBD"] == pytest.approx(want["SBD"]) and metrics["abs_DiC"] == want["abs_DiC"]
    assert (metrics["SBD"] == 1.0) != drop
