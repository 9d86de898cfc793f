"""A trained workdir as a model: `load(workdir)` -> (its config.json, a checkpoint's model variables)."""
import json

import ml_collections

from segjax import paths
from segjax.train.checkpoint import Checkpointer


def load(workdir, step: int | None = None):
  """(config, variables) of a workdir written by segjax.main: the experiment config it was trained with (its
  config.json) and the {"params", "batch_stats"} of checkpoint `step` (default the latest), without the optimizer
  state, on the first device. `segjax.inference.Predictor(config, variables)` runs them. `workdir` may be a URL."""
  workdir = paths.resolve(workdir)
  path = workdir / "config.json"
  if not path.exists():
    raise FileNotFoundError(f"{path}: not found; is {workdir} a workdir written by segjax.main?")
  config = ml_collections.ConfigDict(json.loads(path.read_text()))
  checkpointer = Checkpointer(workdir / "checkpoints", None, create=False)
  try:
    variables, _ = checkpointer.restore_variables(step)
  finally:
    checkpointer.close()
  return config, variables
