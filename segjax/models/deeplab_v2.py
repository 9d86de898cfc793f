"""DeepLab v2 (Chen et al., TPAMI 2017): ResNet-101 at output stride 8 with ASPP-L (Sec. 3.2, Fig. 4).

ASPP-L on ResNet: four parallel 3x3 atrous convs of the last stage's features at rates (6, 12, 18, 24), each straight
to the class scores (with bias, initialised N(0, 0.01) and 0 as the released prototxt's fc1_voc12_c0..c3), summed
(Sec. 3.2; the VGG-16 variant's per-branch fc6/fc7/fc8 are not built here). Logits: the scores upsampled x8 as
DeepLab v1 (segjax.layers.upsample.interp_zoom; see segjax.models.deeplab_v1 on training at the input size instead of
subsampled labels). Evaluated with DenseCRF through the "dense_crf" model (Sec. 3.3).

The backbone is segjax.backbones.resnet.ResNet (torchvision's layout: stride on the 3x3 conv, the first block of a
dilated stage keeps the previous dilation), so converted torchvision ImageNet weights fit; the paper's Caffe ResNet
strides its first 1x1 conv and dilates res4a/res5a's 3x3 by 2/4. The parameter count is the same.
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from segjax.backbones.resnet import ResNet
from segjax.layers import multiscale
from segjax.layers.conv import Conv
from segjax.models import pixel_normalization
from segjax.models.per_pixel import loss, predict  # noqa: F401  per-pixel cross entropy and argmax
from segjax.models.validation import validated
from segjax.ops.image import IMAGENET_MEAN, IMAGENET_STD, normalize_images

TASK = "semantic"
BATCH_KEYS = ("image", "semantic")
INFERENCE_KEYS = frozenset()  # every config key shapes the variables or the training


class DeepLabV2(nn.Module):
  """images [N,H,W,3] -> {"logits" [N,H,W,L]}."""
  num_classes: int
  depth: int = 101
  width: int = 64
  norm: str = "frozen"
  output_stride: int = 8
  deformable_stages: tuple[int, ...] = ()
  rates: tuple[int, ...] = (6, 12, 18, 24)
  dtype: Any = jnp.float32
  pixel_mean: tuple[float, ...] = IMAGENET_MEAN
  pixel_std: tuple[float, ...] = IMAGENET_STD
  scales: tuple[float, ...] = (1.0,)  # MSC: (1.0, 0.75, 0.5) with scale_fusion "max" (or "attention")
  scale_fusion: str = ""

  def __post_init__(self):
    multiscale.check_scales(self.scales, self.scale_fusion)
    super().__post_init__()

  @nn.compact
  def __call__(self, images, train: bool = False):
    trunk = ResNet(depth=self.depth, width=self.width, norm=self.norm, output_stride=self.output_stride,
                   deformable_stages=self.deformable_stages, dtype=self.dtype, name="backbone")
    branches = [Conv(self.num_classes, (3, 3), padding=rate, kernel_dilation=rate,
                     kernel_init=nn.initializers.normal(0.01), dtype=self.dtype, param_dtype=jnp.float32,
                     name=f"fc1_c{i}") for i, rate in enumerate(self.rates)]

    def stream(x):  # the same weights at every scale
      c5 = trunk(x, train=train)["C5"]
      return c5, sum(branch(c5) for branch in branches)  # ASPP-L (Eq. 1 at each rate r): scores summed

    x = normalize_images(images, self.pixel_mean, self.pixel_std)
    return multiscale.multiscale_logits(stream, x, self.scales, self.scale_fusion, self.output_stride)


def model_config() -> ml_collections.ConfigDict:
  """DeepLab v2 ASPP-L on ResNet-101 at output stride 8, one input scale (MSC: scales (1.0, 0.75, 0.5), "max")."""
  return ml_collections.ConfigDict({
      "name": "deeplab_v2", "depth": 101, "width": 64, "norm": "frozen", "output_stride": 8, "deformable_stages": (),
      "rates": (6, 12, 18, 24),
      "dtype": "float32", "pixel_mean": IMAGENET_MEAN, "pixel_std": IMAGENET_STD, "scales": (1.0,),
      "scale_fusion": ""})


def build(config, info):
  c = validated(config, model_config())
  return DeepLabV2(num_classes=info.num_semantic_classes, depth=c.depth, width=c.width,
                   norm=c.norm, output_stride=c.output_stride, deformable_stages=tuple(c.deformable_stages),
                   rates=tuple(c.rates), dtype=jnp.dtype(c.dtype), scales=tuple(c.scales),
                   scale_fusion=c.scale_fusion, **pixel_normalization(c))
