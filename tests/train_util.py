"""Shared set-up for the training tests: a tiny synthetic data set and a tiny FCN config."""
import json
import os
import subprocess
import sys


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Overrides of experiments/demo.py that make a run take seconds: the same keys a user would pass on the CLI.
TINY = {
    "batch_size": 8, "total_steps": 6, "log_every_steps": 1, "eval_every_steps": 6,
    "checkpoint_every_steps": 3, "num_pictures": 2,
    "model.width": 8, "dataset.image_size": (64, 64), "dataset.num_train": 24, "dataset.num_val": 10,
}


def tiny_config(data_root, **overrides):
  sys.path.insert(0, REPO)
  from experiments import demo  # pylint: disable=g-import-not-at-top
  config = demo.get_config()
  for key, value in {**TINY, "dataset.root": str(data_root), "dataset.data_dir": str(data_root) + "_tfds",
                     **overrides}.items():
    *path, name = key.split(".")
    node = config
    for part in path:
      node = node[part]
    node[name] = value
  return config


def cli_args(config_overrides: dict):
  """--config.key=value flags for the CLI from a dict of overrides."""
  return [f"--config.{k}={v}" for k, v in config_overrides.items()]


def run_cli(workdir, data_root, extra=(), env=None, **overrides):
  """Starts `python -m segjax.main` on demo.py with the tiny overrides; returns the Popen."""
  flags = {**TINY, "dataset.root": str(data_root), "dataset.data_dir": str(data_root) + "_tfds", **overrides}
  command = [sys.executable, "-m", "segjax.main", "--config=experiments/demo.py", f"--workdir={workdir}",
             *cli_args(flags), *extra]
  return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)


def read_metrics(workdir, split="train"):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [r for r in map(json.loads, f) if r["split"] == split]
