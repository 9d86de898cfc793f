"""2 processes x 2 CPU devices (gloo collectives over 127.0.0.1) against 1 process x 4 devices."""
import json
import os
import re
import shutil
import signal
import socket

import jax
import numpy as np
import pytest

from segjax.train.loop import train_and_evaluate
from train_util import read_metrics, run_cli, tiny_config, wait_for_step, xla_flags

# A constant learning rate, so that a run of 6 steps is the first half of a run of 9. SGD rather than the
# demo's AdamW: Adam's normalised update turns the last-bit differences of another all-reduce order into
# 5e-4 relative loss differences within 5 steps; SGD keeps them at float32 rounding.
# The 2-process program (gloo all-reduce, 2 local devices, lax's weight gradients: segjax.ops.conv) rounds
# differently from the 1-process one on identical inputs, and training amplifies the last-bit differences step by
# step: the first steps' losses agree to 1e-6, by step 7 they are 3e-3 apart on some hosts. So runs of different
# process counts are compared over their first steps only, from the same state: FIRST_STEPS_RTOL over the first
# steps of a run from scratch, RESUMED_RTOL over the 3 steps after a restore (a wrong data shard or a bad restore
# changes the loss by more than 1e-2 from its first step); runs of the same process count run the same program.
FIRST_STEPS, FIRST_STEPS_RTOL, RESUMED_RTOL = 6, 2e-3, 1e-4
RUN = {"total_steps": 9, "eval_every_steps": 9, "checkpoint_every_steps": 6, "optimizer.name": "sgd",
       "optimizer.learning_rate": 0.001, "optimizer.schedule": "constant", "optimizer.warmup_steps": 0}


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def start_two_processes(workdir, data_root, **overrides):
  port = _free_port()
  env = {**os.environ, "XLA_FLAGS": xla_flags(2)}
  return [run_cli(workdir, data_root, extra=(f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
                                             f"--process_id={i}", "--verbose"), env=env, **{**RUN, **overrides})
          for i in range(2)]


def run_two_processes(workdir, data_root, **overrides):
  processes = start_two_processes(workdir, data_root, **overrides)
  outputs = [p.communicate(timeout=900)[0] for p in processes]
  for process, output in zip(processes, outputs):
    assert process.returncode == 0, output
  return outputs


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """9 steps of 1 process x 4 devices: (data root, workdir, losses)."""
  data_root = tmp_path_factory.mktemp("synthetic_mp") / "data"
  workdir = tmp_path_factory.mktemp("one_process")
  train_and_evaluate(tiny_config(data_root, **RUN), str(workdir), devices=jax.devices()[:4])
  return data_root, workdir, [r["loss"] for r in read_metrics(workdir)]


@pytest.fixture(scope="module")
def two_processes(reference, tmp_path_factory):
  """The same 9 steps on 2 processes x 2 devices: (workdir, losses)."""
  workdir = tmp_path_factory.mktemp("two_processes")
  outputs = run_two_processes(workdir, reference[0])
  assert "process 1/2" in outputs[1]
  return workdir, [r["loss"] for r in read_metrics(workdir)]


def _from_step_6(workdir, copy):
  """A copy of `workdir` as it was after step 6: its checkpoint of step 9 and the metrics after step 6 removed."""
  shutil.copytree(workdir, copy)
  shutil.rmtree(copy / "checkpoints" / "9")
  metrics = [line for line in (copy / "metrics.jsonl").read_text().splitlines() if json.loads(line)["step"] <= 6]
  (copy / "metrics.jsonl").write_text("\n".join(metrics) + "\n")
  return copy


def test_two_processes_match_one_and_resume_across_process_counts(reference, two_processes, tmp_path):
  data_root, one_process_dir, losses = reference
  two_dir, two_losses = two_processes
  np.testing.assert_allclose(two_losses[:FIRST_STEPS], losses[:FIRST_STEPS], rtol=FIRST_STEPS_RTOL)
  # The 2-process checkpoint of step 6, restored by 1 process, continues as the 2 processes continued.
  resumed = _from_step_6(two_dir, tmp_path / "two_then_one")
  train_and_evaluate(tiny_config(data_root, **RUN), str(resumed), devices=jax.devices()[:4])
  np.testing.assert_allclose([r["loss"] for r in read_metrics(resumed)][6:], two_losses[6:], rtol=RESUMED_RTOL)
  # The other way round: the 1-process checkpoint of step 6 restored by 2 processes.
  other = _from_step_6(one_process_dir, tmp_path / "one_then_two")
  outputs = run_two_processes(other, data_root)
  assert "Restored step 6" in outputs[0]
  np.testing.assert_allclose([r["loss"] for r in read_metrics(other)][6:], losses[6:], rtol=RESUMED_RTOL)


def test_sigterm_to_one_process_saves_the_same_step_in_both_and_resumes(reference, two_processes, tmp_path):
  """SIGTERM reaches one process (a preempted host) after step 3 of a run without periodic saves: both agree at the
  next step, save it and exit 0; the restarted pair continues with the losses of the uninterrupted 2-process run."""
  data_root, losses = reference[0], two_processes[1]
  no_periodic_save = {"checkpoint_every_steps": RUN["total_steps"]}
  workdir = tmp_path / "preempted"
  processes = start_two_processes(workdir, data_root, **no_periodic_save)
  wait_for_step(workdir, 3, processes)
  processes[1].send_signal(signal.SIGTERM)
  outputs = [p.communicate(timeout=600)[0] for p in processes]
  assert [p.returncode for p in processes] == [0, 0], outputs
  saved = [re.findall(r"Saved step (\d+) after SIGTERM", output) for output in outputs]
  assert saved[0] == saved[1] and len(saved[0]) == 1, saved
  step = int(saved[0][0])
  assert 3 <= step < RUN["total_steps"], "the run ended before the signal: nothing was tested"
  assert max(int(s) for s in os.listdir(workdir / "checkpoints") if s.isdigit()) == step

  outputs = run_two_processes(workdir, data_root, **no_periodic_save)
  assert all(f"Restored step {step}" in output for output in outputs)
  assert [r["step"] for r in read_metrics(workdir)] == list(range(1, RUN["total_steps"] + 1))
  np.testing.assert_allclose([r["loss"] for r in read_metrics(workdir)], losses, rtol=RESUMED_RTOL)
