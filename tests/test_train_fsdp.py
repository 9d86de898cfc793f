"""FSDP (parameters and optimizer state sharded over the data axis) against data parallelism on 8 devices."""
import jax
import numpy as np
import optax
import pytest

from segjax.data import pipeline
from segjax.models import get_model
from segjax.train import mesh as mesh_lib
from segjax.train.loop import _initial_state, train_and_evaluate
from train_util import read_metrics, tiny_config


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
  return tmp_path_factory.mktemp("synthetic_fsdp") / "data"


def test_fsdp_gives_the_losses_of_data_parallel(data_root, tmp_path):
  losses = {}
  for fsdp in (False, True):
    workdir = tmp_path / f"fsdp_{fsdp}"
    train_and_evaluate(tiny_config(data_root, fsdp=fsdp, total_steps=4, eval_every_steps=4), str(workdir))
    losses[fsdp] = [r["loss"] for r in read_metrics(workdir)]
  np.testing.assert_allclose(losses[True], losses[False], rtol=1e-5)


def test_fsdp_really_shards_parameters_and_optimizer_state(data_root):
  config = tiny_config(data_root, fsdp=True)
  mesh = mesh_lib.make_mesh()
  module = get_model(config.model.name).build(config.model, pipeline.dataset_info(config))
  state, _ = _initial_state(module, optax.adamw(1e-3), config, mesh)
  sharded = total = 0
  for leaf in jax.tree.leaves(state.params) + jax.tree.leaves(state.opt_state):
    total += leaf.size
    shard_size = leaf.addressable_shards[0].data.size
    if shard_size < leaf.size:
      assert shard_size * mesh.size == leaf.size
      sharded += leaf.size
  assert sharded / total > 0.95, (sharded, total)
  assert all(s.sharding.is_fully_replicated for s in jax.tree.leaves(state.batch_stats))
