"""ResNet-18/34/50/101/152 (He et al. 2016) in torchvision's layout, with dilation for output stride 16/8.

Layout follows torchvision.models.resnet: v1.5 Bottleneck (stride on the 3x3 conv), downsample =
1x1 conv + norm on the first block of a stage, and `replace_stride_with_dilation` semantics: a
dilated stage drops its stride, multiplies the running dilation by 2, and its first block still
uses the previous dilation. Padding is torch's symmetric padding, so converted torchvision weights
give torchvision's outputs.

The ReLUs are segjax.ops.activations.relu, differentiated through their outputs as torch's: a training step keeps
each block's output, not also the convolution outputs and shortcut it is summed from.

Parameter names mirror torchvision's state dict: conv1, bn1, layer{1..4}_{block}/{conv1, bn1, conv2,
bn2, conv3, bn3, downsample_conv, downsample_bn}.
"""
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax.layers.conv import Conv
from segjax.layers.deform_conv import DeformConv
from segjax.layers.norms import NORMS, norm_layer
from segjax.ops.activations import relu
from segjax.ops.pooling import max_pool

STAGE_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
OUTPUT_STRIDES = (8, 16, 32)
ModuleDef = Callable[..., nn.Module]


def _pad(kernel: int, dilation: int) -> tuple[tuple[int, int], tuple[int, int]]:
  p = dilation * (kernel - 1) // 2
  return ((p, p), (p, p))


class BasicBlock(nn.Module):
  """Two 3x3 convs (ResNet-18/34); x [N,H,W,Cin] -> [N,H/s,W/s,planes].

  torchvision raises for dilation > 1 here; we dilate both 3x3 convs by `dilation`.
  """
  planes: int
  strides: int
  dilation: int
  conv: ModuleDef
  norm: ModuleDef

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    d = self.dilation
    y = self.conv(self.planes, (3, 3), strides=self.strides, padding=_pad(3, d), kernel_dilation=d, name="conv1")(x)
    y = relu(self.norm(name="bn1")(y))
    y = self.conv(self.planes, (3, 3), padding=_pad(3, d), kernel_dilation=d, name="conv2")(y)
    y = self.norm(name="bn2")(y)
    return relu(y + _shortcut(self, x, self.planes))


class Bottleneck(nn.Module):
  """1x1 -> 3x3 (stride, dilation) -> 1x1 x4 (ResNet-50+, v1.5); x [N,H,W,Cin] -> [N,H/s,W/s,4*planes].

  With `deformable`, the 3x3 is a deformable conv (Dai et al. 2017, Sec. 2.1): `conv2_offset`, a 3x3 conv of the
  same stride and dilation (the paper's rule; the reference code's DeepLab and R-FCN symbols give the offset conv
  dilation 1 beside a dilation-2 deformable conv) initialised to zero (the paper's offset layers start at zero),
  predicts its 2 * 9 offsets; `conv2/kernel` keeps the plain conv's name and shape, so a plain ResNet's weights load unchanged and,
  before training moves the offsets, the block computes the plain one.
  """
  planes: int
  strides: int
  dilation: int
  conv: ModuleDef
  norm: ModuleDef
  deformable: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    d = self.dilation
    y = relu(self.norm(name="bn1")(self.conv(self.planes, (1, 1), padding=0, name="conv1")(x)))
    if self.deformable:
      offset = Conv(2 * 3 * 3, (3, 3), strides=self.strides, padding=_pad(3, d), kernel_dilation=d,
                    kernel_init=nn.initializers.zeros, dtype=y.dtype, param_dtype=jnp.float32,
                    name="conv2_offset")(y)
      y = DeformConv(self.planes, 3, strides=self.strides, padding=d * (3 - 1) // 2, kernel_dilation=d,
                     dtype=y.dtype, name="conv2")(y, offset)
    else:
      y = self.conv(self.planes, (3, 3), strides=self.strides, padding=_pad(3, d), kernel_dilation=d, name="conv2")(y)
    y = relu(self.norm(name="bn2")(y))
    y = self.norm(name="bn3")(self.conv(4 * self.planes, (1, 1), padding=0, name="conv3")(y))
    return relu(y + _shortcut(self, x, 4 * self.planes))


def _shortcut(block: nn.Module, x: jax.Array, features: int) -> jax.Array:
  """Identity, or 1x1 conv (stride) + norm when the shape changes (torchvision's `downsample`)."""
  if block.strides == 1 and x.shape[-1] == features:
    return x
  x = block.conv(features, (1, 1), strides=block.strides, padding=0, name="downsample_conv")(x)
  return block.norm(name="downsample_bn")(x)


