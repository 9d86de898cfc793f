"""flax.linen.Conv running segjax.ops.conv's convolution (1x1 kernels as a dot, mostly-padding atrous kernels
tap by tap), and UpConvolution, flax.linen.ConvTranspose with a kernel as large as its stride running
segjax.ops.conv.up_convolution: the same parameters, names and results, faster on XLA:CPU."""
import functools
from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

from segjax.ops.conv import conv_as_matmul, conv_general_dilated, up_convolution

Conv = functools.partial(nn.Conv, conv_general_dilated=conv_general_dilated)
# For convolutions inside lax.cond / switch / while (Mask R-CNN's mask head): matrix products only, see conv_as_matmul.
MatmulConv = functools.partial(nn.Conv, conv_general_dilated=conv_as_matmul)
HE_NORMAL = nn.initializers.variance_scaling(2.0, "fan_in", "normal")  # He et al. 2015; Caffe's "msra" filler


class UpConvolution(nn.Module):
  """flax.linen.ConvTranspose(features, kernel_size, strides=kernel_size): each input pixel writes its own
  kernel_size block of the output (U-Net's 2x2 up-convolution). Parameters "kernel" [kh, kw, C, features] and
  "bias" [features], as flax's, so checkpoints and converted weights load into either."""
  features: int
  kernel_size: tuple[int, int] = (2, 2)
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32
  precision: Any = None
  kernel_init: Callable = nn.initializers.lecun_normal()
  bias_init: Callable = nn.initializers.zeros

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", self.kernel_init, (*self.kernel_size, x.shape[-1], self.features), self.param_dtype)
    bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    y = up_convolution(x, kernel, self.precision)
    return y if bias is None else y + bias
