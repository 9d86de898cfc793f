"""A trained workdir as a model: `load(workdir)` -> (its config.json, a checkpoint's model variables)."""
import json
import os

import ml_collections

from segjax.train.checkpoint import Checkpointer


def load(workdir: str, step: int | None = None):
  """(config, variables) of a workdir written by segjax.main: the experiment config it was trained with (its
  config.json) and the {"params", "batch_stats"} of checkpoint `step` (default the latest), without the optimizer
  state, on the first device. `segjax.inference.Predictor(config, variables)` runs them."""
  workdir = os.path.abspath(os.path.expanduser(os.fspath(workdir)))
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: not found; is {workdir} a workdir written by segjax.main?")
  with open(path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), None, create=False)
  try:
    variables, _ = checkpointer.restore_variables(step)
  finally:
    checkpointer.close()
  return config, variables
