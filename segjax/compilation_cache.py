"""JAX's persistent compilation cache for segjax's command line: the compiled programs of a run are written to a
folder and read back by the next run that compiles the same programs (a resumed or preempted run, an evaluate-only
run of a workdir, the same config again), which then skips XLA's compilation. scripts/bench_models.py prints the
compile times with the cache cold and warm.

The folder is `--compilation_cache_dir` of segjax.main: by default JAX's own JAX_COMPILATION_CACHE_DIR where that is
set, else DEFAULT; an empty value turns the cache off. It may be a gs:// URL (JAX writes it through etils.epath), so
the hosts of a pod can share one. Entries are keyed by the program, the XLA flags, the devices and the jax / jaxlib
versions, so a change of any of these compiles afresh; JAX writes only programs that took at least
jax_persistent_cache_min_compile_time_secs (1 s) to compile. The folder is not pruned: remove it to reclaim space.
Whoever can write to the folder can make the run execute their code (JAX's warning): keep it private to the user
or the job. XLA:CPU builds its executables for the host's instruction set: give machines of different CPU
generations a folder each.
"""
import os

import jax

DEFAULT = "~/.cache/segjax/jax"
ENV = "JAX_COMPILATION_CACHE_DIR"


def directory(flag_value):
  """The run's cache folder: `flag_value` where given ("" for none), else $JAX_COMPILATION_CACHE_DIR, else DEFAULT;
  a local path with ~ expanded."""
  if flag_value is None:
    flag_value = os.environ.get(ENV) or DEFAULT
  return flag_value if "://" in flag_value else os.path.expanduser(flag_value)


def configure(folder):
  """Points JAX's persistent compilation cache at `folder` ("" turns it off). Call before the first compilation:
  JAX opens its cache once per process."""
  if folder:
    jax.config.update("jax_compilation_cache_dir", folder)
  jax.config.update("jax_enable_compilation_cache", bool(folder))
