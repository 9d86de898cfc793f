"""The CLI: python -m segjax.main --config=experiments/NAME.py --workdir=DIR [--mode=evaluate] [--config.key=value ...].

--mode=train (default) trains to config.total_steps, evaluating every config.eval_every_steps and at the end;
--mode=evaluate evaluates the workdir's latest checkpoint (or --step, or the weights of --config.init_from where the
workdir has no checkpoint) on config.dataset.eval_split with config.eval's options, without training.
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

from segjax import compilation_cache, paths

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (get_config()).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and pictures.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "evaluate"],
                          "train: train (and evaluate) to config.total_steps, resuming from the workdir's checkpoint; "
                          "evaluate: evaluate a checkpoint of the workdir (or config.init_from) without training.")
_STEP = flags.DEFINE_integer("step", None, "--mode=evaluate: the checkpoint step to evaluate (default the latest).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "host:port of process 0 for a multi-process run (not needed on TPU pods "
                                   "or SLURM, where jax.distributed.initialize() finds the cluster).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes of a multi-process run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index in a multi-process run.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False,
                                 "Call jax.distributed.initialize() with cluster auto-detection.")
_PLATFORM = flags.DEFINE_enum("platform", None, ["tpu", "gpu", "cpu"],
                              "Refuse to start unless JAX runs on this backend (a TPU VM or GPU node whose jaxlib is the "
                              "CPU one would otherwise train on its CPU: install requirements-tpu.txt / -gpu.txt).")
_COMPILATION_CACHE_DIR = flags.DEFINE_string(
    "compilation_cache_dir", None,
    "Folder (or gs:// URL) of JAX's persistent compilation cache: compiled programs are written there and loaded "
    f"instead of compiled again; default $JAX_COMPILATION_CACHE_DIR, else {compilation_cache.DEFAULT}; empty: none.")
_VERBOSE = flags.DEFINE_bool("verbose", False, "Show the INFO logs of absl, orbax, JAX, TensorFlow and TFDS "
                             "(by default: warnings, the progress lines and the results only).")
flags.mark_flags_as_required(["config", "workdir"])
# glibc's tunable for huge pages under malloc: XLA:CPU allocates every call's buffers afresh, and each 4 KiB page it
# touches is a page fault (scripts/bench_allocator.py). glibc reads it when the process starts.
HUGE_PAGES = "glibc.malloc.hugetlb"


def check_platform(platform):
  """Logs the backend and device kinds; raises SystemExit if `platform` is given and JAX runs on another one."""
  backend = jax.default_backend()
  kinds = sorted({d.device_kind for d in jax.devices()})
  logging.info("JAX backend %s, devices: %s", backend, ", ".join(kinds))
  if platform and backend != platform:
    raise SystemExit(f"error: --platform={platform}, but JAX runs on {backend} ({', '.join(kinds)}). Install the "
                     f"{platform} jaxlib: .venv/bin/python -m pip install -r requirements-{platform}.txt "
                     f"(make venv-{platform}).")
  if backend == "cpu" and sys.platform == "linux" and HUGE_PAGES not in os.environ.get("GLIBC_TUNABLES", ""):
    logging.warning("XLA:CPU steps run faster with huge pages: start with GLIBC_TUNABLES=%s=1 (make demo sets it; "
                    "scripts/bench_allocator.py)", HUGE_PAGES)


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
  from segjax.train.loop import evaluate_checkpoint, train_and_evaluate  # pylint: disable=g-import-not-at-top
  if not _VERBOSE.value:
    quiet_libraries()
  compilation_cache.configure(compilation_cache.directory(_COMPILATION_CACHE_DIR.value))
  if _COORDINATOR.value or _DISTRIBUTED.value:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # Only used where devices are CPUs.
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  check_platform(_PLATFORM.value)
  logging.info("process %d/%d, %d local / %d global devices", jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())
  if _MODE.value == "evaluate":
    metrics = evaluate_checkpoint(_CONFIG.value, _WORKDIR.value, step=_STEP.value)
  else:
    if _STEP.value is not None:
      raise app.UsageError("--step is for --mode=evaluate")
    metrics = train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  if jax.process_index() == 0:
    summary = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items())
    print(f"{'eval' if _MODE.value == 'evaluate' else 'final eval'}: {summary}")
    workdir = paths.resolve(_WORKDIR.value)
    for name, path in (("metrics", "metrics.jsonl"), ("tensorboard", "tensorboard"),
                       ("checkpoints", "checkpoints"), ("pictures", "pictures")):
      print(f"{name}: {workdir / path}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
