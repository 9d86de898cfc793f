"""Global Convolutional Network block and Boundary Refinement block (Peng et al., Large Kernel Matters, CVPR 2017,
Sec. 3.1 and Fig. 2b, 2c)."""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax.layers.conv import Conv


class GlobalConv(nn.Module):
  """x [N,h,w,Cin] -> [N,h,w,features]: (k x 1 then 1 x k) + (1 x k then k x 1), 'same' padding, no BN or ReLU.

  A dense k x k connection with 2k (Cin + features) features weights instead of k^2 Cin features (Sec. 3.1).
  Parameters: left_kx1, left_1xk, right_1xk, right_kx1 (conv kernels [kh, kw, in, out] and biases).
  """
  features: int
  kernel_size: int = 15
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k, p = self.kernel_size, self.kernel_size // 2
    if k % 2 == 0:
      raise ValueError(f"config.model.kernel_size must be odd so the output keeps the input's grid; got {k}")
    conv = lambda shape, pad, name: Conv(self.features, shape, padding=pad, dtype=self.dtype,
                                         param_dtype=jnp.float32, name=name)
    left = conv((1, k), ((0, 0), (p, p)), "left_1xk")(conv((k, 1), ((p, p), (0, 0)), "left_kx1")(x))
    right = conv((k, 1), ((p, p), (0, 0)), "right_kx1")(conv((1, k), ((0, 0), (p, p)), "right_1xk")(x))
    return left + right


class BoundaryRefinement(nn.Module):
  """Residual boundary refinement (Fig. 2c): x + conv3x3(relu(conv3x3(x))), x [N,h,w,C] -> [N,h,w,C]."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = lambda name: Conv(x.shape[-1], (3, 3), padding=1, dtype=self.dtype, param_dtype=jnp.float32, name=name)
    return x + conv("conv2")(nn.relu(conv("conv1")(x)))
