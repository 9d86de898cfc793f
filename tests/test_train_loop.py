"""The main job end to end on a tiny synthetic set: sharding, resume, preemption, recompilation, refusals."""
import logging
import os
import re
import signal

import jax
import numpy as np
import pytest

from segjax.train.checkpoint import CheckpointMismatchError
from segjax.train.loop import train_and_evaluate
from train_util import (majority_pixel_share, read_metrics, run_cli, tiny_config, wait_for_checkpoint,
                        wait_for_step)

# The resume tests' run: 30 steps, a checkpoint at the end only (each save costs the tiny run about as much as 5
# steps); the SIGKILL case adds one every 10 steps, the last of which its restart resumes from.
RESUME = {"total_steps": 30, "eval_every_steps": 30, "checkpoint_every_steps": 30}
PERIODIC_CHECKPOINTS = {"checkpoint_every_steps": 10}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
  return tmp_path_factory.mktemp("synthetic") / "data"


@pytest.fixture(scope="module")
def eight_device_run(data_root, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("eight")
  metrics = train_and_evaluate(tiny_config(data_root), str(workdir))
  return workdir, metrics


@pytest.fixture(scope="module")
def uninterrupted_run(data_root, tmp_path_factory):
  """The reference for the resume tests: the same command, never interrupted."""
  workdir = tmp_path_factory.mktemp("uninterrupted")
  process = run_cli(workdir, data_root, **RESUME)
  output, _ = process.communicate(timeout=600)
  assert process.returncode == 0, output
  return read_metrics(workdir), output, workdir


def test_writes_metrics_pictures_and_checkpoints(eight_device_run):
  workdir, metrics = eight_device_run
  train = read_metrics(workdir)
  assert [r["step"] for r in train] == [1, 2, 3, 4, 5, 6]
  assert all(np.isfinite(r["loss"]) and r["learning_rate"] > 0 for r in train)
  (evaluation,) = read_metrics(workdir, "eval")
  for name in ("mIoU", "pixel_acc", "mean_acc", "fwIoU"):
    assert 0.0 <= evaluation[name] <= 1.0 and evaluation[name] == pytest.approx(metrics[name])
  assert os.path.getsize(workdir / "pictures" / "eval_step000006.png") > 0
  assert sorted(os.listdir(workdir / "checkpoints")) == ["3", "6"]
  assert os.listdir(workdir / "tensorboard")


def test_one_device_gives_the_losses_of_eight(eight_device_run, data_root, tmp_path):
  workdir, _ = eight_device_run
  train_and_evaluate(tiny_config(data_root), str(tmp_path), devices=jax.devices()[:1])
  one = [r["loss"] for r in read_metrics(tmp_path)]
  eight = [r["loss"] for r in read_metrics(workdir)]
  # The gradient all-reduce sums in another order; AdamW's normalised update turns those last-bit differences
  # into 1e-5..1e-4 relative loss differences within 6 steps. A wrong shard changes the loss by > 1e-2.
  np.testing.assert_allclose(one[:2], eight[:2], rtol=1e-6)
  np.testing.assert_allclose(one, eight, rtol=3e-4)


def test_compiles_the_train_step_once(data_root, tmp_path, caplog):
  jax.config.update("jax_log_compiles", True)
  try:
    with caplog.at_level(logging.WARNING):
      train_and_evaluate(tiny_config(data_root, total_steps=4, eval_every_steps=2), str(tmp_path))
  finally:
    jax.config.update("jax_log_compiles", False)
  compiles = [r.getMessage() for r in caplog.records if "Compiling" in r.getMessage()]
  assert sum("train_step" in m for m in compiles) == 1, compiles
  assert sum("eval_step" in m for m in compiles) == 1, compiles


# SIGTERM in one process is slow-marked: make test sends it to one of two processes
# (test_train_multiprocess.py), which runs the same handler and also checks that the processes agree on the step.
@pytest.mark.parametrize("stop", [signal.SIGKILL, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)])
def test_restart_resumes_exactly(stop, data_root, tmp_path, uninterrupted_run):
  """SIGKILL after the checkpoint of step 10: the restart resumes from it. SIGTERM (preemption) after step 3 of a run
  without periodic checkpoints: the run saves the step it is at and exits 0; the restart resumes from that step.
  Either way the losses are those of the uninterrupted run."""
  overrides = {**RESUME, **PERIODIC_CHECKPOINTS} if stop == signal.SIGKILL else RESUME
  process = run_cli(tmp_path, data_root, **overrides)
  if stop == signal.SIGKILL:
    wait_for_checkpoint(tmp_path, PERIODIC_CHECKPOINTS["checkpoint_every_steps"], [process], timeout=300)
  else:
    wait_for_step(tmp_path, 3, [process])
  process.send_signal(stop)
  output, _ = process.communicate(timeout=300)
  if stop == signal.SIGTERM:
    assert process.returncode == 0, output
    assert "exiting" in output
  saved = max(int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit())
  assert saved < RESUME["total_steps"], "the run ended before the signal: nothing was tested"

  process = run_cli(tmp_path, data_root, **overrides)
  output, _ = process.communicate(timeout=600)
  assert process.returncode == 0, output
  assert f"Restored step {saved}" in output
  resumed = read_metrics(tmp_path)
  assert [r["step"] for r in resumed] == list(range(1, RESUME["total_steps"] + 1))
  for got, expected in zip(resumed, uninterrupted_run[0]):
    assert got["loss"] == pytest.approx(expected["loss"], rel=1e-6), got["step"]


