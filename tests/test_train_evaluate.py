"""Evaluation without training (--mode=evaluate, its programs written to --compilation_cache_dir; init_from), a
finished run's final metrics, segjax.load, Predictor.from_workdir, test-time augmentation through the loop, and which
config changes a checkpoint accepts."""
import os
import types

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

import segjax
from segjax.data import pipeline
from segjax.evaluation.semantic import SemanticEvaluator
from segjax.inference import Predictor
from segjax.models import mask_rcnn
from segjax.train import loop
from segjax.train.checkpoint import CheckpointMismatchError
from train_util import read_metrics, run_cli, tiny_config

RUN = {"total_steps": 4, "eval_every_steps": 4, "checkpoint_every_steps": 2}
TTA = {"eval.scales": (0.75, 1.0), "eval.flip": True}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
  return tmp_path_factory.mktemp("synthetic") / "data"


@pytest.fixture(scope="module")
def trained(data_root, tmp_path_factory):
  """A workdir trained 4 steps (checkpoints 2 and 4), and the eval line it wrote at step 4."""
  workdir = tmp_path_factory.mktemp("trained")
  loop.train_and_evaluate(tiny_config(data_root, **RUN), str(workdir))
  (line,) = read_metrics(workdir, "eval")
  return workdir, line


def _metrics(line):
  return {k: v for k, v in line.items() if k not in ("step", "split")}


def test_evaluate_mode_reproduces_the_training_evaluation(trained, data_root, tmp_path):
  workdir, line = trained
  cache = tmp_path / "compilation_cache"
  process = run_cli(workdir, data_root, extra=["--mode=evaluate", f"--compilation_cache_dir={cache}"], **RUN)
  output, _ = process.communicate(timeout=600)
  assert process.returncode == 0, output
  assert os.listdir(cache)  # the run's programs, written to the folder of --compilation_cache_dir
  assert f"eval: mIoU {line['mIoU']:.4f}" in output
  first, again = read_metrics(workdir, "eval")[:2]
  assert first == line and again["step"] == 4
  assert _metrics(again) == pytest.approx(_metrics(line), abs=1e-7)
  assert [r["step"] for r in read_metrics(workdir)] == [1, 2, 3, 4]  # the training lines are kept
  assert (workdir / "pictures" / "evaluate_step000004.png").stat().st_size > 0


def test_rerun_of_a_finished_run_returns_its_final_metrics(trained, data_root):
  workdir, line = trained
  metrics = loop.train_and_evaluate(tiny_config(data_root, **RUN), str(workdir))
  assert metrics == pytest.approx(_metrics(line), abs=1e-7)


def test_load_reads_config_and_variables_without_optimizer_state(trained):
  workdir, _ = trained
  config, variables = segjax.load(workdir)
  assert config.model.width == 8 and config.total_steps == 4
  assert set(variables) == {"params", "batch_stats"}
  saved = ocp.StandardCheckpointer().restore(workdir / "checkpoints" / "4" / "state")
  for collection in ("params", "batch_stats"):
    jax.tree.map(np.testing.assert_array_equal, variables[collection], saved[collection])
  _, older = segjax.load(workdir, step=2)
  assert not np.array_equal(jax.tree.leaves(older["params"])[0], jax.tree.leaves(variables["params"])[0])
  with pytest.raises(FileNotFoundError, match=r"no checkpoint of step 3; saved steps \[2, 4\]"):
    segjax.load(workdir, step=3)


def test_multi_scale_flip_evaluation_equals_the_predictors(trained, data_root, tmp_path):
  """config.eval through the loop and Predictor(scales, flip) over the same eval batches give one confusion matrix."""
  workdir, line = trained
  config = tiny_config(data_root, **RUN, **TTA)
  metrics = loop.evaluate_checkpoint(config, str(workdir))
  predictor = Predictor.from_workdir(workdir, scales=TTA["eval.scales"], flip=True)
  evaluator = SemanticEvaluator(pipeline.dataset_info(config).num_semantic_classes)
  for batch in pipeline.make_eval_iterator(config):
    labels = np.stack([r["labels"] for r in predictor(batch["image"])])
    evaluator.update(evaluator.device_stats({"labels": jnp.asarray(labels)}, batch))
  assert metrics == pytest.approx(evaluator.result(), abs=1e-7)
  assert metrics != pytest.approx(_metrics(line), abs=1e-4)  # the augmentation changed the predictions


def test_evaluates_init_from_weights_in_an_empty_workdir(trained, data_root, tmp_path):
  workdir, line = trained
  _, variables = segjax.load(workdir)
  ocp.StandardCheckpointer().save(tmp_path / "converted" / "variables", variables)
  config = tiny_config(data_root, **RUN, init_from=str(tmp_path / "converted"))
  metrics = loop.evaluate_checkpoint(config, str(tmp_path / "fresh"))
  assert metrics == pytest.approx(_metrics(line), abs=1e-7)
  (written,) = read_metrics(tmp_path / "fresh", "eval")
  assert written["step"] == 0
  with pytest.raises(FileNotFoundError, match="has no checkpoints and config.init_from is not set"):
    loop.evaluate_checkpoint(tiny_config(data_root, **RUN), str(tmp_path / "empty"))


def test_tta_is_refused_for_instance_models():
  with pytest.raises(ValueError, match="config.eval.scales / flip: test-time augmentation is for semantic"):
    loop.eval_options(types.SimpleNamespace(get=lambda _: {"scales": (1.0,), "flip": True}), "instance")
  with pytest.raises(ValueError, match=r"config.eval.scales: a non-empty sequence of positive numbers; got \(0.5, 0\)"):
    loop.eval_options(types.SimpleNamespace(get=lambda _: {"scales": (0.5, 0)}), "semantic")


def _save(checkpointer, step=1):
  state = {"params": {"w": jnp.ones(3)}}
  checkpointer.maybe_save(step, state, force=True)
  checkpointer.wait()
  checkpointer.close()
  return state


def test_inference_keys_may_change_architecture_keys_may_not(tmp_path):
  """A Mask R-CNN checkpoint evaluates with another score_threshold or detections_per_image; another depth is
  refused, the field named."""
  info = types.SimpleNamespace(num_semantic_classes=3)
  config = types.SimpleNamespace(model=mask_rcnn.model_config(), checkpoint_every_steps=1, keep_checkpoints=1)
  state = _save(loop._checkpointer(config, info, str(tmp_path)))  # pylint: disable=protected-access
  config.model.score_threshold, config.model.detections_per_image = 0.5, 20
  checkpointer = loop._checkpointer(config, info, str(tmp_path))  # pylint: disable=protected-access
  restored, step = checkpointer.restore(state)
  assert step == 1 and np.array_equal(restored["params"]["w"], np.ones(3))
  config.model.depth = 101
  checkpointer = loop._checkpointer(config, info, str(tmp_path))  # pylint: disable=protected-access
  with pytest.raises(CheckpointMismatchError, match=r"another model: model.depth: saved 50, config 101\. "):
    checkpointer.restore(state)
