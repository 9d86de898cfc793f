"""Compact host batches: bit packing as numpy's, buckets, and the device-side expansion equal to the host's."""
import jax
import ml_collections
import numpy as np
import pytest

from segjax.data import compact
from segjax.data import config as config_lib
from segjax.data import pipeline
from segjax.train import mesh as mesh_lib

H, W, M = 40, 44, 16  # W not a multiple of 8: the last packed byte is partly padding


@pytest.fixture(scope="module")
def config(tmp_path_factory):
  base = tmp_path_factory.mktemp("compact")
  config = ml_collections.ConfigDict({"seed": 3, "batch_size": 4, "dataset": config_lib.default_dataset_config()})
  config.dataset.update(dict(root=str(base / "synthetic"), data_dir=str(base / "tfds"), image_size=(H, W),
                             max_instances=M, num_train=16, num_val=6))
  config.dataset.augment.scale_range = (0.5, 2.0)
  return config


def test_packed_masks_unpack_to_the_masks():
  masks = (np.random.default_rng(0).uniform(size=(3, 5, 13)) > 0.5).astype(np.uint8)
  np.testing.assert_array_equal(compact.unpack_masks(np.packbits(masks, axis=-1), 13), masks)
  probabilities = np.random.default_rng(1).uniform(size=(2, 4, 9)).astype(np.float32)
  np.testing.assert_array_equal(compact.unpack_masks(compact.pack_masks(probabilities, jax.numpy), 9),
                                probabilities > 0.5)


def test_bucket_is_the_smallest_power_of_two_capped_at_max_instances():
  assert [compact.bucket(n, 100) for n in (0, 1, 2, 3, 7, 8, 9, 64, 65, 100)] == [1, 1, 2, 4, 8, 8, 16, 64, 100, 100]
  valid = np.zeros((2, M), bool)
  assert compact.slots_needed(valid) == 0
  valid[1, 4] = True
  assert compact.slots_needed(valid) == 5
  rows = [np.ones((6, 2, 3), np.uint8), np.full((2, 2, 3), 7, np.uint8)]
  stacked = compact.stack_packed(rows, valid)
  assert stacked.shape == (2, 8, 2, 3)
  assert (stacked[0, :6] == 1).all() and not stacked[0, 6:].any()
  assert (stacked[1, :2] == 7).all() and not stacked[1, 2:].any()


def test_device_batch_equals_the_host_expansion_and_does_not_recompile(config):
  mesh = mesh_lib.make_mesh(jax.devices()[:4])
  batches = [next(it) for it in [pipeline.make_train_iterator(config)] for _ in range(4)]
  batches += list(pipeline.make_eval_iterator(config))
  few = dict(batches[0], masks_packed=batches[0]["masks_packed"][:, :2])  # the same images with 2 slots left
  few["instance_valid"] = np.concatenate([few["instance_valid"][:, :2], np.zeros((4, M - 2), bool)], axis=1)
  batches.append(few)
  buckets = {b["masks_packed"].shape[1] for b in batches}
  traces = []

  @jax.jit
  def consume(batch):  # stands for the train step: one program whatever the bucket
    traces.append(1)
    return jax.tree.map(lambda x: x, batch)

  for batch in batches:
    on_device = mesh_lib.global_batch(batch, mesh)
    assert on_device["masks"].sharding == mesh_lib.batch_sharding(mesh)
    expected = compact.expand(batch)
    assert on_device.keys() == expected.keys()
    for key, value in jax.device_get(consume(on_device)).items():
      assert value.dtype == expected[key].dtype, key
      np.testing.assert_array_equal(value, expected[key], err_msg=key)
    # The masks are the model's targets: [B, M, H, W] 0/1, zero on invalid slots, boxes their tight extent.
    masks = expected["masks"]
    assert masks.shape == (4, M, H, W) and set(np.unique(masks)) <= {0, 1}
    np.testing.assert_array_equal(masks.any(axis=(2, 3)), expected["instance_valid"])
  assert len(traces) == 1 and len(buckets) > 1, buckets
