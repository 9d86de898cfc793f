"""AlexNet as R-CNN used it (Krizhevsky et al. 2012; Girshick et al. 2014: Caffe's reference CaffeNet), conv1 to
pool5: conv1 96 11x11 stride 4, 3x3/2 max pool; conv2 256 5x5 pad 2 in 2 groups, 3x3/2 max pool; conv3 384 3x3
pad 1; conv4 384 and conv5 256, 3x3 pad 1 in 2 groups; 3x3/2 max pool (pool5). ReLU after each convolution; a
227x227 input gives pool5 [6, 6, 256]. The local response normalisations are left out (nothing here starts from
ImageNet AlexNet weights). `width` scales every layer (the paper's: 96).
"""
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax.backbones.vgg import max_pool_ceil
from segjax.layers.conv import Conv

LAYERS = (("conv1", 96, 11, 4, 0, 1), ("conv2", 256, 5, 1, 2, 2), ("conv3", 384, 3, 1, 1, 1),
          ("conv4", 384, 3, 1, 1, 2), ("conv5", 256, 3, 1, 1, 2))  # name, filters, kernel, stride, pad, groups
POOLED = ("conv1", "conv2", "conv5")
INPUT_SIZE = 227


class AlexNet(nn.Module):
  width: int = 96
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    del train
    conv = functools.partial(Conv, kernel_init=nn.initializers.he_normal(), dtype=self.dtype,
                             param_dtype=jnp.float32)
    x = x.astype(self.dtype)
    for name, filters, kernel, stride, pad, groups in LAYERS:
      x = nn.relu(conv(filters * self.width // 96, (kernel, kernel), strides=(stride, stride),
                       padding=((pad, pad), (pad, pad)), feature_group_count=groups, name=name)(x))
      if name in POOLED:
        x = max_pool_ceil(x, 3, 2, 0)
    return {"pool5": x}
