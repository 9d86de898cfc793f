"""Input pipelines: static shapes, exact resume, host chunks, eval padding, augmentation geometry."""
import logging
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from segjax.data import compact
from segjax.data import config as config_lib
from segjax.data import pipeline
from segjax.data.tf_env import tf

H, W = 40, 48
M = 16
NUM_TRAIN, NUM_VAL = 10, 5


def _config(root, data_dir):
  config = ml_collections.ConfigDict({"seed": 5, "batch_size": 4,
                                      "dataset": config_lib.default_dataset_config()})
  config.dataset.update(dict(root=str(root), data_dir=str(data_dir), image_size=(H, W),
                             max_instances=M, num_train=NUM_TRAIN, num_val=NUM_VAL))
  return config


@pytest.fixture(scope="module")
def config(tmp_path_factory):
  base = tmp_path_factory.mktemp("pipeline")
  return _config(base / "synthetic", base / "tfds")


def _take(iterator, n):
  """The model batches (compact.expand) of the next n batches."""
  return [compact.expand(next(iterator)) for _ in range(n)]


def _all(iterator):
  return [compact.expand(batch) for batch in iterator]


def _assert_same(batches_a, batches_b):
  assert len(batches_a) == len(batches_b)
  for a, b in zip(batches_a, batches_b):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def _source(config, split="val2017"):
  """image uint8 and semantic of every example of a split, by image id, from the TFDS build."""
  source = pipeline.prepare(config).as_data_source(split)
  return {int(e["image_id"]): (e["image"], e["semantic"][..., 0], e["instances"]) for e in source}


