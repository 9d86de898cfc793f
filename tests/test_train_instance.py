"""The loop's instance path end to end: COCO AP in metrics.jsonl, results JSON, pictures, FORWARD_KEYS, no
recompiles, and the pretrained-weights merge of config.init_from."""
import logging
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from segjax import models
from segjax.train import pretrained
from segjax.train.loop import train_and_evaluate
from train_util import FAST_OPTIMIZER, read_metrics, tiny_config

# The per-pixel binary cross-entropy of the best masks that ignore the image: each thing class's pixel share p in the
# tiny synthetic training split (64 x 64: 4.8, 4.1, 2.5 and 2.0%) gives mean_k H(p_k) = 0.145 nats (log 2 = 0.69 at
# init). The run must end at 0.7 times that: it finds the shapes by their colours.
IMAGE_BLIND_BCE = 0.145


@pytest.fixture(scope="module")
def instance_run(tmp_path_factory):
  root = tmp_path_factory.mktemp("instance_loop") / "data"
  workdir = tmp_path_factory.mktemp("instance_workdir")
  patch = pytest.MonkeyPatch()
  patch.setitem(models._MODELS, "per_class_masks", "per_class_instance_model")
  # 40 steps at a constant 0.02: the two-conv model is cheap; its eval is at 20 and 40.
  config = tiny_config(root, total_steps=40, eval_every_steps=20, **{**FAST_OPTIMIZER, "optimizer.learning_rate": 0.02})
  config.model = ml_collections.ConfigDict({"name": "per_class_masks"})
  logger = logging.getLogger("jax._src.dispatch")
  records = []
  handler = logging.Handler()
  handler.emit = records.append
  logger.addHandler(handler)
  try:
    with jax.log_compiles():
      metrics = train_and_evaluate(config, str(workdir))
  finally:
    logger.removeHandler(handler)
    patch.undo()
  return workdir, metrics, [r.getMessage() for r in records]


def test_coco_metrics_results_and_pictures(instance_run):
  workdir, metrics, _ = instance_run
  evaluations = read_metrics(workdir, "eval")
  assert [r["step"] for r in evaluations] == [20, 40]
  for name in ("box_AP", "box_AP50", "mask_AP", "mask_AP50", "mask_APl"):
    assert -1.0 <= evaluations[-1][name] <= 1.0 and evaluations[-1][name] == pytest.approx(metrics[name])
  # Masks that ignore the image (the same in every image) almost never overlap an instance by IoU 0.5: AP50 ~ 0.
  # One mask per class (the union of its instances) caps AP50 on images with two of a class; 0.05 is the margin.
  assert evaluations[-1]["mask_AP50"] > 0.05, evaluations[-1]
  assert os.path.getsize(workdir / "coco_results_segm.json") > 0
  assert os.path.getsize(workdir / "coco_results_bbox.json") > 0
  assert os.path.getsize(workdir / "pictures" / "eval_step000040.png") > 0


def test_targets_and_sampling_rng_reach_the_forward_pass(instance_run):
  workdir, _, _ = instance_run
  train = read_metrics(workdir)
  assert all(r["num_targets"] > 0 for r in train)  # the mean over a log step of the batch's instance count
  samples = [r["sample"] for r in train]
  assert len(set(samples)) == len(samples) and all(0 <= s < 1 for s in samples)
  losses = [r["loss"] for r in train]  # the targets reach the loss: it falls below the image-blind masks' loss
  assert np.mean(losses[-4:]) < 0.7 * IMAGE_BLIND_BCE, losses


def test_train_and_eval_steps_compile_once(instance_run):
  """One compile each, and that one train step trained the model (the loss ends below the image-blind masks')."""
  workdir, _, messages = instance_run
  losses = [r["loss"] for r in read_metrics(workdir)]
  assert np.mean(losses[-4:]) < 0.7 * IMAGE_BLIND_BCE, losses
  compiled = [m for m in messages if "Finished XLA compilation of jit(train_step)" in m
              or "Finished XLA compilation of jit(eval_step)" in m]
  assert len([m for m in compiled if "train_step" in m]) == 1, compiled
  assert len([m for m in compiled if "eval_step" in m]) == 1, compiled


def test_merge_pretrained_into_backbone_and_top_level(tmp_path):
  variables = {"params": {"backbone": {"conv": {"kernel": jnp.zeros((3, 3, 3, 4))}}, "head": {"bias": jnp.ones(2)}},
               "batch_stats": {"backbone": {"bn": {"mean": jnp.zeros(4)}}}}
  saved = {"params": {"conv": {"kernel": np.full((3, 3, 3, 4), 2.0, np.float32)}},
           "batch_stats": {"bn": {"mean": np.arange(4, dtype=np.float32)}}}
  path = tmp_path / "converted" / "variables"
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(str(path), saved)
  checkpointer.wait_until_finished()
  merged = pretrained.merge_pretrained(variables, pretrained.load_variables(str(tmp_path / "converted")))
  np.testing.assert_array_equal(merged["params"]["backbone"]["conv"]["kernel"], 2.0)
  np.testing.assert_array_equal(merged["batch_stats"]["backbone"]["bn"]["mean"], np.arange(4))
  np.testing.assert_array_equal(merged["params"]["head"]["bias"], 1.0)  # not in the checkpoint: kept
  whole = pretrained.merge_pretrained(variables, {"params": {"head": {"bias": np.zeros(2, np.float32)}}})
  np.testing.assert_array_equal(whole["params"]["head"]["bias"], 0.0)
  wrapped = {"params": {"base": variables["params"], "crf": {"compatibility": -jnp.eye(2)}}}  # crf_rnn's layout
  merged = pretrained.merge_pretrained(wrapped, {"params": {"head": {"bias": np.zeros(2, np.float32)}}})
  np.testing.assert_array_equal(merged["params"]["base"]["head"]["bias"], 0.0)
  merged = pretrained.merge_pretrained(wrapped, {"params": saved["params"]})
  np.testing.assert_array_equal(merged["params"]["base"]["backbone"]["conv"]["kernel"], 2.0)
  np.testing.assert_array_equal(merged["params"]["crf"]["compatibility"], -np.eye(2))


def test_merge_pretrained_errors_name_the_variable():
  variables = {"params": {"backbone": {"conv": {"kernel": jnp.zeros((3, 3, 3, 4))}}}}
  with pytest.raises(ValueError, match="shapes differ: .*backbone/conv/kernel"):
    pretrained.merge_pretrained(variables, {"params": {"conv": {"kernel": np.zeros((1, 1, 3, 4))}}})
  with pytest.raises(ValueError, match="fit neither"):
    pretrained.merge_pretrained(variables, {"params": {"fc": {"kernel": np.zeros((2, 2))}}})
