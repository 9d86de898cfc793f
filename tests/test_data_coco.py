"""COCO-format reading: clear errors for malformed input, counted skips for degenerate records."""
import json
import logging
import os

import numpy as np
import pytest
from PIL import Image

from segjax.data import coco
from segjax.data import coco_example

H, W = 8, 10
SQUARE = [1.0, 1.0, 5.0, 1.0, 5.0, 5.0, 1.0, 5.0]


def _ann(ann_id, image_id, category_id=1, segmentation=None, bbox=(1, 1, 4, 4), iscrowd=0):
  return {"id": ann_id, "image_id": image_id, "category_id": category_id, "iscrowd": iscrowd,
          "bbox": list(bbox), "area": 16.0,
          "segmentation": [SQUARE] if segmentation is None else segmentation}


def _folder(root, annotations, images=None, categories=None):
  """Writes root/val2017/*.png and root/annotations/instances_val2017.json; returns its path."""
  images = images or [{"id": 1, "file_name": "a.png", "height": H, "width": W},
                      {"id": 2, "file_name": "b.png", "height": H, "width": W}]
  os.makedirs(os.path.join(root, "val2017"), exist_ok=True)
  os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
  for image in images:
    Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(os.path.join(root, "val2017", image["file_name"]))
  path = os.path.join(root, "annotations", "instances_val2017.json")
  with open(path, "w") as f:
    json.dump({"images": images, "annotations": annotations,
               "categories": categories or [{"id": 1, "name": "box", "supercategory": "x"}]}, f)
  return path


def test_valid_folder_parses(tmp_path):
  _folder(tmp_path, [_ann(1, 1), _ann(2, 2, segmentation={"size": [H, W], "counts": [0, H * W]})])
  split = coco.load_split(tmp_path, "val2017")
  assert [r.id for r in split.images] == [1, 2]
  assert split.categories == (coco.Category(1, "box", "x", True),)
  assert split.images[0].image_path == os.path.join(str(tmp_path), "val2017", "a.png")
  assert split.images[0].instances[0].bbox == (1.0, 1.0, 4.0, 4.0)
  assert split.has_instances and not split.has_panoptic
  assert split.images[0].semantic_path is None and split.images[0].panoptic_path is None


def test_missing_annotation_file(tmp_path):
  with pytest.raises(coco.DatasetError, match=r"split 'val2017': no annotation file: expected .*"
                     r"instances_val2017.json or .*panoptic_val2017.json"):
    coco.load_split(tmp_path, "val2017")


def test_malformed_json(tmp_path):
  path = _folder(tmp_path, [])
  with open(path, "w") as f:
    f.write('{"images": [')
  with pytest.raises(coco.DatasetError, match=rf"{path}: malformed JSON"):
    coco.load_split(tmp_path, "val2017")


def test_missing_field(tmp_path):
  path = _folder(tmp_path, [])
  with open(path, "w") as f:
    json.dump({"images": [], "categories": []}, f)
  with pytest.raises(coco.DatasetError, match=rf"{path}: field 'annotations' missing or not a list"):
    coco.load_split(tmp_path, "val2017")


def test_category_not_in_categories(tmp_path):
  path = _folder(tmp_path, [_ann(1, 1), _ann(7, 2, category_id=5)])
  with pytest.raises(coco.DatasetError, match=rf"{path}: image id 2: annotation id 7: field "
                     r"'category_id' 5 is not in 'categories'"):
    coco.load_split(tmp_path, "val2017")


def test_annotation_of_unknown_image(tmp_path):
  path = _folder(tmp_path, [_ann(1, 9)])
  with pytest.raises(coco.DatasetError, match=rf"{path}: image id 9: .*field 'image_id' is not in"):
    coco.load_split(tmp_path, "val2017")


def test_bad_image_record_and_duplicate_id(tmp_path):
  path = _folder(tmp_path, [], images=[{"id": 1, "file_name": "a.png", "height": 0, "width": W}])
  with pytest.raises(coco.DatasetError, match=rf"{path}: image id 1: field 'height' must be a "
                     r"positive integer, got 0"):
    coco.load_split(tmp_path, "val2017")
  image = {"id": 3, "file_name": "a.png", "height": H, "width": W}
  _folder(tmp_path, [], images=[image, dict(image, file_name="b.png")])
  with pytest.raises(coco.DatasetError, match=r"image id 3: field 'id': duplicate image id"):
    coco.load_split(tmp_path, "val2017")


def test_malformed_bbox_and_segmentation(tmp_path):
  path = _folder(tmp_path, [_ann(1, 1, bbox=(1, 2, 3))])
  with pytest.raises(coco.DatasetError, match=rf"{path}: image id 1: annotation id 1: field 'bbox' "
                     r"must be 4 numbers"):
    coco.load_split(tmp_path, "val2017")
  _folder(tmp_path, [_ann(1, 1, segmentation=[[1.0, 2.0, 3.0]])])
  with pytest.raises(coco.DatasetError, match=r"annotation id 1: field 'segmentation' has a polygon "
                     r"that is not an even list of numbers \(length 3\)"):
    coco.load_split(tmp_path, "val2017")
  _folder(tmp_path, [_ann(1, 2, segmentation={"size": [H + 1, W], "counts": "abc"})])
  with pytest.raises(coco.DatasetError, match=r"image id 2: annotation id 1: field "
                     r"'segmentation.size' is \[9, 10\], image is \[8, 10\]"):
    coco.load_split(tmp_path, "val2017")


