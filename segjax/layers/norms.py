"""Normalisation layers with torch semantics: BatchNorm, FrozenBatchNorm, and a factory by name.

`BatchNorm` differs from `flax.linen.BatchNorm` in one place, on purpose: the running variance is
updated with the *unbiased* batch variance (times n / (n - 1), n = N*H*W), as torch.nn.BatchNorm2d
does; flax updates it with the biased one. Normalisation itself uses the biased variance in both.
Under `jit` over a device mesh the batch statistics are reduced over the global batch (like
torch's SyncBatchNorm), since the mean is an ordinary array reduction.
"""
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

NORMS = ("batch", "frozen", "group")


class BatchNorm(nn.Module):
  """torch.nn.BatchNorm2d over the last axis: x [..., C] -> [..., C] in `dtype`.

  Attributes:
    use_running_average: eval mode (normalise with `batch_stats`); False = train mode.
    momentum: decay of the running averages (torch's momentum 0.1 is 1 - 0.9).
    epsilon: added to the variance, torch's default 1e-5.
    dtype: output dtype; statistics are computed in float32.
  Variables: params {scale, bias} [C]; batch_stats {mean, var} [C].
  """
  use_running_average: bool
  momentum: float = 0.9
  epsilon: float = 1e-5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
    ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (c,), jnp.float32)
    ra_var = self.variable("batch_stats", "var", jnp.ones, (c,), jnp.float32)
    x32 = x.astype(jnp.float32)
    if self.use_running_average:
      mean, var = ra_mean.value, ra_var.value
    else:
      n = x.size // c
      if n < 2:
        raise ValueError(f"BatchNorm in train mode needs more than 1 value per channel; got x of shape {x.shape}")
      axes = tuple(range(x.ndim - 1))
      mean = x32.mean(axes)
      var = jnp.square(x32 - mean).mean(axes)
      if not self.is_initializing():
        # torch: running_var <- (1 - 0.1) running_var + 0.1 * var * n / (n - 1)
        ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
        ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var * (n / (n - 1))
    y = (x32 - mean) * (scale * jax.lax.rsqrt(var + self.epsilon)) + bias
    return y.astype(self.dtype)


class FrozenBatchNorm(nn.Module):
  """torchvision.ops.FrozenBatchNorm2d: y = x * w / sqrt(rv + eps) + (b - rm * w / sqrt(rv + eps)).

  All four tensors are constants, kept in the `batch_stats` collection (never in `params`, so no
  optimizer or weight decay touches them): batch_stats {scale, bias, mean, var} [C].
  x [..., C] -> [..., C] in `dtype`.
  """
  epsilon: float = 1e-5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    weight = self.variable("batch_stats", "scale", jnp.ones, (c,), jnp.float32).value
    bias = self.variable("batch_stats", "bias", jnp.zeros, (c,), jnp.float32).value
    mean = self.variable("batch_stats", "mean", jnp.zeros, (c,), jnp.float32).value
    var = self.variable("batch_stats", "var", jnp.ones, (c,), jnp.float32).value
    scale = weight * jax.lax.rsqrt(var + self.epsilon)
    shift = bias - mean * scale
    return (x.astype(jnp.float32) * scale + shift).astype(self.dtype)


def norm_layer(kind: str, train: bool, dtype: Any = jnp.float32) -> Callable[..., nn.Module]:
  """Norm constructor by config name; call the result with `name=...`.

  "batch": `BatchNorm` (batch statistics when `train`, running ones otherwise);
  "frozen": `FrozenBatchNorm`; "group": GroupNorm with 32 groups and torch's eps 1e-5.
  """
  if kind == "batch":
    return functools.partial(BatchNorm, use_running_average=not train, dtype=dtype)
  if kind == "frozen":
    return functools.partial(FrozenBatchNorm, dtype=dtype)
  if kind == "group":
    return functools.partial(nn.GroupNorm, num_groups=32, epsilon=1e-5, dtype=dtype)
  raise ValueError(f"norm must be one of {NORMS}; got {kind!r}")
