"""The ISBI cell tracking reader on a fake layout the test writes, and U-Net's weight map (Eq. 2) against a
brute-force evaluation of the equation."""
import ml_collections
import numpy as np
import pytest
from PIL import Image

from segjax.data import DatasetError
from segjax.data import config as config_lib
from segjax.data import pipeline
from segjax.data.unet_weights import unet_weight_map


def _write_sequence(root, sequence, frames, annotated, rng):
  (root / sequence).mkdir(parents=True)
  (root / f"{sequence}_GT" / "SEG").mkdir(parents=True)
  expected = {}
  for t in range(frames):
    grey = rng.integers(0, 255, (20, 24)).astype(np.uint8)
    Image.fromarray(grey, mode="L").save(root / sequence / f"t{t:03d}.tif")
    if t in annotated:
      instances = np.zeros((20, 24), np.uint16)
      instances[2:8, 3:9] = 7
      instances[10:18, 12:20] = 300 + t  # instance ids beyond 255
      Image.fromarray(instances).save(root / f"{sequence}_GT" / "SEG" / f"man_seg{t:03d}.tif")
      expected[f"{sequence}_{t:03d}"] = (grey, (instances > 0).astype(np.uint8))
  return expected


def _config(root, data_dir, train_split, eval_split):
  config = ml_collections.ConfigDict({"seed": 0, "batch_size": 2, "dataset": config_lib.default_dataset_config()})
  config.dataset.update(dict(name="isbi_cells", root=str(root), data_dir=str(data_dir), train_split=train_split,
                             eval_split=eval_split))
  return config


def test_annotated_frames_become_cell_background_labels(tmp_path):
  rng, root = np.random.default_rng(0), tmp_path / "PhC-C2DH-U373"
  expected = {**_write_sequence(root, "01", 4, {0, 2, 3}, rng), **_write_sequence(root, "02", 3, {1}, rng)}
  config = _config(root, tmp_path / "tfds", "01", "02")
  source = pipeline.prepare(config).as_data_source("01")
  examples = sorted(source, key=lambda e: int(e["image_id"]))
  assert len(examples) == 3
  for example, name in zip(examples, ["01_000", "01_002", "01_003"]):
    grey, label = expected[name]
    np.testing.assert_array_equal(example["image"], np.repeat(grey[..., None], 3, -1))
    np.testing.assert_array_equal(example["semantic"][..., 0], label)
  info = pipeline.dataset_info(config)
  assert (info.num_semantic_classes, info.num_train, info.num_eval) == (2, 3, 1)
  joined = _config(root, tmp_path / "tfds", "train", "02")
  assert len(pipeline.prepare(joined).as_data_source("train")) == 4


def test_bad_files_are_named(tmp_path):
  rng, root = np.random.default_rng(1), tmp_path / "cells"
  _write_sequence(root, "01", 2, {1}, rng)
  (root / "01" / "t001.tif").write_bytes(b"not a tiff")
  with pytest.raises(DatasetError, match=r"t001\.tif: image fails to decode"):
    pipeline.prepare(_config(root, tmp_path / "tfds", "01", "01"))
  with pytest.raises(DatasetError, match=r"02: ISBI sequence folder does not exist"):
    pipeline.prepare(_config(root, tmp_path / "tfds2", "01", "02"))


def _brute_force_weights(instances, w0, sigma):
  """Eq. 2 pixel by pixel: class weights by counting, d_1 and d_2 as minima over every pixel of every cell."""
  h, w = instances.shape
  foreground = instances > 0
  n_fg, n_bg = foreground.sum(), (~foreground).sum()
  wc = np.where(foreground, h * w / (2 * n_fg), h * w / (2 * n_bg))
  cells = [np.argwhere(instances == k) for k in np.unique(instances) if k]
  out = wc.astype(np.float64)
  for y in range(h):
    for x in range(w):
      if foreground[y, x]:
        continue
      d = sorted(np.sqrt(((c - (y, x)) ** 2).sum(1)).min() for c in cells)
      out[y, x] += w0 * np.exp(-((d[0] + d[1]) ** 2) / (2 * sigma**2))
  return out


