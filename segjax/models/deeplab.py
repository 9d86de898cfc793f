"""DeepLab v3 (Chen et al. 2017), v3+ (Chen et al. 2018) and torchvision's FCN-ResNet on a dilated ResNet.

DeepLab v3's head is ASPP (Sec. 3.3): a 1x1 conv, three 3x3 atrous convs and image-level pooling, each with BN
and ReLU, concatenated and projected to 256 channels; then torchvision's 3x3 conv + BN + ReLU and the 1x1
classifier. DeepLab v3+ replaces that with its decoder on C2 ("decoder" head). The "fcn" head is
torchvision's FCNHead (3x3 conv to C/4, BN, ReLU, dropout 0.1, 1x1). Logits are upsampled bilinearly to the
input size (half-pixel centres, torch's align_corners=False). The optional auxiliary FCNHead on C4 is
torchvision's aux_classifier, trained with weight `aux_weight`. The "fc1024" head is the DeepLab of Deformable
ConvNets (Dai et al. 2017; msracver/Deformable-ConvNets deeplab/symbols/resnet_v1_101_deeplab_dcn.py): a 1x1 conv
to 1024 channels with bias, ReLU, and a 1x1 score conv, both initialised N(0, 0.01) with zero bias. `norm` is the
backbone's ("frozen": the pre-trained statistics and affine fixed, as that reference's use_global_stats). DeepLab
v3's rates are (6, 12, 18) at output stride 16 and doubled at 8; torchvision's deeplabv3 uses (12, 24, 36) at
output stride 8. Both are configs. The "cascade" head is DeepLab v3's "going deeper" model (Sec. 3.2, Tables 1-3):
`cascade_blocks` (0..3) copies of block4 after it (block5..block7, `backbones/resnet_cascade.py`) at the rates that
keep the output stride, times the multi-grid unit rates, then a 1x1 classifier with bias; no ASPP. Its backbone
takes the paper's rates (`ResNet.uniform_dilation`: block4 at OS 16 with multi-grid (1, 2, 4) gets (2, 4, 8)), and
output strides up to 32 * 2^cascade_blocks (Table 1's 64..256) stride the cascaded blocks.
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from segjax.backbones.resnet import ResNet
from segjax.backbones.resnet_cascade import CascadedBlocks, check_cascade
from segjax.layers.conv import Conv
from segjax.layers.norms import norm_layer
from segjax.models import get_model, per_pixel, pixel_normalization
from segjax.models.validation import validated
from segjax.ops.image import IMAGENET_MEAN, IMAGENET_STD, normalize_images
from segjax.ops.pooling import resize_bilinear

TASK = "semantic"
BATCH_KEYS = ("image", "semantic")
INFERENCE_KEYS = frozenset()  # every config key shapes the variables or the training
HEADS = ("aspp", "decoder", "fcn", "fc1024", "cascade")  # v3, v3+, torchvision FCN, DCN DeepLab, v3 going deeper


def _conv_bn_relu(x, features, kernel, train, dtype, name, dilation=1):
  """Conv (no bias) + BN + ReLU, created in the calling module's scope as `{name}_conv` / `{name}_bn`."""
  y = Conv(features, (kernel, kernel), padding=dilation * (kernel // 2), kernel_dilation=dilation,
           use_bias=False, dtype=dtype, param_dtype=jnp.float32, name=f"{name}_conv")(x)
  return nn.relu(norm_layer("batch", train=train, dtype=dtype)(name=f"{name}_bn")(y))


def aspp(x, rates, features, train, dtype):
  """ASPP with image pooling (Sec. 3.3): 1x1, 3x3 at each rate and pooled branches, concatenated, projected."""
  branches = [_conv_bn_relu(x, features, 1, train, dtype, "aspp0")]
  branches += [_conv_bn_relu(x, features, 3, train, dtype, f"aspp{i}", rate) for i, rate in enumerate(rates, 1)]
  # Image-level features: global average pooling, 1x1 conv, BN, ReLU, broadcast back to the map.
  pooled = _conv_bn_relu(x.mean((1, 2), keepdims=True), features, 1, train, dtype, "aspp_pool")
  branches.append(jnp.broadcast_to(pooled, branches[0].shape))
  y = _conv_bn_relu(jnp.concatenate(branches, axis=-1), features, 1, train, dtype, "project")
  return nn.Dropout(0.5, deterministic=not train)(y)


class ASPPHead(nn.Module):
  """ASPP + 3x3 conv + classifier (torchvision DeepLabHead): x [N,h,w,C] -> class scores [N,h,w,L]."""
  num_classes: int
  rates: tuple[int, ...]
  features: int = 256
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    y = aspp(x, self.rates, self.features, train, self.dtype)
    y = _conv_bn_relu(y, self.features, 3, train, self.dtype, "head")
    return Conv(self.num_classes, (1, 1), dtype=self.dtype, param_dtype=jnp.float32, name="logits")(y)


class DecoderHead(nn.Module):
  """DeepLab v3+ (Chen et al. 2018, Sec. 3.1): ASPP output upsampled 4x onto C2 reduced to 48 channels,
  concatenated, two 3x3 convs of 256, classifier; (C5 features, C2 features) -> scores at C2's stride."""
  num_classes: int
  rates: tuple[int, ...]
  features: int = 256
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, low_level, train: bool):
    y = aspp(x, self.rates, self.features, train, self.dtype)
    y = resize_bilinear(y, *low_level.shape[1:3])
    skip = _conv_bn_relu(low_level, 48, 1, train, self.dtype, "low_level")
    y = jnp.concatenate([y, skip], axis=-1)
    y = _conv_bn_relu(y, self.features, 3, train, self.dtype, "decoder1")
    y = _conv_bn_relu(y, self.features, 3, train, self.dtype, "decoder2")
    return Conv(self.num_classes, (1, 1), dtype=self.dtype, param_dtype=jnp.float32, name="logits")(y)


