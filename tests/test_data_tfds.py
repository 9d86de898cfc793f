"""The TFDS builder: built examples equal the source files; built once; hand-written folders."""
import io
import json
import os

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from segjax.data import coco
from segjax.data import synthetic
from segjax.data import tfds_coco

SPLITS = ("train2017", "val2017")


def _png(data):
  return np.asarray(Image.open(io.BytesIO(data) if isinstance(data, bytes) else data))


def _rle(counts, height, width):
  """A stored instance mask: COCO compressed RLE counts of the [H, W] mask."""
  return mask_utils.decode({"size": [height, width], "counts": counts})


def _examples(builder, split):
  return {int(e["image_id"]): e for e in builder.as_data_source(split)}


@pytest.fixture(scope="module")
def synthetic_build(tmp_path_factory):
  base = tmp_path_factory.mktemp("tfds")
  root = synthetic.write_dataset(base / "syn", num_train=6, num_val=2, image_size=(40, 48), seed=1)
  return root, base / "data", tfds_coco.prepare(root, SPLITS, base / "data")


def test_synthetic_examples_equal_the_files(synthetic_build):
  root, _, builder = synthetic_build
  assert builder.info.splits["train2017"].num_examples == 6
  assert builder.info.splits["val2017"].num_examples == 2
  assert [c["id"] for c in builder.info.metadata["categories"]] == [1, 2, 3, 4, 101, 102, 103]
  assert builder.info.metadata["val2017"] == {"has_instances": True, "has_panoptic": True}
  with open(os.path.join(root, "annotations", "instances_train2017.json")) as f:
    instances = json.load(f)
  anns = {}
  for ann in instances["annotations"]:
    anns.setdefault(ann["image_id"], []).append(ann)
  examples = _examples(builder, "train2017")
  assert sorted(examples) == [i["id"] for i in instances["images"]]
  for image in instances["images"]:
    ex, name = examples[image["id"]], image["file_name"]
    np.testing.assert_array_equal(ex["image"], _png(os.path.join(root, "train2017", name)))
    np.testing.assert_array_equal(ex["semantic"][..., 0],
                                  _png(os.path.join(root, "semantic_train2017", name)))
    np.testing.assert_array_equal(ex["panoptic"],
                                  _png(os.path.join(root, "annotations/panoptic_train2017", name)))
    inst = ex["instances"]
    assert len(inst["label"]) == len(anns[image["id"]])
    for k, ann in enumerate(anns[image["id"]]):
      x, y, w, h = ann["bbox"]
      np.testing.assert_array_equal(inst["bbox"][k], [x, y, x + w, y + h])
      assert inst["label"][k] == [1, 2, 3, 4].index(ann["category_id"]) + 1
      assert inst["is_crowd"][k] == bool(ann["iscrowd"])
      seg = ann["segmentation"]
      rle = (mask_utils.merge(mask_utils.frPyObjects(seg, 40, 48)) if isinstance(seg, list)
             else {"size": seg["size"], "counts": seg["counts"].encode()})
      np.testing.assert_array_equal(_rle(inst["mask"][k], 40, 48), mask_utils.decode(rle))


def test_built_once_and_rebuilt_when_annotations_change(synthetic_build, monkeypatch):
  root, data_dir, builder = synthetic_build

  def fail(*args):
    raise AssertionError("rebuilt")

  monkeypatch.setattr(tfds_coco.CocoFolder, "_split_generators", fail)
  assert tfds_coco.prepare(root, SPLITS, data_dir) is builder  # this process: cached
  again = tfds_coco.builder(root, SPLITS, data_dir)  # as a new process would: read from disk
  again.download_and_prepare()
  assert again.data_dir == builder.data_dir
  assert again.info.metadata["categories"] == builder.info.metadata["categories"]
  path = os.path.join(root, "annotations", "instances_val2017.json")
  os.utime(path, ns=(1, 1))
  assert tfds_coco.builder(root, SPLITS, data_dir).data_dir != builder.data_dir


def _square(h, w, y0, y1, x0, x1):
  mask = np.zeros((h, w), np.uint8)
  mask[y0:y1, x0:x1] = 1
  return mask


def _uncompressed_rle(mask):
  """COCO iscrowd-style RLE: column-major run lengths starting with zeros."""
  flat = mask.T.ravel()
  changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
  return {"size": list(mask.shape), "counts": np.diff(np.concatenate([[0], changes])).tolist()}


