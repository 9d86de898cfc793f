"""The run settings of the notebooks in notebooks/, read from the environment, so that one notebook serves both the
study it stores and the test suite's reduced run of it.

  SEGJAX_NOTEBOOK_STEPS      training steps of every row (each notebook has its own default)
  SEGJAX_NOTEBOOK_WORKDIR    the folder of the rows' workdirs and results (default: a new temporary folder)
  SEGJAX_NOTEBOOK_OVERRIDES  a JSON object of config keys set on every row, as --config.KEY=VALUE flags set them
                             (the reduced runs of tests/test_notebooks.py: a few synthetic images per split)
"""
import json
import os
import tempfile

from segjax.config import override


def steps(default: int) -> int:
  return int(os.environ.get("SEGJAX_NOTEBOOK_STEPS", default))


def workdir(prefix: str) -> str:
  return os.environ.get("SEGJAX_NOTEBOOK_WORKDIR") or tempfile.mkdtemp(prefix=prefix)


def row_config(config, total_steps: int):
  """`config` trained `total_steps` steps, evaluated and checkpointed once at the end, without pictures, with the
  keys of SEGJAX_NOTEBOOK_OVERRIDES set (a key the config lacks is an error)."""
  config.total_steps = config.eval_every_steps = config.checkpoint_every_steps = total_steps
  config.num_pictures = 0
  try:
    return override(config, json.loads(os.environ.get("SEGJAX_NOTEBOOK_OVERRIDES", "{}")))
  except KeyError as error:
    raise KeyError(f"SEGJAX_NOTEBOOK_OVERRIDES: {error.args[0]}") from None