class FCNHead(nn.Module):
  """torchvision FCNHead: 3x3 conv to C/4, BN, ReLU, dropout 0.1, 1x1 classifier."""
  num_classes: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    y = _conv_bn_relu(x, x.shape[-1] // 4, 3, train, self.dtype, "head")
    y = nn.Dropout(0.1, deterministic=not train)(y)
    return Conv(self.num_classes, (1, 1), dtype=self.dtype, param_dtype=jnp.float32, name="logits")(y)


class Fc1024Head(nn.Module):
  """Deformable ConvNets' DeepLab head: fc6 (1x1 conv to 1024, bias, ReLU) and score (1x1 conv to the classes)."""
  num_classes: int
  features: int = 1024
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    del train  # no normalisation or dropout
    init = nn.initializers.normal(0.01)
    y = nn.relu(Conv(self.features, (1, 1), kernel_init=init, dtype=self.dtype, param_dtype=jnp.float32,
                     name="fc6")(x))
    return Conv(self.num_classes, (1, 1), kernel_init=init, dtype=self.dtype, param_dtype=jnp.float32,
                name="score")(y)


class CascadeHead(nn.Module):
  """DeepLab v3 going deeper (Sec. 3.2): block5..block(4 + num_blocks) on block4's output, then a 1x1 classifier."""
  num_classes: int
  num_blocks: int
  output_stride: int
  depth: int
  width: int
  multi_grid: tuple[int, ...] | None
  norm: str
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    x = CascadedBlocks(self.num_blocks, self.output_stride, self.depth, self.width, self.multi_grid, self.norm,
                       self.dtype, name="blocks")(x, train)
    return Conv(self.num_classes, (1, 1), dtype=self.dtype, param_dtype=jnp.float32, name="logits")(x)


class DeepLabV3(nn.Module):
  """images [N,H,W,3] -> {"logits" [N,H,W,L]} (+ "aux_logits" from C4 when `aux`)."""
  num_classes: int
  depth: int = 50
  width: int = 64
  output_stride: int = 8
  multi_grid: tuple[int, ...] | None = None
  deformable_stages: tuple[int, ...] = ()
  norm: str = "batch"
  head: str = "aspp"
  rates: tuple[int, ...] = (12, 24, 36)
  aux: bool = False
  cascade_blocks: int = 0
  dtype: Any = jnp.float32
  pixel_mean: tuple[float, ...] = IMAGENET_MEAN
  pixel_std: tuple[float, ...] = IMAGENET_STD

  @nn.compact
  def __call__(self, images, train: bool = False):
    if self.head not in HEADS:
      raise ValueError(f"config.model.head must be one of {HEADS}; got {self.head!r}")
    cascade = self.head == "cascade"
    if cascade:
      check_cascade(self.depth, self.output_stride, self.cascade_blocks, self.multi_grid)
    elif self.cascade_blocks:
      raise ValueError(f"config.model.cascade_blocks needs head 'cascade'; got head {self.head!r}")
    height, width = images.shape[1:3]
    features = ResNet(depth=self.depth, width=self.width, norm=self.norm, output_stride=min(self.output_stride, 32),
                      multi_grid=self.multi_grid, deformable_stages=self.deformable_stages, uniform_dilation=cascade,
                      dtype=self.dtype, name="backbone")(
                          normalize_images(images, self.pixel_mean, self.pixel_std), train=train)
    if cascade:
      scores = CascadeHead(self.num_classes, self.cascade_blocks, self.output_stride, self.depth, self.width,
                           self.multi_grid, self.norm, self.dtype, name="classifier")(features["C5"], train)
    elif self.head == "aspp":
      scores = ASPPHead(self.num_classes, self.rates, dtype=self.dtype, name="classifier")(features["C5"], train)
    elif self.head == "decoder":
      scores = DecoderHead(self.num_classes, self.rates, dtype=self.dtype, name="classifier")(
          features["C5"], features["C2"], train)
    elif self.head == "fc1024":
      scores = Fc1024Head(self.num_classes, dtype=self.dtype, name="classifier")(features["C5"], train)
    else:
      scores = FCNHead(self.num_classes, dtype=self.dtype, name="classifier")(features["C5"], train)
    outputs = {"logits": resize_bilinear(scores.astype(jnp.float32), height, width)}
    if self.aux:
      aux = FCNHead(self.num_classes, dtype=self.dtype, name="aux_classifier")(features["C4"], train)
      outputs["aux_logits"] = resize_bilinear(aux.astype(jnp.float32), height, width)
    return outputs


def model_config() -> ml_collections.ConfigDict:
  """DeepLab v3 on ResNet-101 at output stride 16, ASPP rates (6, 12, 18) (Chen et al. 2017, Sec. 4); num_classes
  None takes the data set's (a converted model's config sets its classifier's)."""
  return ml_collections.ConfigDict({
      "name": "deeplab_v3", "depth": 101, "width": 64, "output_stride": 16, "multi_grid": None,
      "deformable_stages": (), "norm": "batch", "head": "aspp", "rates": (6, 12, 18), "aux": False,
      "aux_weight": 0.5, "cascade_blocks": 0, "dtype": "float32", "pixel_mean": IMAGENET_MEAN,
      "pixel_std": IMAGENET_STD, "num_classes": None})


def semantic_num_classes(model_config, info) -> int:
  """config.model.num_classes where set (a converted model's classifier), else the data set's; they must agree."""
  num_classes = model_config.get("num_classes")
  if num_classes and info is not None and num_classes != info.num_semantic_classes:
    raise ValueError(f"config.model.num_classes: {num_classes}, but data set {getattr(info, 'name', '')!r} has "
                     f"{info.num_semantic_classes} classes")
  return num_classes or info.num_semantic_classes


def build(config, info):
  c = validated(config, model_config())
  grid = c.get("multi_grid")
  return DeepLabV3(num_classes=semantic_num_classes(c, info), depth=c.depth, width=c.width,
                   output_stride=c.output_stride, multi_grid=tuple(grid) if grid else None,
                   deformable_stages=tuple(c.deformable_stages), norm=c.norm,
                   head=c.head, rates=tuple(c.rates), aux=c.aux, cascade_blocks=c.cascade_blocks,
                   dtype=jnp.dtype(c.dtype), **pixel_normalization(c))


def loss(outputs, batch, config):
  """Pixel-wise cross entropy (255 ignored), plus `aux_weight` times the auxiliary head's (torchvision: 0.5); the
  model's defaults fill in the config (also for pspnet, gcn: each model's own)."""
  defaults = get_model(config.get("name", "deeplab_v3")).model_config()
  return per_pixel.loss(outputs, batch, validated(config, defaults))


predict = per_pixel.predict