def test_hand_written_instances_only_folder(tmp_path):
  """Grey JPEG + RGB PNG, polygon + list-count RLE crowd, no panoptic/semantic; ids 7 and 3."""
  h, w = 12, 16
  os.makedirs(tmp_path / "images" / "mine")
  os.makedirs(tmp_path / "annotations")
  grey = np.tile(np.arange(w, dtype=np.uint8) * 10, (h, 1))
  Image.fromarray(grey).save(tmp_path / "images" / "mine" / "g.jpg", quality=95)
  rgb = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
  Image.fromarray(rgb).save(tmp_path / "images" / "mine" / "c.png")
  crowd = _square(h, w, 6, 12, 0, 5)
  anns = [
      {"id": 1, "image_id": 11, "category_id": 7, "iscrowd": 0, "bbox": [2, 1, 4, 3], "area": 12,
       "segmentation": [[2, 1, 6, 1, 6, 4, 2, 4]]},
      {"id": 2, "image_id": 11, "category_id": 3, "iscrowd": 1, "bbox": [0, 6, 5, 6], "area": 30,
       "segmentation": _uncompressed_rle(crowd)},
      {"id": 3, "image_id": 12, "category_id": 3, "iscrowd": 0, "bbox": [10, 2, 3, 2], "area": 6,
       "segmentation": [[10, 2, 13, 2, 13, 4, 10, 4]]}]
  with open(tmp_path / "annotations" / "mine.json", "w") as f:
    json.dump({"images": [{"id": 11, "file_name": "g.jpg", "height": h, "width": w},
                          {"id": 12, "file_name": "c.png", "height": h, "width": w}],
               "annotations": anns,
               "categories": [{"id": 7, "name": "cat", "supercategory": "animal"},
                              {"id": 3, "name": "dog", "supercategory": "animal"}]}, f)
  layout = {"images": "images/{split}", "instances": "annotations/{split}.json"}
  builder = tfds_coco.prepare(tmp_path, ["mine"], tmp_path / "data", layout)
  assert builder.info.metadata["mine"] == {"has_instances": True, "has_panoptic": False}
  examples = _examples(builder, "mine")
  grey_image = examples[11]["image"]
  assert grey_image.shape == (h, w, 3)
  assert np.abs(grey_image.astype(int) - grey[..., None]).max() <= 3  # JPEG, grey -> RGB
  np.testing.assert_array_equal(examples[12]["image"], rgb)  # PNG bytes kept: exact
  inst = examples[11]["instances"]
  np.testing.assert_array_equal(inst["label"], [2, 1])  # thing labels by category id: 3 -> 1, 7 -> 2
  np.testing.assert_array_equal(inst["is_crowd"], [False, True])
  np.testing.assert_array_equal(inst["bbox"], [[2, 1, 6, 4], [0, 6, 5, 12]])
  np.testing.assert_array_equal(_rle(inst["mask"][0], h, w), _square(h, w, 1, 4, 2, 6))
  np.testing.assert_array_equal(_rle(inst["mask"][1], h, w), crowd)
  expected = np.full((h, w), 255)  # semantic from instances: train ids by category id (3 -> 0, 7 -> 1)
  expected[1:4, 2:6] = 1
  expected[crowd > 0] = 0
  np.testing.assert_array_equal(examples[11]["semantic"][..., 0], expected)
  assert not examples[11]["panoptic"].any() and len(examples[11]["panoptic_segments"]["id"]) == 0


def test_hand_written_panoptic_only_folder(tmp_path):
  """No instances file: instances are the thing segments; semantic from segments_info."""
  h, w = 6, 8
  os.makedirs(tmp_path / "val2017")
  os.makedirs(tmp_path / "annotations" / "panoptic_val2017")
  Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(tmp_path / "val2017" / "a.png")
  ids = np.full((h, w), 5 * 65536 + 2 * 256 + 1)  # stuff, id spans all three channels
  ids[1:3, 1:4] = 300  # thing
  ids[4:, 6:] = 301  # crowd thing
  ids[0, 0] = 0  # VOID
  rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
  Image.fromarray(rgb).save(tmp_path / "annotations" / "panoptic_val2017" / "a.png")
  with open(tmp_path / "annotations" / "panoptic_val2017.json", "w") as f:
    json.dump({"images": [{"id": 4, "file_name": "a.png", "height": h, "width": w}],
               "annotations": [{"image_id": 4, "file_name": "a.png", "segments_info": [
                   {"id": 5 * 65536 + 2 * 256 + 1, "category_id": 150, "iscrowd": 0},
                   {"id": 300, "category_id": 20, "iscrowd": 0},
                   {"id": 301, "category_id": 20, "iscrowd": 1}]}],
               "categories": [{"id": 20, "name": "t", "isthing": 1},
                              {"id": 150, "name": "s", "isthing": 0}]}, f)
  builder = tfds_coco.prepare(tmp_path, ["val2017"], tmp_path / "data")
  ex = _examples(builder, "val2017")[4]
  inst = ex["instances"]
  np.testing.assert_array_equal(inst["label"], [1, 1])
  np.testing.assert_array_equal(inst["is_crowd"], [False, True])
  np.testing.assert_array_equal(inst["bbox"], [[1, 1, 4, 3], [6, 4, 8, 6]])
  np.testing.assert_array_equal(_rle(inst["mask"][0], *ids.shape), ids == 300)
  expected = np.where(ids == 0, 255, np.where(ids < 1000, 0, 1))
  np.testing.assert_array_equal(ex["semantic"][..., 0], expected)
  np.testing.assert_array_equal(ex["panoptic_segments"]["id"], [5 * 65536 + 2 * 256 + 1, 300, 301])


def test_build_fails_naming_an_image_that_does_not_decode(tmp_path):
  root = synthetic.write_dataset(tmp_path / "syn", num_train=2, num_val=1, image_size=(24, 24))
  bad = os.path.join(root, "val2017", "000001000001.png")
  with open(bad, "wb") as f:
    f.write(b"GIF89a broken")
  with pytest.raises(coco.DatasetError, match=rf"{bad}: image id 1000001: image fails to decode"):
    tfds_coco.prepare(root, SPLITS, tmp_path / "data")
