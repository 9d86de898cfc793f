"""VOC detection from a fake devkit (XML, list files, JPEGs) and the synthetic set read as boxes, built as the loop
does; YOLO's augmentation keeps boxes on their objects."""
import os

import ml_collections
import numpy as np
import pytest
from PIL import Image

from segjax.data import DatasetError
from segjax.data import config as config_lib
from segjax.data import pipeline
from segjax.data import voc_detection

# name -> (size (H, W), [(class, xmin, ymin, xmax, ymax, difficult, truncated)]); 1-based inclusive like VOC.
VOC2007 = {
    "000005": ((40, 50), [("chair", 3, 4, 20, 30, 0, 1), ("person", 10, 1, 50, 40, 1, 0)]),
    "000007": ((36, 30), [("car", 1, 1, 30, 36, 0, 0)]),
    "000009": ((30, 44), [("horse", 5, 6, 25, 20, 0, 0), ("person", 7, 8, 9, 10, 0, 1), ("dog", 2, 2, 3, 3, 1, 1)]),
}
VOC2012 = {"2008_000002": ((32, 32), [("tvmonitor", 4, 5, 28, 30, 0, 0)])}


def _xml(size, objects, drop=None):
  parts = [f"<annotation><filename>x.jpg</filename><size><width>{size[1]}</width><height>{size[0]}</height>"
           "<depth>3</depth></size>"]
  for name, x1, y1, x2, y2, difficult, truncated in objects:
    fields = {"name": name, "difficult": difficult, "truncated": truncated, "pose": "Left"}
    body = "".join(f"<{k}>{v}</{k}>" for k, v in fields.items() if k != drop)
    box = "".join(f"<{k}>{v}</{k}>" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), (x1, y1, x2, y2)) if k != drop)
    parts.append(f"<object>{body}<bndbox>{box}</bndbox></object>")
  return "".join(parts) + "</annotation>"


def write_devkit(root, years=(("VOC2007", VOC2007, {"trainval": ["000005", "000007"], "test": ["000009"]}),
                              ("VOC2012", VOC2012, {"trainval": ["2008_000002"]}))):
  rng = np.random.default_rng(0)
  for folder, images, lists in years:
    base = os.path.join(root, folder)
    for sub in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main")):
      os.makedirs(os.path.join(base, sub), exist_ok=True)
    for name, (size, objects) in images.items():
      Image.fromarray(rng.integers(0, 255, (*size, 3)).astype(np.uint8)).save(
          os.path.join(base, "JPEGImages", name + ".jpg"))
      with open(os.path.join(base, "Annotations", name + ".xml"), "w") as f:
        f.write(_xml(size, objects))
    for image_set, names in lists.items():
      with open(os.path.join(base, "ImageSets", "Main", image_set + ".txt"), "w") as f:
        f.write("\n".join(names) + "\n")
  return root


def _config(name, root, data_dir, train_split, eval_split, **dataset):
  config = ml_collections.ConfigDict({"seed": 0, "batch_size": 2, "dataset": config_lib.default_dataset_config()})
  config.dataset.update(dict(name=name, root=str(root), data_dir=str(data_dir), train_split=train_split,
                             eval_split=eval_split, detection=True, max_instances=4, image_size=(48, 48),
                             **dataset))
  return config


def test_voc_devkit_examples_keep_boxes_classes_and_flags(tmp_path):
  root = write_devkit(tmp_path / "VOCdevkit")
  config = _config("voc", root, tmp_path / "tfds", "0712_trainval", "2007_test")
  builder = pipeline.prepare(config)
  info = pipeline.dataset_info(config)
  assert info.thing_class_names == voc_detection.CLASS_NAMES and (info.num_train, info.num_eval) == (3, 1)
  expected = [VOC2007["000005"], VOC2007["000007"], VOC2012["2008_000002"]]
  examples = sorted(builder.as_data_source("0712_trainval"), key=lambda e: e["image_id"])  # list order
  assert len(examples) == 3
  for example, (size, objects) in zip(examples, expected):
    assert example["image"].shape == (*size, 3)
    o = example["objects"]
    # Edges: (xmin - 1, ymin - 1, xmax, ymax).
    np.testing.assert_array_equal(o["bbox"], [[x1 - 1, y1 - 1, x2, y2] for _, x1, y1, x2, y2, _, _ in objects])
    np.testing.assert_array_equal(o["label"], [voc_detection.CLASS_NAMES.index(n) + 1 for n, *_ in objects])
    np.testing.assert_array_equal(o["difficult"], [bool(d) for *_, d, _ in objects])
    np.testing.assert_array_equal(o["truncated"], [bool(t) for *_, t in objects])
  # The eval batch: boxes fitted to 48x48 by the same scale as the image, difficult kept (flagged), padding after.
  batch = next(iter(pipeline.make_eval_iterator(config)))
  size, objects = VOC2007["000009"]
  scale = min(48 / size[0], 48 / size[1])
  np.testing.assert_allclose(batch["scale"][0], scale)
  np.testing.assert_allclose(batch["boxes"][0, :3], scale * np.array([[x1 - 1, y1 - 1, x2, y2] for _, x1, y1, x2, y2,
                                                                       *_ in objects]), rtol=1e-5)
  np.testing.assert_array_equal(batch["difficult"][0, :3], [False, False, True])
  np.testing.assert_array_equal(batch["instance_valid"][0], [True, True, True, False])
  assert not batch["valid_image"][1]
  # Train batches leave difficult objects out.
  train = next(pipeline.make_train_iterator(config))
  assert train["image"].shape == (2, 48, 48, 3) and train["instance_valid"].sum() <= 3


