"""2 processes x 2 CPU devices (gloo collectives over 127.0.0.1) against 1 process x 4 devices."""
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
# The 2-process program (gloo all-reduce, 2 local devices) rounds differently from the 1-process one on identical
# inputs, and training amplifies the last-bit differences step by step; the same happens in one process between 1
# and 4 devices (other per-device shapes, so other XLA:CPU blocking and reduction orders), while the first step's
# loss agrees exactly. RTOL allows that growth over 9 steps; a wrong data shard or a bad restore changes the loss by
# more than 1e-2 from step 1.
RTOL = 2e-3
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
  data_root = tmp_path_factory.mktemp("synthetic_mp") / "data"
  workdir = tmp_path_factory.mktemp("one_process")
  train_and_evaluate(tiny_config(data_root, **RUN), str(workdir), devices=jax.devices()[:4])
  return data_root, workdir, [r["loss"] for r in read_metrics(workdir)]


def test_two_processes_match_one_and_resume_across_process_counts(reference, tmp_path):
  data_root, one_process_dir, losses = reference
  # 2 processes from scratch for 6 steps: the losses of the 1-process run.
  two = tmp_path / "two"
  outputs = run_two_processes(two, data_root, total_steps=6, eval_every_steps=6)
  assert "process 1/2" in outputs[1]
  np.testing.assert_allclose([r["loss"] for r in read_metrics(two)], losses[:6], rtol=RTOL)
  # Their checkpoint of step 6, restored by 1 process, continues with the 1-process losses.
  train_and_evaluate(tiny_config(data_root, **RUN), str(two), devices=jax.devices()[:4])
  np.testing.assert_allclose([r["loss"] for r in read_metrics(two)], losses, rtol=RTOL)
  # The other way round: the 1-process checkpoint of step 6 restored by 2 processes.
  other = tmp_path / "other"
  shutil.copytree(one_process_dir, other)
  shutil.rmtree(other / "checkpoints" / "9")
  outputs = run_two_processes(other, data_root)
  assert "Restored step 6" in outputs[0]
  np.testing.assert_allclose([r["loss"] for r in read_metrics(other)], losses, rtol=RTOL)


def test_sigterm_to_one_process_saves_the_same_step_in_both_and_resumes(reference, tmp_path):
  """SIGTERM reaches one process (a preempted host) after step 3 of a run without periodic saves: both agree at the
  next step, save it and exit 0; the restarted pair continues with the losses of the 1-process run."""
  data_root, _, losses = reference
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
  np.testing.assert_allclose([r["loss"] for r in read_metrics(workdir)], losses, rtol=RTOL)