def test_console_shows_progress_results_and_paths_only(uninterrupted_run):
  """Without --verbose: one line per log step (with ETA), the eval metrics and the output paths; no INFO logs of
  absl, orbax, TFDS or TensorFlow's start-up. Warnings and errors stay."""
  rows, output, _ = uninterrupted_run
  lines = output.splitlines()
  steps = [line for line in lines if line.startswith("step ")]
  assert len(steps) == len(rows) == RESUME["total_steps"], output
  assert all(" loss " in line and " steps/s " in line and " ETA " in line for line in steps), output
  assert sum(line.startswith("final eval: mIoU ") for line in lines) == 1, output
  for name in ("metrics", "tensorboard", "checkpoints", "pictures"):
    assert sum(line.startswith(f"{name}: ") for line in lines) == 1, output
  for noise in ("orbax", "CheckpointManager", "Downloading and preparing", "oneDNN custom operations",
                "Using custom data configuration", "libtpu"):
    assert noise not in output
  assert not [line for line in lines if re.match(r"I\d{4} ", line)], output  # absl's INFO format
  others = [line for line in lines if not line.startswith(("step ", "eval at step ", "final eval: ", "data: ",
                                                             "metrics: ", "tensorboard: ", "checkpoints: ",
                                                             "pictures: "))
            and not re.match(r"[WE]\d{4} ", line)]  # warnings and errors stay (e.g. orbax waiting on a save)
  assert len(others) <= 3, others


def test_thirty_steps_beat_chance(uninterrupted_run, data_root):
  """The tiny FCN (width 8, 24 training images) after RESUME's 30 steps predicts better than the most frequent class
  everywhere: its pixel accuracy exceeds the best image-blind predictor's (the most frequent class's share of the
  pixels, majority_pixel_share) by a margin of 0.2."""
  (evaluation,) = read_metrics(uninterrupted_run[2], "eval")
  assert evaluation["pixel_acc"] > majority_pixel_share(data_root) + 0.2, evaluation


def test_refuses_a_workdir_of_another_model(eight_device_run, data_root):
  workdir, _ = eight_device_run
  with pytest.raises(CheckpointMismatchError, match=r"another model.*model.width: saved 8, config 16"):
    train_and_evaluate(tiny_config(data_root, **{"model.width": 16}), str(workdir))


def test_unknown_config_key_is_named(data_root, tmp_path):
  process = run_cli(tmp_path, data_root, **{"model.widht": 8})
  output, _ = process.communicate(timeout=300)
  assert process.returncode != 0
  assert "--config.model.widht does not exist" in output