@pytest.mark.parametrize("drop,field", [("xmax", "xmax"), ("name", "name")])
def test_malformed_xml_names_the_file_and_field(tmp_path, drop, field):
  path = tmp_path / "a.xml"
  path.write_text(_xml((10, 10), [("cat", 1, 1, 5, 5, 0, 0)], drop=drop))
  with pytest.raises(DatasetError, match=rf"{path}: field <{field}>.* of object 0"):
    voc_detection.read_annotation(str(path))
  path.write_text(_xml((10, 10), [("kangaroo", 1, 1, 5, 5, 0, 0)]))
  with pytest.raises(DatasetError, match=rf"{path}: field <name> of object 0 is 'kangaroo'"):
    voc_detection.read_annotation(str(path))
  path.write_text("<annotation><size><width>3</width>")
  with pytest.raises(DatasetError, match=rf"{path}: not well-formed XML"):
    voc_detection.read_annotation(str(path))


def test_build_fails_naming_a_bad_xml_in_the_devkit(tmp_path):
  root = write_devkit(tmp_path / "VOCdevkit")
  bad = root / "VOC2007" / "Annotations" / "000007.xml"
  bad.write_text(_xml((36, 30), [("car", 1, 1, "wide", 36, 0, 0)]))
  config = _config("voc", root, tmp_path / "tfds", "2007_trainval", "2007_test")
  with pytest.raises(DatasetError, match=rf"{bad}: field <xmax> of object 0 is 'wide'"):
    pipeline.prepare(config)


def test_synthetic_read_as_detection_set_and_yolo_augmentation(tmp_path):
  config = _config("synthetic", tmp_path / "syn", tmp_path / "tfds", "train2017", "val2017", num_train=6,
                   num_val=2, augment=ml_collections.ConfigDict({"scale_range": (0.8, 1.2), "flip": False,
                                                                 "translate": 0.2, "exposure": 1.5,
                                                                 "saturation": 1.5}))
  config.dataset.image_size = (64, 64)
  config.dataset.max_instances = 16
  info = pipeline.dataset_info(config)
  assert info.thing_class_names == ("circle", "square", "triangle", "star")
  builder = pipeline.prepare(config)
  import json  # pylint: disable=g-import-not-at-top
  with open(tmp_path / "syn" / "annotations" / "instances_val2017.json") as f:
    gt = json.load(f)
  image_id = gt["images"][0]["id"]
  first = next(e for e in builder.as_data_source("val2017") if e["image_id"] == image_id)
  anns = [a for a in gt["annotations"] if a["image_id"] == image_id]
  np.testing.assert_allclose(first["objects"]["bbox"], [[x, y, x + w, y + h] for x, y, w, h in
                                                        (a["bbox"] for a in anns)])
  np.testing.assert_array_equal(first["objects"]["difficult"], [bool(a["iscrowd"]) for a in anns])
  batch = next(pipeline.make_train_iterator(config))  # images cross as uint8, like every set's (data/compact.py)
  assert batch["image"].shape == (2, 64, 64, 3) and batch["image"].dtype == np.uint8
  boxes = batch["boxes"][batch["instance_valid"]]
  assert len(boxes) > 0 and (boxes[:, 2:] > boxes[:, :2]).all() and boxes.min() >= 0 and boxes.max() <= 64


def test_yolo_warp_moves_boxes_with_their_pixels():
  """A white square on black, scaled and translated: the warped box is where the warped pixels are."""
  from segjax.data import augment_detection  # pylint: disable=g-import-not-at-top
  from segjax.data.tf_env import tf  # pylint: disable=g-import-not-at-top
  image = np.zeros((40, 60, 3), np.uint8)
  image[10:20, 30:50] = 255  # edges (x1, y1, x2, y2) = (30, 10, 50, 20)
  example = {"image": tf.constant(image), "image_id": tf.constant(3, tf.int64),
             "objects": {"bbox": tf.constant([[30.0, 10, 50, 20]]), "label": tf.constant([2], tf.int32),
                         "difficult": tf.constant([False]), "truncated": tf.constant([False])}}
  for seed in range(4):
    out = augment_detection.preprocess(example, tf.constant([seed, 7], tf.int64), tf.constant(True),
                                       image_size=(64, 64), max_instances=2, train=True, scale_range=(0.8, 1.2),
                                       translate=0.2, exposure=1.0, saturation=1.0)
    bright = out["image"].numpy().mean(-1) > 0.5
    ys, xs = np.nonzero(bright)
    box = out["boxes"].numpy()[0]
    assert out["instance_valid"].numpy()[0]
    np.testing.assert_allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], box, atol=1.0)
