"""VOC 2012 + SBD, Cityscapes, ADE20K and CamVid from tiny fake copies of their official layouts, built as the loop
does."""
import json
import logging
import os

import jax
import ml_collections
import numpy as np
import pytest
import scipy.io
import scipy.sparse
from PIL import Image

from segjax.data import DatasetError
from segjax.data import config as config_lib
from segjax.data import pipeline
from segjax.train.loop import train_and_evaluate
from train_util import FAST_OPTIMIZER, read_metrics, tiny_config

VOC_VALUES = list(range(21)) + [255]
# cityscapesScripts' labels.py: label id -> train id of the 19 evaluated classes; every other id is ignored.
CITYSCAPES_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
                        25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


def _config(name, root, data_dir, train_split, eval_split, **dataset):
  config = ml_collections.ConfigDict({"seed": 0, "batch_size": 2, "dataset": config_lib.default_dataset_config()})
  config.dataset.update(dict(name=name, root=str(root), data_dir=str(data_dir), train_split=train_split,
                             eval_split=eval_split, **dataset))
  return config


def _rgb(rng, h, w):
  """A smooth image of a random colour (so JPEG keeps it within a few levels, and images differ)."""
  ramp = np.add.outer(2 * np.arange(h), np.arange(w))[..., None]
  return (rng.integers(20, 150, 3) + ramp).astype(np.uint8)


def _labels(rng, h, w, values):
  """Random labels [h, w] from `values` whose first pixels hold every value once."""
  labels = rng.choice(values, (h, w)).astype(np.uint8)
  labels.reshape(-1)[:len(values)] = values
  return labels