def test_weight_map_equals_equation_2():
  instances = np.zeros((24, 26), np.int32)
  instances[2:10, 2:11] = 1  # two cells touching across a 1-pixel gap, a third apart
  instances[2:10, 12:20] = 2
  instances[15:22, 5:12] = 3
  np.testing.assert_allclose(unet_weight_map(instances, 10, 5), _brute_force_weights(instances, 10, 5), rtol=1e-5)
  gap, far = unet_weight_map(instances)[5, 11], unet_weight_map(instances)[23, 25]
  assert gap > 9 and far < gap  # the gap between touching cells weighs most


def _write_cells(root, sequence, instance_maps, rng):
  """Frames t000.. with the given instance maps (uint16 TIFFs) as their SEG ground truth."""
  (root / sequence).mkdir(parents=True)
  (root / f"{sequence}_GT" / "SEG").mkdir(parents=True)
  for t, instances in enumerate(instance_maps):
    grey = rng.integers(0, 255, instances.shape).astype(np.uint8)
    Image.fromarray(grey, mode="L").save(root / sequence / f"t{t:03d}.tif")
    Image.fromarray(instances.astype(np.uint16)).save(root / f"{sequence}_GT" / "SEG" / f"man_seg{t:03d}.tif")


def _touching_cells(shift):
  instances = np.zeros((20, 24), np.uint16)
  instances[2:9, 2 + shift:10 + shift] = 5  # two cells across a 1-pixel gap, a third apart
  instances[2:9, 11 + shift:18 + shift] = 400
  instances[12:19, 4:12] = 9
  return instances


@pytest.mark.parametrize("image_size", [(20, 24), (10, 16)], ids=["source_size", "half_size_padded"])
def test_train_batches_carry_the_weight_map_of_the_source_instances(tmp_path, image_size):
  """config.dataset.unet_weight_map: each train row's pixel_weights is unet_weight_map of its frame's instances at
  the source size (w0 10, sigma 5 as the paper's), resampled by the labels' rule: TensorFlow's nearest resize into
  the batch size (here a fit without crop: 20x24 -> 10x12), zero on the padding, where the semantic label is 255.
  Only a model that reads pixel_weights gets them, and only in training."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from segjax.models import unet  # pylint: disable=g-import-not-at-top
  rng, root = np.random.default_rng(2), tmp_path / "cells"
  maps = [_touching_cells(0), _touching_cells(3)]
  _write_cells(root, "01", maps, rng)
  config = _config(root, tmp_path / "tfds", "01", "01")
  config.dataset.update(dict(image_size=image_size, unet_weight_map=True, num_workers=1))
  config.dataset.augment.update(dict(scale_range=(1.0, 1.0), flip=False))
  batch = next(pipeline.make_train_iterator(config, keys=unet.BATCH_KEYS))
  assert batch["pixel_weights"].shape == (2, *image_size) and batch["pixel_weights"].dtype == np.float32
  for row, image_id in enumerate(batch["image_id"]):
    weights = unet_weight_map(maps[image_id], 10.0, 5.0)
    size = (20, 24) if image_size == (20, 24) else (10, 12)
    resized = tf.image.resize(weights[..., None], size, "nearest").numpy()[..., 0]
    expected = np.zeros(image_size, np.float32)
    expected[:size[0], :size[1]] = resized
    np.testing.assert_array_equal(batch["pixel_weights"][row], expected)
    assert (batch["semantic"][row][expected == 0] == 255).all()
    if size == image_size:
      assert batch["pixel_weights"][row].max() > 9  # the gap between the touching cells
  assert "pixel_weights" not in next(pipeline.make_train_iterator(config, keys=("image", "semantic")))
  assert "pixel_weights" not in next(pipeline.make_eval_iterator(config))
