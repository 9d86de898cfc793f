"""Multi-process synchronisation that tolerates uneven progress.

CPU collectives (gloo) give up when a peer reaches a collective more than 30 s later (its context set-up and
operations time out), which happens whenever one process does work the others wait for: process 0 building
the data set or running pycocotools, or one process compiling slower on a loaded host. So processes wait for
each other at a barrier of the coordination service (jax.distributed's key-value store, timeout `TIMEOUT_S`)
before such a collective, and compile ahead of the first call (`CompiledOnce`).
"""
import collections

import jax
from jax._src import distributed

TIMEOUT_S = 3600
_calls = collections.Counter()


def barrier(name: str, timeout_s: int = TIMEOUT_S):
  """Returns once every process has called barrier(name) as many times as this one; no-op with one process."""
  if jax.process_count() == 1:
    return
  _calls[name] += 1
  distributed.global_state.client.wait_at_barrier(f"segjax_{name}_{_calls[name]}", timeout_in_ms=timeout_s * 1000)


class CompiledOnce:
  """A jitted function, compiled at its first call, then `barrier`: the processes enter its first collective
  together whatever their compile times. Later calls must have the first call's shapes (static shapes)."""

  def __init__(self, jitted, name: str):
    self._jitted, self._name, self._compiled = jitted, name, None

  def __call__(self, *args):
    if self._compiled is None:
      self._compiled = self._jitted.lower(*args).compile()
      barrier(f"{self._name}_compiled")
    return self._compiled(*args)
