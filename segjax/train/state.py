"""The train state: everything a checkpoint must hold for an exact resume.

The data position is the step (the input pipeline is a pure function of (seed, step)) and the step's
randomness is fold_in(seed key, step), so neither needs state of its own.
"""
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any

  @classmethod
  def create(cls, variables, optimizer: optax.GradientTransformation):
    params = variables["params"]
    return cls(step=jnp.zeros((), jnp.int32), params=params,
               batch_stats=variables.get("batch_stats", {}), opt_state=optimizer.init(params))

  @property
  def variables(self):
    if self.batch_stats:
      return {"params": self.params, "batch_stats": self.batch_stats}
    return {"params": self.params}
