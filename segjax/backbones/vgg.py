"""VGG-16 (Simonyan & Zisserman 2015) as the fully convolutional trunk of FCN and DeepLab v1.

The variants reproduce the Caffe networks the papers trained (Caffe pooling rounds output sizes
up, i.e. torch's ceil_mode=True):
  "fcn": FCN (Long et al. 2015, voc-fcn*s/train.prototxt): conv1_1 padded by 100, 2x2/2 max
    pools, fc6 a 7x7 VALID conv (ImageNet fc6 reshaped), fc7 a 1x1 conv, 4096 channels.
  "deeplab": DeepLab v1 (Chen et al. 2015, Sec. 3 and Table 2 row DeepLab-CRF, the released
    vgg128_noup net): 3x3/2 pad 1 max pools 1-3, 3x3/1 pad 1 pools 4-5, conv5 dilated by 2, fc6 the
    ImageNet 7x7 fc6 subsampled to 4x4 and dilated by 4 (input stride 4, receptive field 128, pad 6
    keeps the size), fc7 a 1x1 conv, 4096 channels. Output stride 8.
  "deeplab_largefov": DeepLab-LargeFOV (DeepLab-LargeFOV/train.prototxt): the pools and conv5 of
    "deeplab", then a 3x3/1 average pool (pool5a), fc6 a 3x3 conv dilated by 12 and fc7 a 1x1 conv,
    1024 channels. Output stride 8.
  "conv5": the trunk of Fast and Faster R-CNN (Girshick 2015; Ren et al. 2015, VGG16 models of py-faster-rcnn):
    2x2/2 max pools after stages 1-4, no pool5 and no fc6/fc7 (the RoI head holds those): outputs pool3, pool4 and
    conv5_3, stride 16.
Dropout 0.5 follows fc6 (drop6) in train mode; the head applies its own drop7 after fc7.
`width` scales every layer (64: the paper's; conv stages width x (1, 2, 4, 8, 8), fc6/fc7 64 x width
channels, 16 x width for LargeFOV); 8 gives a tiny net for tests and demos.
Convolutions start He-initialised (He et al. 2015) for training from scratch; converted weights replace them.
Parameter names are Caffe's: conv1_1 ... conv5_3, fc6, fc7.
"""
import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax.layers.conv import Conv
from segjax.ops.pooling import max_pool

STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
VARIANTS = ("fcn", "deeplab", "deeplab_largefov", "conv5")


def max_pool_ceil(x: jax.Array, window: int, stride: int, pad: int) -> jax.Array:
  """Max pool [N,H,W,C] with torch's ceil_mode=True (= Caffe) output size and -inf padding.

  out = ceil((H + 2 pad - window) / stride) + 1, minus 1 if the last window starts past H + pad.
  """
  pads = []
  for size in x.shape[1:3]:
    out = math.ceil((size + 2 * pad - window) / stride) + 1
    if (out - 1) * stride >= size + pad:
      out -= 1
    pads.append((pad, (out - 1) * stride + window - size - pad))
  return max_pool(x, (window, window), (stride, stride), tuple(pads))


class VGG16(nn.Module):
  """VGG-16 trunk: x [N,H,W,3] -> {"pool3", "pool4", "pool5", "fc7"} (after ReLU / pooling).

  Strides of pool3, pool4, pool5, fc7: 8, 16, 32, 32 for "fcn" (offset by the 100-pixel pad;
  fc6 is VALID, so fc7 is 6 pixels smaller than pool5) and 8, 8, 8, 8 for the DeepLab variants;
  "conv5" returns {"pool3", "pool4", "conv5_3"} instead, strides 8, 16, 16.
  In train mode, drop6 needs a "dropout" rng.
  """
  variant: str = "fcn"
  width: int = 64
  dtype: Any = jnp.float32

  def __post_init__(self):
    if self.variant not in VARIANTS:
      raise ValueError(f"variant must be one of {VARIANTS}; got {self.variant!r}")
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> dict[str, jax.Array]:
    if x.ndim != 4 or x.shape[-1] != 3:
      raise ValueError(f"x must be [N, H, W, 3]; got shape {x.shape}")
    conv = functools.partial(Conv, kernel_init=nn.initializers.he_normal(), dtype=self.dtype,
                             param_dtype=jnp.float32)
    deeplab = self.variant.startswith("deeplab")
    x = x.astype(self.dtype)
    features = {}
    for s, widths in enumerate(STAGES, start=1):
      dilation = 2 if (deeplab and s == 5) else 1
      for i, width in enumerate(widths, start=1):
        pad = 100 if (self.variant == "fcn" and s == 1 and i == 1) else dilation
        x = conv(width * self.width // 64, (3, 3), padding=((pad, pad), (pad, pad)), kernel_dilation=dilation,
                 name=f"conv{s}_{i}")(x)
        x = nn.relu(x)
      if self.variant == "conv5" and s == 5:
        return {"pool3": features["pool3"], "pool4": features["pool4"], "conv5_3": x}
      if deeplab:
        x = max_pool_ceil(x, 3, 2 if s <= 3 else 1, 1)
      else:
        x = max_pool_ceil(x, 2, 2, 0)
      features[f"pool{s}"] = x
    if self.variant == "deeplab_largefov":
      x = nn.avg_pool(x, (3, 3), padding=((1, 1), (1, 1)), count_include_pad=True)  # pool5a
      x = nn.relu(conv(16 * self.width, (3, 3), padding=((12, 12), (12, 12)), kernel_dilation=12, name="fc6")(x))
    elif self.variant == "deeplab":
      x = nn.relu(conv(64 * self.width, (4, 4), padding=((6, 6), (6, 6)), kernel_dilation=4, name="fc6")(x))
    else:
      x = nn.relu(conv(64 * self.width, (7, 7), padding="VALID", name="fc6")(x))
    x = nn.Dropout(0.5, deterministic=not train, name="drop6")(x)
    x = nn.relu(conv(x.shape[-1], (1, 1), name="fc7")(x))
    return {"pool3": features["pool3"], "pool4": features["pool4"], "pool5": features["pool5"], "fc7": x}
