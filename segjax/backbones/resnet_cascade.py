"""DeepLab v3's "going deeper" blocks (Chen et al. 2017, Sec. 3.2, Fig. 3): block5..block7, copies of ResNet's last
stage (block4: the same units, widths and 2048 output channels for ResNet-50+) in cascade after it.

Without atrous convolution each block from block2 on halves the resolution (Fig. 3a: block1..block7 at output
strides 4, 8, ..., 256; Table 1 goes to 256), so block b runs at its natural stride 2^(b+1). At output stride OS a
block whose natural stride exceeds OS keeps the resolution and takes the atrous rate natural / OS instead (Fig. 3b at
OS 16: block4..block7 at rates 2, 4, 8, 16, doubling from block to block). Multi-grid (Sec. 3.2, Table 3) gives unit
rates (r1, r2, r3) to the units of block4..block7, and a unit's rate is its unit rate times its block's rate (the
paper: "when output_stride = 16 and Multi_Grid = (1, 2, 4), the three convolutions will have rates = 2 * (1, 2, 4) =
(2, 4, 8) in the block4"). A block that still strides (output strides 64..256 of Table 1) does so in its first unit,
as ResNet's stages here (torchvision's layout), at rate 1 times its unit rates.
"""
import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from segjax.backbones.resnet import STAGE_BLOCKS, BasicBlock, Bottleneck
from segjax.layers.conv import Conv
from segjax.layers.norms import norm_layer

MAX_BLOCKS = 3  # block5, block6, block7: the deepest model of the paper's Tables 1-3


def natural_stride(block: int) -> int:
  """Output stride of block `block` (1..7) without atrous convolution (Fig. 3a): 4 after block1, doubling after."""
  return 2 ** (block + 1)


def block_rates(block: int, output_stride: int, multi_grid: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
  """(stride of the block's first unit, atrous rate of each unit) of block `block` (4..7) at `output_stride`."""
  natural = natural_stride(block)
  if natural <= output_stride:
    return 2, tuple(multi_grid)
  return 1, tuple(natural // output_stride * g for g in multi_grid)


def check_cascade(depth: int, output_stride: int, num_blocks: int, multi_grid: tuple[int, ...] | None):
  """Raises ValueError naming the config key for a cascade the paper's scheme cannot build."""
  if not 0 <= num_blocks <= MAX_BLOCKS:
    raise ValueError(f"config.model.cascade_blocks must be 0..{MAX_BLOCKS} (block5..block7); got {num_blocks}")
  strides = [2**k for k in range(3, 6 + num_blocks)]  # 8 .. 32 * 2^num_blocks
  if output_stride not in strides:
    raise ValueError(f"config.model.output_stride must be one of {strides} with {num_blocks} cascaded blocks; "
                     f"got {output_stride}")
  units = STAGE_BLOCKS[depth][-1]
  if multi_grid is not None and len(multi_grid) != units:
    raise ValueError(f"config.model.multi_grid needs {units} unit rates for depth {depth}; got {multi_grid}")


class CascadedBlocks(nn.Module):
  """block5..block(4 + num_blocks) on block4's output: x [N,h,w,C] -> [N,h/s,w/s,C], s = 1 while the output stride
  holds, 2 per block beyond it. Parameters `block{b}_{unit}/...` as ResNet's `layer4_{unit}/...`."""
  num_blocks: int
  output_stride: int
  depth: int = 50
  width: int = 64
  multi_grid: tuple[int, ...] | None = None
  norm: str = "batch"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    check_cascade(self.depth, self.output_stride, self.num_blocks, self.multi_grid)
    conv = functools.partial(Conv, use_bias=False, dtype=self.dtype, param_dtype=jnp.float32)
    norm = norm_layer(self.norm, train=train, dtype=self.dtype)
    block_cls = BasicBlock if self.depth < 50 else Bottleneck
    grid = self.multi_grid or (1,) * STAGE_BLOCKS[self.depth][-1]
    for block in range(5, 5 + self.num_blocks):
      stride, rates = block_rates(block, self.output_stride, grid)
      for unit, rate in enumerate(rates):
        x = block_cls(planes=self.width * 8, strides=stride if unit == 0 else 1, dilation=rate, conv=conv,
                      norm=norm, name=f"block{block}_{unit}")(x)
    return x
