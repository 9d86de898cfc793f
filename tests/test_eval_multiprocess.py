"""The COCO (box and mask AP) and panoptic (PQ) evaluators over 2 processes give the numbers of 1 process."""
import json
import os
import subprocess
import sys

import pytest

import multiprocess_eval
from test_train_multiprocess import _free_port
from train_util import xla_flags

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "multiprocess_eval.py")


def _run(data_root, workdir, num_processes):
  port = _free_port()
  env = {**os.environ, "XLA_FLAGS": xla_flags(1)}
  processes = [subprocess.Popen([sys.executable, SCRIPT, str(data_root), str(workdir), str(num_processes), str(i),
                                 str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for i in range(num_processes)]
  outputs = [p.communicate(timeout=900)[0] for p in processes]
  for process, output in zip(processes, outputs):
    assert process.returncode == 0, output[-3000:]
  (line,) = [l for l in outputs[0].splitlines() if l.startswith("METRICS ")]
  return json.loads(line[len("METRICS "):])


def test_two_processes_give_the_metrics_of_one(tmp_path):
  data_root = tmp_path / "data"
  one = multiprocess_eval.evaluate(data_root, str(tmp_path / "one"))  # builds the data set the 2 processes read
  two = _run(data_root, tmp_path / "two", 2)
  assert 0.2 < one["mask_AP"] < 0.95 and 0.2 < one["box_AP"] < 0.95 and 0.2 < one["PQ"] < 0.95, one
  assert two.keys() == one.keys()
  for name, value in one.items():
    assert two[name] == pytest.approx(value, abs=1e-12), name
