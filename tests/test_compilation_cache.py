"""segjax.compilation_cache: which folder a run uses, and a second process loading what a first one compiled."""
import os
import subprocess
import sys

from segjax import compilation_cache
from train_util import REPO

# Compiles one program after compilation_cache.configure(argv[1]) and prints how many persistent-cache hits it had.
_PROGRAM = """
import sys
import jax
import jax.numpy as jnp
from segjax import compilation_cache
hits = []
jax.monitoring.register_event_listener(lambda name, **_: hits.append(name) if name.endswith("/cache_hits") else None)
compilation_cache.configure(sys.argv[1])
jax.jit(lambda x: jnp.sin(x) @ x.T)(jnp.ones((8, 8))).block_until_ready()
print(len(hits))
"""


def _compile_in_a_process(folder):
  env = {**os.environ, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
  env.pop(compilation_cache.ENV, None)
  result = subprocess.run([sys.executable, "-c", _PROGRAM, folder], cwd=REPO, env=env, capture_output=True, text=True,
                          check=True)
  return int(result.stdout.split()[-1])


def test_directory_takes_the_flag_then_the_environment_then_the_default(monkeypatch):
  monkeypatch.setenv(compilation_cache.ENV, "/env/cache")
  assert compilation_cache.directory("/flag/cache") == "/flag/cache"
  assert compilation_cache.directory("") == ""
  assert compilation_cache.directory(None) == "/env/cache"
  assert compilation_cache.directory("gs://bucket/~cache") == "gs://bucket/~cache"
  monkeypatch.delenv(compilation_cache.ENV)
  assert compilation_cache.directory(None) == os.path.join(os.path.expanduser("~"), ".cache", "segjax", "jax")


def test_a_second_process_loads_the_program_the_first_compiled(tmp_path):
  folder = tmp_path / "cache"
  assert _compile_in_a_process(str(folder)) == 0
  written = os.listdir(folder)  # the jitted function's program and those of the eager ops making its input
  assert any(name.startswith("jit__lambda") for name in written)
  assert _compile_in_a_process(str(folder)) == len(written)


def test_an_empty_folder_turns_the_cache_off(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert _compile_in_a_process("") == 0
  assert _compile_in_a_process("") == 0
  assert not os.listdir(tmp_path)
