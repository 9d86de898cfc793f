"""The CLI: python -m segjax.main --config=experiments/NAME.py --workdir=DIR [--config.key=value ...].

The console shows one line per log step, the eval metrics and where the outputs are; the INFO logs of absl,
orbax, JAX, TensorFlow and TFDS come back with --verbose. metrics.jsonl and TensorBoard get the same in both.
"""
import contextlib
import logging as std_logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # pylint: disable=g-import-not-at-top
from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (get_config()).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and pictures.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "host:port of process 0 for a multi-process run (not needed on TPU pods "
                                   "or SLURM, where jax.distributed.initialize() finds the cluster).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes of a multi-process run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index in a multi-process run.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False,
                                 "Call jax.distributed.initialize() with cluster auto-detection.")
_VERBOSE = flags.DEFINE_bool("verbose", False, "Show the INFO logs of absl, orbax, JAX, TensorFlow and TFDS "
                             "(by default: warnings, the progress lines and the results only).")
flags.mark_flags_as_required(["config", "workdir"])


@contextlib.contextmanager
def native_stderr_silenced():
  """File descriptor 2 to /dev/null: TensorFlow's C++ start-up lines are written before its log level is read."""
  sys.stderr.flush()
  saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, 2)
  try:
    yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)
    os.close(devnull)


def parse_flags(argv):
  """absl's parser, with an override of a config key that does not exist reported by its full name. Loading the
  config imports TensorFlow, whose C++ start-up lines are dropped unless --verbose is given."""
  verbose = any(a in ("--verbose", "--verbose=true", "--verbose=True", "--verbose=1") for a in argv[1:])
  with contextlib.nullcontext() if verbose else native_stderr_silenced():
    return _parse_flags(argv)


def _parse_flags(argv):
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError) as error:
    missing = str(error).strip("\"'")
    names = [a.split("=")[0] for a in argv[1:] if a.startswith("--config.")]
    unknown = [n for n in names if missing in n[len("--config."):].split(".")] or names
    raise SystemExit(f"error: config key {', '.join(unknown)} does not exist in {argv_config(argv)} "
                     f"(no field {missing!r})") from None
  except flags.Error as error:
    raise SystemExit(f"error: {error}") from None


def argv_config(argv):
  return next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), "the config")


def quiet_libraries():
  """Library logging at WARNING and above: absl (which orbax and TFDS log through), JAX, TensorFlow; no TFDS
  progress bars."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)
  for name in ("jax", "orbax", "tensorflow", "tensorflow_datasets"):
    std_logging.getLogger(name).setLevel(std_logging.WARNING)
  tfds.disable_progress_bar()
  logging.get_absl_handler().addFilter(_DropExpectedWarnings())


class _DropExpectedWarnings(std_logging.Filter):
  """TFDS warns "Using custom data configuration" for every builder config made from a folder, i.e. always here."""

  def filter(self, record):
    return not record.getMessage().startswith("Using custom data configuration")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from segjax.train.loop import train_and_evaluate  # pylint: disable=g-import-not-at-top
  if not _VERBOSE.value:
    quiet_libraries()
  if _COORDINATOR.value or _DISTRIBUTED.value:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # Only used where devices are CPUs.
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  logging.info("process %d/%d, %d local / %d global devices", jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())
  metrics = train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  if jax.process_index() == 0:
    summary = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items())
    print(f"final eval: {summary}")
    for name, path in (("metrics", "metrics.jsonl"), ("tensorboard", "tensorboard"),
                       ("checkpoints", "checkpoints"), ("pictures", "pictures")):
      print(f"{name}: {os.path.join(_WORKDIR.value, path)}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