def test_shapes_dtypes_and_info(config):
  info = pipeline.dataset_info(config)
  assert (info.num_train, info.num_eval, info.image_size) == (NUM_TRAIN, NUM_VAL, (H, W))
  assert info.num_semantic_classes == 7 and info.num_thing_classes == 4
  assert info.thing_category_ids == (1, 2, 3, 4) and info.stuff_category_ids == (101, 102, 103)
  assert info.category_to_semantic[101] == 4 and info.semantic_class_names[4] == "sky"
  assert info.eval_panoptic_json.endswith("annotations/panoptic_val2017.json")
  expected = {"image": ((4, H, W, 3), np.float32), "semantic": ((4, H, W), np.int32),
              "boxes": ((4, M, 4), np.float32), "classes": ((4, M), np.int32),
              "masks": ((4, M, H, W), np.uint8), "is_crowd": ((4, M), np.bool_),
              "instance_valid": ((4, M), np.bool_), "image_id": ((4,), np.int32),
              "valid_image": ((4,), np.bool_), "orig_size": ((4, 2), np.int32),
              "scale": ((4,), np.float32)}
  compact_types = {**expected, "image": ((4, H, W, 3), np.uint8), "semantic": ((4, H, W), np.uint8)}
  del compact_types["masks"]
  for batch in [next(pipeline.make_train_iterator(config)), *pipeline.make_eval_iterator(config)]:
    packed = batch.pop("masks_packed")
    assert {k: (v.shape, v.dtype) for k, v in batch.items()} == compact_types
    k = packed.shape[1]  # the bucket: the smallest power of 2 that holds the last valid slot
    assert packed.shape == (4, k, H, W // 8) and packed.dtype == np.uint8
    assert k in (1, 2, 4, 8, 16) and batch["instance_valid"][:, k // 2:].any() and not batch["instance_valid"][:, k:].any()
  for batch in _take(pipeline.make_train_iterator(config), 2) + _all(pipeline.make_eval_iterator(config)):
    assert {k: (v.shape, v.dtype) for k, v in batch.items()} == expected
    assert 0 <= batch["image"].min() and batch["image"].max() <= 1
    assert set(np.unique(batch["semantic"])) <= set(range(7)) | {255}
    assert set(np.unique(batch["classes"])) <= set(range(5))
  assert not tf.config.get_visible_devices("GPU")


def test_exact_resume(config):
  full = [next(it) for it in [pipeline.make_train_iterator(config)] for _ in range(7)]  # crosses 2 epoch ends
  resumed = pipeline.make_train_iterator(config, start_step=4)
  _assert_same([next(resumed) for _ in range(3)], full[4:])  # the compact batches, buckets included


def test_epochs_visit_every_example_once_in_new_orders_and_seed_matters(config):
  ids = np.concatenate([b["image_id"] for b in _take(pipeline.make_train_iterator(config), 5)])
  assert sorted(ids[:10]) == sorted(ids[10:20]) == list(range(1, NUM_TRAIN + 1))
  assert list(ids[:10]) != list(ids[10:20])
  other = next(pipeline.make_train_iterator(_with_seed(config, 6)))
  assert list(other["image_id"]) != list(ids[:4])


def _with_seed(config, seed):
  new = ml_collections.ConfigDict(config.to_dict())
  new.seed = seed
  return new


def test_two_hosts_take_contiguous_chunks_of_the_global_batch(config):
  full = _take(pipeline.make_train_iterator(config), 4)
  host0 = _take(pipeline.make_train_iterator(config, process_index=0, process_count=2), 4)
  host1 = _take(pipeline.make_train_iterator(config, start_step=2, process_index=1,
                                             process_count=2), 2)
  for step in range(4):
    for key in full[step]:
      np.testing.assert_array_equal(host0[step][key], full[step][key][:2], err_msg=key)
  for step in range(2):
    for key in full[step]:
      np.testing.assert_array_equal(host1[step][key], full[2 + step][key][2:], err_msg=key)


def test_eval_covers_each_example_once_with_padding(config):
  batches = _all(pipeline.make_eval_iterator(config))
  assert len(batches) == 2  # ceil(5 / 4)
  valid = np.concatenate([b["valid_image"] for b in batches])
  ids = np.concatenate([b["image_id"] for b in batches])
  assert valid.tolist() == [True] * 5 + [False] * 3
  assert sorted(ids[valid]) == list(range(1_000_001, 1_000_001 + NUM_VAL))
  last = batches[-1]
  assert (last["image"][1:] == 0).all() and (last["semantic"][1:] == 255).all()
  assert not last["instance_valid"][1:].any() and (last["image_id"][1:] == -1).all()
  assert not last["masks"][1:].any() and not last["boxes"][1:].any()
  hosts = [list(pipeline.make_eval_iterator(config, process_index=p, process_count=2)) for p in (0, 1)]
  assert len(hosts[0]) == len(hosts[1]) == 2
  for step in range(2):
    np.testing.assert_array_equal(
        np.concatenate([hosts[0][step]["image_id"], hosts[1][step]["image_id"]]),
        batches[step]["image_id"])
  train_split = list(pipeline.make_eval_iterator(config, "train2017"))
  assert sorted(np.concatenate([b["image_id"] for b in train_split])[:NUM_TRAIN]) == list(
      range(1, NUM_TRAIN + 1))


def test_eval_without_resize_equals_the_source(config):
  source = _source(config)
  for batch in _all(pipeline.make_eval_iterator(config)):
    for row in np.flatnonzero(batch["valid_image"]):
      image, semantic, inst = source[int(batch["image_id"][row])]
      np.testing.assert_array_equal(np.rint(batch["image"][row] * 255), image)
      np.testing.assert_array_equal(batch["semantic"][row], semantic)
      n = len(inst["label"])
      assert batch["instance_valid"][row].tolist() == [True] * n + [False] * (M - n)
      np.testing.assert_array_equal(batch["classes"][row, :n], inst["label"])
      np.testing.assert_array_equal(batch["is_crowd"][row, :n], inst["is_crowd"])
      np.testing.assert_array_equal(batch["boxes"][row, :n], np.reshape(inst["bbox"], (n, 4)))
      for k in range(n):
        np.testing.assert_array_equal(batch["masks"][row, k],
                                      mask_utils.decode({"size": [H, W], "counts": inst["mask"][k]}))
      assert batch["scale"][row] == 1 and batch["orig_size"][row].tolist() == [H, W]


def _check_geometry(batch):
  """Box == tight mask extent, semantic == class on mask pixels, masks cover all thing pixels."""
  for row in range(len(batch["image_id"])):
    union = np.zeros((H, W), bool)
    for k in range(M):
      mask = batch["masks"][row, k] > 0
      if not batch["instance_valid"][row, k]:
        assert not mask.any() and not batch["boxes"][row, k].any() and batch["classes"][row, k] == 0
        continue
      ys, xs = np.nonzero(mask)
      np.testing.assert_array_equal(batch["boxes"][row, k],
                                    [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
      assert (batch["semantic"][row][mask] == batch["classes"][row, k] - 1).all()
      assert not (union & mask).any()
      union |= mask
    np.testing.assert_array_equal(union, batch["semantic"][row] < 4)


def test_augmentation_keeps_boxes_masks_and_semantic_consistent(config):
  augmented = _with_seed(config, 5)
  augmented.dataset.augment.scale_range = (0.5, 2.0)
  batches = _take(pipeline.make_train_iterator(augmented), 5)
  for batch in batches:
    _check_geometry(batch)
  scales = np.concatenate([b["scale"] for b in batches])
  assert scales.min() < 0.9 and scales.max() > 1.2
  shrunk = 0
  for batch in batches:  # a shrunk image is padded with 255 below and right of it
    for semantic, scale in zip(batch["semantic"], batch["scale"]):
      if scale < 1:
        h, w = np.round(np.float32([H, W]) * scale).astype(int)
        assert (semantic[h:] == 255).all() and (semantic[:, w:] == 255).all()
        assert (semantic[:h, :w] != 255).mean() > 0.9
        shrunk += 1
  assert shrunk


def test_flip_only_gives_the_image_or_its_mirror(config):
  flip_only = _with_seed(config, 5)
  flip_only.dataset.augment.scale_range = (1.0, 1.0)
  source = _source(config, "train2017")
  flipped = []
  for batch in _take(pipeline.make_train_iterator(flip_only), 5):
    for row, image_id in enumerate(batch["image_id"]):
      image, semantic, _ = source[int(image_id)]
      same = np.array_equal(batch["semantic"][row], semantic)
      mirror = np.array_equal(batch["semantic"][row], semantic[:, ::-1])
      assert same or mirror
      expected = image if same else image[:, ::-1]
      np.testing.assert_array_equal(np.rint(batch["image"][row] * 255), expected)
      flipped.append(mirror and not same)
    _check_geometry(batch)
  assert 0 < sum(flipped) < len(flipped)


def test_double_scale_crops_a_window_of_the_upsampled_labels(config):
  zoom = _with_seed(config, 5)
  zoom.dataset.augment.update(scale_range=(2.0, 2.0), flip=False)
  source = _source(config, "train2017")
  offsets = set()
  for batch in _take(pipeline.make_train_iterator(zoom), 3):
    for row, image_id in enumerate(batch["image_id"]):
      big = np.repeat(np.repeat(source[int(image_id)][1], 2, 0), 2, 1)  # nearest 2x
      found = [(y, x) for y in range(H + 1) for x in range(W + 1)
               if np.array_equal(big[y:y + H, x:x + W], batch["semantic"][row])]
      assert found
      offsets.add(found[0])
    _check_geometry(batch)
  assert len(offsets) > 1


def test_eval_resizes_to_fit_and_pads(config):
  small = _with_seed(config, 5)
  small.dataset.update(name="coco", image_size=(30, 30))
  batch = compact.expand(next(pipeline.make_eval_iterator(small)))
  assert batch["image"].shape == (4, 30, 30, 3)
  np.testing.assert_allclose(batch["scale"], 0.625)  # min(30 / 40, 30 / 48)
  assert (batch["orig_size"] == [H, W]).all()
  assert (batch["semantic"][:, 25:] == 255).all() and (batch["image"][:, 25:] == 0).all()
  assert (batch["semantic"][:, :25] != 255).mean() > 0.9
  valid = batch["instance_valid"]
  assert valid.any()
  np.testing.assert_array_equal(batch["boxes"][..., 2:][valid] <= [30, 25], True)


def test_instances_beyond_max_are_dropped_and_counted(config, caplog):
  few = _with_seed(config, 5)
  few.dataset.max_instances = 2
  with caplog.at_level(logging.WARNING):
    batch = compact.expand(next(pipeline.make_eval_iterator(few)))
  assert batch["masks"].shape == (4, 2, H, W)
  messages = [r.getMessage() for r in caplog.records if "beyond max_instances=2" in r.getMessage()]
  assert messages and messages[0].startswith("dropped ")
  source = _source(config)
  dropped = sum(max(len(source[int(i)][2]["label"]) - 2, 0) for i in batch["image_id"])
  assert messages[0] == f"dropped {dropped} instances beyond max_instances=2 in " \
      f"{sum(len(source[int(i)][2]['label']) > 2 for i in batch['image_id'])} images so far"


def test_bad_arguments(config):
  with pytest.raises(ValueError, match="config.batch_size=4 must be a positive multiple of "
                     "process_count=3"):
    pipeline.make_train_iterator(config, process_count=3)
  with pytest.raises(ValueError, match=r"process_index=2 must be in \[0, process_count=2\)"):
    pipeline.make_eval_iterator(config, process_index=2, process_count=2)
  other = _with_seed(config, 5)
  other.dataset.name = "kitti"
  with pytest.raises(ValueError, match="config.dataset.name must be one of 'synthetic', 'coco', 'cvppp', 'cityscapes_instances', 'voc', "
                     "'cityscapes', 'ade20k', 'camvid', 'isbi_cells'; got 'kitti'"):
    pipeline.dataset_info(other)


def test_process_exits_with_a_live_train_iterator(config):
  """An endless iterator left open must not hang interpreter exit (tf.data.from_generator did)."""
  script = (
      "import ml_collections, sys\n"
      "from segjax.data import pipeline\n"
      f"config = ml_collections.ConfigDict({config.to_dict()!r})\n"
      "it = pipeline.make_train_iterator(config)\n"
      "next(it); next(it)\n"
      "print('done')\n")
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, cwd=os.path.dirname(os.path.dirname(__file__)))
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.splitlines()[-1] == "done"
  assert "Exception ignored" not in result.stderr


def test_train_batches_carry_only_the_labels_the_model_reads(config):
  """`keys` (a model's BATCH_KEYS): the labels no key reads are not decoded, and the others are those of the full
  batch, so an instance model's batches equal the full ones less "semantic" and a semantic model's have no masks."""
  full = _take(pipeline.make_train_iterator(config), 2)
  instance = _take(pipeline.make_train_iterator(config, keys=("image", "boxes", "classes", "masks", "is_crowd",
                                                                  "instance_valid")), 2)
  semantic = _take(pipeline.make_train_iterator(config, keys=("image", "semantic")), 2)
  assert all(b["instance_valid"].any() for b in full)
  _assert_same([{k: v for k, v in b.items() if k != "semantic"} for b in full], instance)
  for f, s in zip(full, semantic):
    assert not s["instance_valid"].any() and not s["masks"].any()
    for key in ("image", "semantic", "image_id", "orig_size", "scale"):
      np.testing.assert_array_equal(s[key], f[key], err_msg=key)


def test_unet_weight_map_needs_stored_instance_ids(config):
  """config.dataset.unet_weight_map on a set without instance id maps (the COCO-format synthetic set) is an error
  naming the key when a model reads pixel_weights; a model that does not read them trains as before."""
  weighted = ml_collections.ConfigDict(config.to_dict())
  weighted.dataset.unet_weight_map = True
  with pytest.raises(ValueError, match="config.dataset.unet_weight_map needs instance id maps"):
    pipeline.make_train_iterator(weighted, keys=("image", "semantic", "pixel_weights"))
  batch = next(pipeline.make_train_iterator(weighted, keys=("image", "semantic")))
  assert "pixel_weights" not in batch and "semantic" in batch


def test_hue_rotation_keeps_geometry_and_each_pixels_value_and_chroma(config):
  """augment.hue: the same geometry and labels as without it; a hue rotation in HSV keeps each pixel's V = max(R, G, B)
  and chroma max - min, up to the uint8 rounding, while the colours change."""
  rotated = ml_collections.ConfigDict(config.to_dict())
  rotated.dataset.augment.hue = 0.5
  changed = 0
  batches = zip(_take(pipeline.make_train_iterator(config), 2), _take(pipeline.make_train_iterator(rotated), 2))
  for plain, hued in batches:
    assert plain.keys() == hued.keys()
    for key in plain:
      if key != "image":
        np.testing.assert_array_equal(plain[key], hued[key], err_msg=key)
    a, b = np.rint(plain["image"] * 255), np.rint(hued["image"] * 255)
    np.testing.assert_allclose(b.max(-1), a.max(-1), atol=1.01)
    np.testing.assert_allclose(b.max(-1) - b.min(-1), a.max(-1) - a.min(-1), atol=2.01)
    changed += np.mean(np.abs(a - b).max(-1) > 8)
  assert changed > 0.5