class ResNet(nn.Module):
  """ResNet feature extractor: x [N,H,W,3] -> {"C2", "C3", "C4", "C5"} of strides 4, 8, 16, 32.

  With output_stride 16, C5 keeps stride 16 (dilation 2); with 8, C4 and C5 keep stride 8
  (dilations 2 and 4). Channels of C2..C5: width * (1, 2, 4, 8) * expansion (1 for 18/34, 4 else).

  Attributes:
    depth: 18, 34, 50, 101 or 152.
    width: channels of the stem; 64 is the paper's, 16 gives a tiny net for tests and demos.
    norm: "batch", "frozen" or "group" (see `segjax.layers.norms.norm_layer`; "group" needs width % 32 == 0).
    output_stride: 32, 16 or 8.
    multi_grid: per-block rate multipliers of the last stage (DeepLab v3 Sec. 3.2), one per block;
      block i uses its torchvision dilation times multi_grid[i]. None means all ones. The first
      block keeps the previous stage's dilation, so (1, 2, 4) at output stride 16 gives rates
      (1, 4, 8), where the paper's TF layout (stride in the last unit) gives (2, 4, 8).
    deformable_stages: the stages (2..5 for res2..res5, i.e. C2..C5) whose bottleneck 3x3 convs are deformable
      (Dai et al. 2017): (5,) is the paper's setting, its last three 3x3 layers (res5a, b, c). ResNet-50+ only.
    uniform_dilation: every block of a dilated stage takes the stage's dilation, first block included: the rates
      of DeepLab v3's TF layout (stride in a stage's last unit), where multi-grid (1, 2, 4) at output stride 16
      gives (2, 4, 8) as the paper's Sec. 3.2 says. False keeps torchvision's rule above (converted weights).
    dtype: compute dtype; parameters stay float32.
  """
  depth: int = 50
  width: int = 64
  norm: str = "batch"
  output_stride: int = 32
  multi_grid: tuple[int, ...] | None = None
  deformable_stages: tuple[int, ...] = ()
  uniform_dilation: bool = False
  dtype: Any = jnp.float32

  def __post_init__(self):
    if self.depth not in STAGE_BLOCKS:
      raise ValueError(f"depth must be one of {tuple(STAGE_BLOCKS)}; got {self.depth}")
    if self.output_stride not in OUTPUT_STRIDES:
      raise ValueError(f"output_stride must be one of {OUTPUT_STRIDES}; got {self.output_stride}")
    if self.norm not in NORMS:
      raise ValueError(f"norm must be one of {NORMS}; got {self.norm!r}")
    last = STAGE_BLOCKS[self.depth][-1]
    if self.multi_grid is not None and len(self.multi_grid) != last:
      raise ValueError(f"multi_grid needs {last} rates for depth {self.depth}; got {self.multi_grid}")
    if not set(self.deformable_stages) <= {2, 3, 4, 5}:
      raise ValueError(f"deformable_stages must be among (2, 3, 4, 5); got {self.deformable_stages}")
    if self.deformable_stages and self.depth < 50:
      raise ValueError(f"deformable_stages needs a bottleneck ResNet (depth 50+); got depth {self.depth}")
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool, start: str = "stem", stop: str = "C5") -> dict[str, jax.Array]:
    """The stages from `start` ("stem" for an image [N,H,W,3], else "C2".."C5" for the previous stage's
    features) to `stop`, inclusive. The C4 detectors call it twice: to C4 on the image, then from C5 on the
    pooled RoI features (Mask R-CNN's res5 head, He et al. 2017 Fig. 4), with the same variables."""
    names = ("stem", "C2", "C3", "C4", "C5")
    if start not in names or stop not in names[1:] or names.index(stop) < names.index(start):
      raise ValueError(f"ResNet stages: need start in {names} up to stop in {names[1:]}; got {start!r}..{stop!r}")
    if start == "stem" and (x.ndim != 4 or x.shape[-1] != 3):
      raise ValueError(f"x must be [N, H, W, 3]; got shape {x.shape}")
    conv = functools.partial(Conv, use_bias=False, dtype=self.dtype, param_dtype=jnp.float32)
    norm = norm_layer(self.norm, train=train, dtype=self.dtype)
    block_cls = BasicBlock if self.depth < 50 else Bottleneck

    x = x.astype(self.dtype)
    if start == "stem":
      x = relu(norm(name="bn1")(conv(self.width, (7, 7), strides=2, padding=_pad(7, 1), name="conv1")(x)))
      x = max_pool(x, (3, 3), (2, 2), _pad(3, 1))

    stride, dilation, features = 4, 1, {}
    for stage, num_blocks in enumerate(STAGE_BLOCKS[self.depth]):
      first_stride, previous_dilation = (1 if stage == 0 else 2), dilation
      if first_stride == 2 and stride * 2 > self.output_stride:
        dilation, first_stride = dilation * 2, 1
      stride *= first_stride
      if not names.index(start) - 1 <= stage <= names.index(stop) - 1:
        continue
      grid = self.multi_grid if (stage == 3 and self.multi_grid is not None) else (1,) * num_blocks
      extra = {"deformable": True} if stage + 2 in self.deformable_stages else {}
      for b in range(num_blocks):
        x = block_cls(
            planes=self.width * 2**stage,
            strides=first_stride if b == 0 else 1,
            dilation=(previous_dilation if b == 0 and not self.uniform_dilation else dilation) * grid[b],
            conv=conv,
            norm=norm,
            name=f"layer{stage + 1}_{b}",
            **extra,
        )(x)
      features[f"C{stage + 2}"] = x
    return features