def _person_on_background(rng, h, w):
  """(image, labels): a dark background (0) left of a random column, a bright person (15) right of it, so the class
  of a pixel is in its colour."""
  labels = np.where(np.arange(w) >= rng.integers(w // 4, 3 * w // 4), 15, 0).astype(np.uint8)
  labels = np.broadcast_to(labels, (h, w)).copy()
  image = np.where(labels[..., None] == 15, 200, 40) + rng.integers(0, 20, (h, w, 3))
  return image.astype(np.uint8), labels


def _palette_png(path, indices):
  """A palette PNG like VOC's SegmentationClass: the pixel values are the indices; colours from VOC's colour map."""
  image = Image.fromarray(indices, mode="P")
  colours = np.zeros((256, 3), np.uint8)
  for k in range(256):
    for bit in range(8):
      for channel in range(3):
        colours[k, channel] |= ((k >> (3 * bit + channel)) & 1) << (7 - bit)
  image.putpalette(colours.ravel().tolist())
  image.save(path)


def _sbd_mat(path, segmentation):
  """An SBD cls .mat: struct GTcls with Boundaries (20x1 cell of sparse maps), Segmentation, CategoriesPresent."""
  boundaries = np.empty((20, 1), object)
  for k in range(20):
    boundaries[k, 0] = scipy.sparse.csc_matrix(np.zeros(segmentation.shape, bool))
  present = np.unique(segmentation[segmentation > 0]).astype(np.uint8)[:, None]
  scipy.io.savemat(path, {"GTcls": {"Boundaries": boundaries, "Segmentation": segmentation,
                                    "CategoriesPresent": present}})


def _write_lists(folder, lists):
  os.makedirs(folder, exist_ok=True)
  for name, names in lists.items():
    with open(os.path.join(folder, name + ".txt"), "w") as f:
      f.write("\n".join(names) + "\n")


def write_voc(base, seed=0, learnable=False):
  """VOC train {a, b}, val {c}; SBD train {b, d}, val {c, e}: train_aug is {a, b, d, e} with VOC's label for b.
  Random colours and labels, or with `learnable` a person on a background (_person_on_background).

  Returns (VOCdevkit, benchmark_RELEASE, {name: (image, label)} of what each name should read).
  """
  rng = np.random.default_rng(seed)
  a, b, c, d, e = "2007_000032", "2007_000039", "2007_000063", "2008_000002", "2008_000003"
  voc, sbd = base / "VOCdevkit" / "VOC2012", base / "benchmark_RELEASE" / "dataset"
  for folder in (voc / "JPEGImages", voc / "SegmentationClass", sbd / "img", sbd / "cls"):
    os.makedirs(folder)
  _write_lists(voc / "ImageSets" / "Segmentation", {"train": [a, b], "val": [c], "trainval": [a, b, c]})
  _write_lists(sbd, {"train": [b, d], "val": [c, e]})
  expected = {}
  for k, name in enumerate((a, b, c)):
    h, w = 20 + 2 * k, 28
    image, label = _person_on_background(rng, h, w) if learnable else (_rgb(rng, h, w), _labels(rng, h, w, VOC_VALUES))
    Image.fromarray(image).save(voc / "JPEGImages" / f"{name}.jpg", quality=95)
    _palette_png(voc / "SegmentationClass" / f"{name}.png", label)
    expected[name] = image, label
  for k, name in enumerate((b, c, d, e)):
    h, w = 18 + 2 * k, 26
    image, label = (_person_on_background(rng, h, w) if learnable
                    else (_rgb(rng, h, w), _labels(rng, h, w, list(range(21)))))
    Image.fromarray(image).save(sbd / "img" / f"{name}.jpg", quality=95)
    _sbd_mat(sbd / "cls" / f"{name}.mat", label)
    expected.setdefault(name, (image, label))
  return base / "VOCdevkit", base / "benchmark_RELEASE", expected


def write_cityscapes(base, seed=0):
  """train: 2 images in aachen, 1 in bremen; val: 1 in frankfurt; labelIds hold every id 0..33."""
  rng = np.random.default_rng(seed)
  root, expected = base / "cityscapes", {}
  for split, city, number in (("train", "aachen", 19), ("train", "aachen", 20), ("train", "bremen", 7),
                              ("val", "frankfurt", 294)):
    name = f"{city}_{number:06d}_000019"
    for folder in ("leftImg8bit", "gtFine"):
      os.makedirs(root / folder / split / city, exist_ok=True)
    image, label = _rgb(rng, 16, 32), _labels(rng, 16, 32, list(range(34)))
    Image.fromarray(image).save(root / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png")
    Image.fromarray(label, mode="L").save(root / "gtFine" / split / city / f"{name}_gtFine_labelIds.png")
    Image.fromarray(np.zeros_like(image)).save(root / "gtFine" / split / city / f"{name}_gtFine_color.png")
    expected[name] = image, label
  return root, expected


def write_ade20k(base, seed=0):
  """training: 3 images (the last greyscale, as a few of ADE20K's are), validation: 2; labels hold every 0..150."""
  rng = np.random.default_rng(seed)
  root, expected = base / "ADEChallengeData2016", {}
  for split, count in (("training", 3), ("validation", 2)):
    os.makedirs(root / "images" / split)
    os.makedirs(root / "annotations" / split)
    for k in range(1, count + 1):
      name = f"ADE_{'train' if split == 'training' else 'val'}_{k:08d}"
      image, label = _rgb(rng, 12, 16), _labels(rng, 12, 16, list(range(151)))
      if name == "ADE_train_00000003":
        image = np.repeat(image[..., :1], 3, axis=-1)
        Image.fromarray(image[..., 0]).save(root / "images" / split / f"{name}.jpg", quality=95)
      else:
        Image.fromarray(image).save(root / "images" / split / f"{name}.jpg", quality=95)
      Image.fromarray(label, mode="L").save(root / "annotations" / split / f"{name}.png")
      expected[name] = image, label
  return root, expected


def _voc_train_ids(label):
  return label.astype(np.int64)  # VOC's indices are the train ids; 255 stays void


def _cityscapes_train_ids(label):
  out = np.full(label.shape, 255)
  for label_id, train_id in CITYSCAPES_TRAIN_IDS.items():
    out[label == label_id] = train_id
  return out


def _ade20k_train_ids(label):
  return np.where(label == 0, 255, label.astype(np.int64) - 1)


def _assert_split(config, split, names, expected, train_ids, exact_images):
  """The built split holds `names` (image_id = position in sorted order) with the expected images and labels."""
  source = pipeline.prepare(config).as_data_source(split)
  examples = sorted(source, key=lambda e: int(e["image_id"]))
  assert [int(e["image_id"]) for e in examples] == list(range(len(names)))
  for example, name in zip(examples, sorted(names)):
    image, label = expected[name]
    if exact_images:  # PNG
      np.testing.assert_array_equal(example["image"], image, err_msg=name)
    else:  # JPEG at quality 95 of a smooth image: within a few levels of the source
      assert example["image"].shape == image.shape, name
      assert np.abs(example["image"].astype(int) - image).max() <= 6, name
    np.testing.assert_array_equal(example["semantic"][..., 0], train_ids(label), err_msg=name)


@pytest.fixture(scope="module")
def voc_layout(tmp_path_factory):
  return write_voc(tmp_path_factory.mktemp("voc"))


@pytest.fixture(scope="module")
def voc_config(voc_layout, tmp_path_factory):
  root, sbd_root, _ = voc_layout
  return _config("voc", root, tmp_path_factory.mktemp("voc_tfds"), "train_aug", "val", sbd_root=str(sbd_root),
                 image_size=(24, 28))


def test_voc_train_aug_membership_and_labels(voc_config, voc_layout):
  _, _, expected = voc_layout
  a, b, c, d, e = sorted(expected)
  _assert_split(voc_config, "train_aug", [a, b, d, e], expected, _voc_train_ids, exact_images=False)
  _assert_split(voc_config, "val", [c], expected, _voc_train_ids, exact_images=False)
  sbd_label_of_b = scipy.io.loadmat(voc_layout[1] / "dataset" / "cls" / f"{b}.mat")["GTcls"]["Segmentation"][0, 0]
  assert sbd_label_of_b.shape != expected[b][1].shape  # so the check above tells VOC's label of b from SBD's


def test_voc_info_and_batches(voc_config, voc_layout):
  info = pipeline.dataset_info(voc_config)
  assert (info.num_semantic_classes, info.num_thing_classes, info.num_train, info.num_eval) == (21, 0, 4, 1)
  assert info.semantic_class_names[0] == "background" and info.semantic_class_names[15] == "person"
  assert info.semantic_class_names[20] == "tvmonitor" and info.eval_instances_json is None
  _, _, expected = voc_layout
  (batch,) = pipeline.make_eval_iterator(voc_config)
  assert batch["valid_image"].tolist() == [True, False]
  _, label = expected[sorted(expected)[2]]  # the val image, 24x28 = image_size: no resize, exact labels
  np.testing.assert_array_equal(batch["semantic"][0], label)
  assert not batch["instance_valid"].any()
  train = next(pipeline.make_train_iterator(voc_config))
  assert train["semantic"].shape == (2, 24, 28) and set(np.unique(train["semantic"])) <= set(VOC_VALUES)
  assert not train["instance_valid"].any() and not train["classes"].any()


def test_cityscapes_label_ids_to_train_ids(tmp_path):
  root, expected = write_cityscapes(tmp_path)
  config = _config("cityscapes", root, tmp_path / "tfds", "train", "val")
  train = [n for n in expected if not n.startswith("frankfurt")]
  _assert_split(config, "train", train, expected, _cityscapes_train_ids, exact_images=True)
  _assert_split(config, "val", ["frankfurt_000294_000019"], expected, _cityscapes_train_ids, exact_images=True)
  info = pipeline.dataset_info(config)
  assert (info.num_semantic_classes, info.num_thing_classes, info.num_train, info.num_eval) == (19, 0, 3, 1)
  assert info.semantic_class_names[:3] == ("road", "sidewalk", "building")
  assert info.semantic_class_names[18] == "bicycle"


def test_ade20k_values_shift_and_other_is_ignored(tmp_path):
  root, expected = write_ade20k(tmp_path)
  config = _config("ade20k", root, tmp_path / "tfds", "training", "validation")
  _assert_split(config, "training", [n for n in expected if "train" in n], expected, _ade20k_train_ids,
                exact_images=False)
  _assert_split(config, "validation", [n for n in expected if "val" in n], expected, _ade20k_train_ids,
                exact_images=False)
  info = pipeline.dataset_info(config)
  assert (info.num_semantic_classes, info.num_thing_classes, info.num_train, info.num_eval) == (150, 0, 3, 2)
  assert info.semantic_class_names[0] == "wall" and info.semantic_class_names[149] == "flag"
  assert len(set(info.semantic_class_names)) == 150


def test_camvid_unlabelled_is_ignored(tmp_path):
  """SegNet's CamVid: PNG frames, annotations 0..10 and 11 = Unlabelled; a value of 12 names its file."""
  rng, root, expected = np.random.default_rng(0), tmp_path / "CamVid", {}
  for split, count in (("train", 3), ("val", 1), ("test", 1)):
    os.makedirs(root / split)
    os.makedirs(root / f"{split}annot")
    for k in range(count):
      name = f"{split}_{k:04d}"
      expected[name] = _rgb(rng, 12, 16), _labels(rng, 12, 16, list(range(12)))
      Image.fromarray(expected[name][0]).save(root / split / f"{name}.png")
      Image.fromarray(expected[name][1], mode="L").save(root / f"{split}annot" / f"{name}.png")
  config = _config("camvid", root, tmp_path / "tfds", "train", "test")
  train_ids = lambda label: np.where(label == 11, 255, label)
  _assert_split(config, "train", [n for n in expected if n.startswith("train")], expected, train_ids,
                exact_images=True)
  _assert_split(config, "test", ["test_0000"], expected, train_ids, exact_images=True)
  info = pipeline.dataset_info(config)
  assert (info.num_semantic_classes, info.num_thing_classes, info.num_train, info.num_eval) == (11, 0, 3, 1)
  assert info.semantic_class_names[0] == "sky" and info.semantic_class_names[10] == "bicyclist"
  path = root / "valannot" / "val_0000.png"
  label = expected["val_0000"][1].copy()
  label[0, 0] = 12
  Image.fromarray(label, mode="L").save(path)
  with pytest.raises(DatasetError, match=rf"{path}: label values \[12\] are not in the camvid table"):
    pipeline.prepare(_config("camvid", root, tmp_path / "tfds", "train", "val"))


def _voc_config_at(base):
  root, sbd_root, _ = write_voc(base)
  return _config("voc", root, base / "tfds", "train_aug", "val", sbd_root=str(sbd_root))


def test_voc_errors_name_the_file(tmp_path):
  config = _voc_config_at(tmp_path / "list")
  path = tmp_path / "list" / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation" / "val.txt"
  os.remove(path)
  with pytest.raises(DatasetError, match=f"{path}: split list file does not exist"):
    pipeline.prepare(config)

  config = _voc_config_at(tmp_path / "label")
  path = tmp_path / "label" / "VOCdevkit" / "VOC2012" / "SegmentationClass" / "2007_000039.png"
  os.remove(path)
  with pytest.raises(DatasetError, match=f"{path}: label PNG does not exist"):
    pipeline.prepare(config)

  config = _voc_config_at(tmp_path / "value")
  path = tmp_path / "value" / "VOCdevkit" / "VOC2012" / "SegmentationClass" / "2007_000032.png"
  label = np.asarray(Image.open(path)).copy()
  label[3, 4] = 21
  _palette_png(path, label)
  with pytest.raises(DatasetError, match=rf"{path}: label values \[21\] are not in the voc table"):
    pipeline.prepare(config)

  config = _voc_config_at(tmp_path / "mat")
  path = tmp_path / "mat" / "benchmark_RELEASE" / "dataset" / "cls" / "2008_000003.mat"
  scipy.io.savemat(path, {"GTinst": {"Segmentation": np.zeros((4, 4), np.uint8)}})
  with pytest.raises(DatasetError, match=f"{path}: no struct GTcls with field Segmentation"):
    pipeline.prepare(config)

  config = _voc_config_at(tmp_path / "sbd")
  config.dataset.sbd_root = str(tmp_path / "nowhere")
  with pytest.raises(DatasetError, match=f"{tmp_path / 'nowhere'}: config.dataset.sbd_root does not exist"):
    pipeline.prepare(config)


def test_cityscapes_and_ade20k_errors_name_the_file(tmp_path):
  root, _ = write_cityscapes(tmp_path / "missing")
  path = root / "gtFine" / "train" / "bremen" / "bremen_000007_000019_gtFine_labelIds.png"
  os.remove(path)
  with pytest.raises(DatasetError, match=f"{path}: label PNG does not exist"):
    pipeline.prepare(_config("cityscapes", root, tmp_path / "tfds", "train", "val"))

  root, _ = write_cityscapes(tmp_path / "value")
  path = root / "gtFine" / "val" / "frankfurt" / "frankfurt_000294_000019_gtFine_labelIds.png"
  label = np.asarray(Image.open(path)).copy()
  label[0, 0] = 34
  Image.fromarray(label, mode="L").save(path)
  with pytest.raises(DatasetError, match=rf"{path}: label values \[34\] are not in the cityscapes table"):
    pipeline.prepare(_config("cityscapes", root, tmp_path / "tfds", "train", "val"))

  with pytest.raises(DatasetError, match=f"{root / 'leftImg8bit' / 'test'}: Cityscapes image folder does not"):
    pipeline.prepare(_config("cityscapes", root, tmp_path / "tfds", "train", "test"))

  root, _ = write_ade20k(tmp_path / "ade")
  path = root / "annotations" / "validation" / "ADE_val_00000002.png"
  label = np.asarray(Image.open(path)).copy()
  label[1, 1] = 151
  Image.fromarray(label, mode="L").save(path)
  with pytest.raises(DatasetError, match=rf"{path}: label values \[151\] are not in the ade20k table"):
    pipeline.prepare(_config("ade20k", root, tmp_path / "tfds", "training", "validation"))


def test_unknown_name_is_an_error_naming_the_field(tmp_path):
  with pytest.raises(ValueError, match=r"config.dataset.name must be one of .*'camvid'.*; got 'pascal'"):
    pipeline.prepare(_config("pascal", tmp_path, tmp_path / "tfds", "train", "val"))


def test_tiny_fcn_trains_and_evaluates_on_fake_voc(tmp_path, caplog):
  """The tiny FCN through the loop on a VOC layout whose pixels' class is in their colour: one compile of the train
  step for images of several sizes, and a training loss below what any predictor ignoring the image reaches."""
  root, sbd_root, expected = write_voc(tmp_path / "voc", learnable=True)
  n = 6
  config = tiny_config(root, **{"dataset.name": "voc", "dataset.sbd_root": str(sbd_root),
                                "dataset.train_split": "train_aug", "dataset.eval_split": "val",
                                "dataset.data_dir": str(tmp_path / "tfds"), "total_steps": n,
                                "eval_every_steps": n, "checkpoint_every_steps": n, **FAST_OPTIMIZER})
  jax.config.update("jax_log_compiles", True)
  try:
    with caplog.at_level(logging.WARNING):
      metrics = train_and_evaluate(config, str(tmp_path / "work"), devices=jax.devices()[:1])
  finally:
    jax.config.update("jax_log_compiles", False)
  compiles = [r.getMessage() for r in caplog.records if "Compiling" in r.getMessage()]
  assert sum("train_step" in m for m in compiles) == 1, compiles  # images of several sizes, one static shape
  train = read_metrics(tmp_path / "work")
  assert [r["step"] for r in train] == list(range(1, n + 1))
  # Ignoring the image, the best cross-entropy is the entropy H(p) of the person share p of train_aug's pixels ({a, b,
  # d, e}: about log 2, p ~ 0.47); log 21 at init. The margin: 15% below H(p).
  a, b, _, d, e = sorted(expected)
  p = np.mean(np.concatenate([expected[name][1].ravel() for name in (a, b, d, e)]) == 15)
  image_blind = -(p * np.log(p) + (1 - p) * np.log(1 - p))
  losses = [r["loss"] for r in train]
  assert np.mean(losses[-2:]) < 0.85 * image_blind, losses
  (evaluation,) = read_metrics(tmp_path / "work", "eval")
  assert evaluation["step"] == n and 0.0 <= evaluation["mIoU"] <= 1.0
  assert evaluation["mIoU"] == pytest.approx(metrics["mIoU"])
  with open(tmp_path / "work" / "checkpoints" / str(n) / "identity" / "metadata") as f:
    assert json.load(f)["num_semantic_classes"] == 21  # the model was built for VOC's 21 classes
