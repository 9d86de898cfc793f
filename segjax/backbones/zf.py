"""ZF-5 (Zeiler & Fergus 2014, the five-convolution net of SPP-net, He et al. 2014, Table 1 and Sec. 4), conv1 to
conv5, as py-faster-rcnn's ZF prototxt lays it out: conv1 96 7x7 stride 2 pad 3, 3x3/2 pad 1 max pool; conv2 256 5x5
stride 2 pad 2, 3x3/2 pad 1 max pool; conv3 384, conv4 384, conv5 256, 3x3 pad 1; ReLU after each convolution.
Pools are Caffe's (ceil mode). conv5's stride is 16. The local response normalisation after conv1 and conv2 is left
out (nothing here starts from ImageNet ZF weights; a from-scratch net trains without it). `width` scales every layer
(the paper's: 96 -> {"conv5": [N, h, w, 256 * width / 96]}).
"""
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax.backbones.vgg import max_pool_ceil
from segjax.layers.conv import Conv

LAYERS = (("conv1", 96, 7, 2, 3), ("conv2", 256, 5, 2, 2), ("conv3", 384, 3, 1, 1), ("conv4", 384, 3, 1, 1),
          ("conv5", 256, 3, 1, 1))  # name, filters, kernel, stride, pad


class ZF5(nn.Module):
  width: int = 96
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    del train
    conv = functools.partial(Conv, kernel_init=nn.initializers.he_normal(), dtype=self.dtype,
                             param_dtype=jnp.float32)
    x = x.astype(self.dtype)
    for name, filters, kernel, stride, pad in LAYERS:
      x = nn.relu(conv(filters * self.width // 96, (kernel, kernel), strides=(stride, stride),
                       padding=((pad, pad), (pad, pad)), name=name)(x))
      if name in ("conv1", "conv2"):
        x = max_pool_ceil(x, 3, 2, 1)
    return {"conv5": x}
