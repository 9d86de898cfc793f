"""Feature Pyramid Network (Lin et al. 2017) in torchvision's layout (FeaturePyramidNetwork + LastLevelMaxPool).

P_i = conv3x3(L_i), L_i = conv1x1(C_i) + nearest_upsample(L_{i+1}) (Sec. 3, Fig. 3); P6 = max_pool(P5, 1, 2)
as Faster R-CNN's RPN uses it. Parameter names mirror torchvision: `inner_{i}` is inner_blocks.i, `layer_{i}`
is layer_blocks.i, i = 0.. for C2.. .
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from segjax.layers.conv import Conv

# torchvision initialises FPN convs with kaiming_uniform_(a=1): U(-b, b), b = sqrt(3 / fan_in).
_KAIMING_A1 = nn.initializers.variance_scaling(1.0, "fan_in", "uniform")


def nearest_resize(x: jax.Array, size: tuple[int, int]) -> jax.Array:
  """torch F.interpolate(x, size, mode="nearest") on NHWC: source index floor(dst * in / out)."""
  rows = np.minimum(np.floor(np.arange(size[0]) * (x.shape[1] / size[0])).astype(np.int32), x.shape[1] - 1)
  cols = np.minimum(np.floor(np.arange(size[1]) * (x.shape[2] / size[1])).astype(np.int32), x.shape[2] - 1)
  return x[:, rows][:, :, cols]


class FPN(nn.Module):
  """{"C2".."C5"} [N, H/s, W/s, C_s] -> {"P2".."P6"} [N, ., ., out_channels] (any contiguous C levels)."""
  out_channels: int = 256
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: dict[str, jax.Array]) -> dict[str, jax.Array]:
    names = sorted((k for k in features if k.startswith("C")), key=lambda k: int(k[1:]))
    if not names:
      raise ValueError(f"FPN needs features named C2, C3, ...; got {sorted(features)}")
    conv = lambda k, name: Conv(self.out_channels, (k, k), padding=k // 2, kernel_init=_KAIMING_A1,
                                dtype=self.dtype, param_dtype=jnp.float32, name=name)
    last = len(names) - 1
    inner = conv(1, f"inner_{last}")(features[names[last]])
    outputs = {f"P{names[last][1:]}": conv(3, f"layer_{last}")(inner)}
    for i in range(last - 1, -1, -1):
      lateral = conv(1, f"inner_{i}")(features[names[i]])
      inner = lateral + nearest_resize(inner, lateral.shape[1:3])
      outputs[f"P{names[i][1:]}"] = conv(3, f"layer_{i}")(inner)
    top = outputs[f"P{names[last][1:]}"]
    outputs[f"P{int(names[last][1:]) + 1}"] = top[:, ::2, ::2]  # max_pool2d(kernel 1, stride 2) = subsampling
    return dict(sorted(outputs.items(), key=lambda kv: int(kv[0][1:])))
