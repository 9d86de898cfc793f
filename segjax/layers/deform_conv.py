"""Modulated deformable convolution (DCN v2, Zhu et al. CVPR 2019) with its own offset branch, as detectron2's
ModulatedDeformConvWithOff (used by Panoptic FCN's position head): a k x k conv of the input predicts 2 k^2 offsets
and k^2 modulation masks (sigmoid), and `segjax.ops.deform_conv2d` samples the input with them."""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax.layers.conv import Conv
from segjax.ops.deform_conv import deform_conv2d

_TORCH_CONV = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")  # torch Conv2d's default kaiming_uniform
_KAIMING_RELU = nn.initializers.variance_scaling(2.0, "fan_in", "uniform")  # detectron2 ModulatedDeformConv's init


class ModulatedDeformConv(nn.Module):
  """x [N, H, W, C] -> [N, H, W, features], stride 1, 'same' padding. Parameters: offset_mask_conv (the offsets'
  conv, channels: 2 k^2 offsets ordered (k, k, (dy, dx)) as torchvision's, then k^2 masks), kernel [k, k, C,
  features] (HWIO) and bias."""
  features: int
  kernel_size: int = 3
  use_bias: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    k = self.kernel_size
    offset_mask = Conv(3 * k * k, (k, k), padding=k // 2, kernel_init=_TORCH_CONV, dtype=self.dtype,
                       name="offset_mask_conv")(x).astype(jnp.float32)
    kernel = self.param("kernel", _KAIMING_RELU, (k, k, x.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,)) if self.use_bias else None
    out = deform_conv2d(x.astype(jnp.float32), offset_mask[..., :2 * k * k], kernel, bias,
                        jax.nn.sigmoid(offset_mask[..., 2 * k * k:]), padding=k // 2)
    return out.astype(self.dtype)


class DeformConv(nn.Module):
  """DCN v1 (Dai et al. 2017, Sec. 2.1) in place of a plain k x k conv: x [N, H, W, C] -> [N, H', W', features].

  Parameter `kernel` [k, k, C, features] (HWIO, no bias) has the name, shape and initialiser of flax's Conv kernel,
  so a plain conv's weights (converted torchvision ones included) load into it unchanged. The offsets come from
  the caller (ResNet's sibling `conv2_offset`), 2 k^2 channels ordered (k, k, (dy, dx)) as torchvision's.
  """
  features: int
  kernel_size: int = 3
  strides: int = 1
  padding: int = 0
  kernel_dilation: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, offset):
    k = self.kernel_size
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (k, k, x.shape[-1], self.features))
    out = deform_conv2d(x.astype(jnp.float32), offset.astype(jnp.float32), kernel, stride=self.strides,
                        padding=self.padding, dilation=self.kernel_dilation)
    return out.astype(self.dtype)