def test_degenerate_instances_and_empty_images_are_counted_and_logged_once(tmp_path, caplog):
  path = _folder(tmp_path, [
      _ann(1, 1),
      _ann(2, 1, segmentation=[SQUARE, [1.0, 1.0, 2.0, 2.0]]),  # one short polygon: dropped
      _ann(3, 1, segmentation=[[1.0, 1.0, 2.0, 2.0]]),  # only a short polygon: instance dropped
      _ann(4, 1, bbox=(1, 1, 0, 4)),  # zero-area box: dropped
      _ann(5, 1, bbox=(1, 1, 3, 0))],
      images=[{"id": i, "file_name": f"{i}.png", "height": H, "width": W} for i in (1, 2, 3)])
  with caplog.at_level(logging.WARNING):
    split = coco.load_split(tmp_path, "val2017")
  assert [r.id for r in split.images] == [1]
  assert [i.id for i in split.images[0].instances] == [1, 2]
  assert split.images[0].instances[1].segmentation == [SQUARE]
  messages = [r.getMessage() for r in caplog.records]
  assert f"skipped 2 polygons with < 3 points in {path} (image ids 1)" in messages
  assert f"skipped 1 instances with no valid polygon in {path} (image ids 1)" in messages
  assert f"skipped 2 instances with a box of zero area in {path} (image ids 1)" in messages
  assert f"skipped 2 images with no annotations in {path} (image ids 2, 3)" in messages
  assert len(messages) == 4


def test_layout_templates_choose_the_paths(tmp_path):
  layout = {"images": "img/{split}", "instances": "ann/{split}.json"}
  os.makedirs(tmp_path / "img" / "s1")
  os.makedirs(tmp_path / "ann")
  Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / "img" / "s1" / "a.png")
  with open(tmp_path / "ann" / "s1.json", "w") as f:
    json.dump({"images": [{"id": 1, "file_name": "a.png", "height": H, "width": W}],
               "annotations": [_ann(1, 1)], "categories": [{"id": 1, "name": "box"}]}, f)
  split = coco.load_split(tmp_path, "s1", layout)
  assert split.paths.instances == str(tmp_path / "ann" / "s1.json")
  assert split.images[0].image_path == str(tmp_path / "img" / "s1" / "a.png")


def test_image_that_fails_to_decode_or_has_another_size(tmp_path):
  _folder(tmp_path, [_ann(1, 1), _ann(2, 2)])
  bad = tmp_path / "val2017" / "b.png"
  bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
  split = coco.load_split(tmp_path, "val2017")
  assert coco_example.read_image(split.images[0])  # the good one decodes
  with pytest.raises(coco.DatasetError, match=rf"{bad}: image id 2: image fails to decode"):
    coco_example.read_image(split.images[1])
  Image.fromarray(np.zeros((H, W + 1, 3), np.uint8)).save(bad)
  with pytest.raises(coco.DatasetError, match=rf"{bad}: image id 2: image is 8x11, annotations "
                     r"say height x width = 8x10"):
    coco_example.read_image(split.images[1])


def _panoptic_folder(root, segment_ids_in_png, segments_info):
  os.makedirs(root / "val2017")
  os.makedirs(root / "annotations" / "panoptic_val2017")
  Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(root / "val2017" / "a.png")
  ids = np.zeros((H, W), np.int64)
  ids[:4], ids[4:] = segment_ids_in_png
  rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
  Image.fromarray(rgb).save(root / "annotations" / "panoptic_val2017" / "a.png")
  with open(root / "annotations" / "panoptic_val2017.json", "w") as f:
    json.dump({"images": [{"id": 5, "file_name": "a.png", "height": H, "width": W}],
               "annotations": [{"image_id": 5, "file_name": "a.png", "segments_info": segments_info}],
               "categories": [{"id": 1, "name": "thing", "isthing": 1},
                              {"id": 90, "name": "stuff", "isthing": 0}]}, f)


def test_panoptic_segment_missing_from_segments_info(tmp_path):
  _panoptic_folder(tmp_path, (70000, 3), [{"id": 70000, "category_id": 90, "iscrowd": 0}])
  record = coco.load_split(tmp_path, "val2017").images[0]
  with pytest.raises(coco.DatasetError, match=r"panoptic_val2017/a.png: image id 5: segment ids \[3\] "
                     r"in the PNG are not in 'segments_info'"):
    coco_example.decode_record(record, {1: 0, 90: 1}, {1: 1}, coco.Skips())


def test_panoptic_category_not_in_categories(tmp_path):
  _panoptic_folder(tmp_path, (70000, 3), [{"id": 70000, "category_id": 91, "iscrowd": 0}])
  with pytest.raises(coco.DatasetError, match=r"panoptic_val2017.json: image id 5: segment id 70000: "
                     r"field 'category_id' 91 is not in 'categories'"):
    coco.load_split(tmp_path, "val2017")
