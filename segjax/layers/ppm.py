"""Pyramid pooling module (PSPNet, Zhao et al. CVPR 2017, Sec. 3.3 and Fig. 3c)."""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax.layers.conv import Conv
from segjax.layers.norms import norm_layer
from segjax.ops.pooling import adaptive_avg_pool2d, adaptive_max_pool2d, resize_align_corners

POOLING = {"avg": adaptive_avg_pool2d, "max": adaptive_max_pool2d}


class PyramidPooling(nn.Module):
  """x [N,h,w,C] -> [N,h,w,C + len(bins) * C/len(bins)]: each bin b average-pools x to b x b, a 1x1 conv (no bias)
  reduces to C/len(bins) channels (C/4 for the paper's four levels), BN, ReLU, and a bilinear resize back to h x w.

  Concatenated as the released Caffe model (pspnet50_ADE20K_473.prototxt): x, then the bins from finest to coarsest
  (6, 3, 2, 1); its Interp layer aligns corners. Parameters: bin{b}_conv, bin{b}_bn.

  The ablation of the paper's Table 1: `pooling` "max" takes each bin's maximum instead of its average, and
  `dimension_reduction` False ("without DR") upsamples the pooled C channels of every level as they are, with no
  1x1 conv (the output then has C + len(bins) * C channels).
  """
  bins: tuple[int, ...] = (1, 2, 3, 6)
  pooling: str = "avg"
  dimension_reduction: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    if self.pooling not in POOLING:
      raise ValueError(f"config.model.pooling must be one of {sorted(POOLING)}; got {self.pooling!r}")
    height, width, channels = x.shape[1:]
    features = channels // len(self.bins)
    levels = {}
    for b in self.bins:
      y = POOLING[self.pooling](x, (b, b))
      if self.dimension_reduction:
        y = Conv(features, (1, 1), use_bias=False, dtype=self.dtype, param_dtype=jnp.float32,
                 name=f"bin{b}_conv")(y)
        y = nn.relu(norm_layer("batch", train=train, dtype=self.dtype)(name=f"bin{b}_bn")(y))
      levels[b] = resize_align_corners(y, (height, width)).astype(x.dtype)
    return jnp.concatenate([x] + [levels[b] for b in sorted(self.bins, reverse=True)], axis=-1)
