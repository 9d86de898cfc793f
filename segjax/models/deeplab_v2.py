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

from segjax.backbones.resnet import ResNet
from segjax.layers.conv import Conv
from segjax.layers.upsample import interp_zoom
from segjax.models import pixel_normalization
from segjax.models.per_pixel import loss, predict  # noqa: F401  per-pixel cross entropy and argmax
from segjax.ops.image import IMAGENET_MEAN, IMAGENET_STD, normalize_images

TASK = "semantic"
BATCH_KEYS = ("image", "semantic")


class DeepLabV2(nn.Module):
  """images [N,H,W,3] -> {"logits" [N,H,W,L]}."""
  num_classes: int
  depth: int = 101
  width: int = 64
  norm: str = "frozen"
  output_stride: int = 8
  rates: tuple[int, ...] = (6, 12, 18, 24)
  dtype: Any = jnp.float32
  pixel_mean: tuple[float, ...] = IMAGENET_MEAN
  pixel_std: tuple[float, ...] = IMAGENET_STD

  @nn.compact
  def __call__(self, images, train: bool = False):
    height, width = images.shape[1:3]
    c5 = ResNet(depth=self.depth, width=self.width, norm=self.norm, output_stride=self.output_stride,
                dtype=self.dtype, name="backbone")(normalize_images(images, self.pixel_mean, self.pixel_std),
                                                   train=train)["C5"]
    # ASPP-L (Eq. 1 at each rate r): the branches' class scores are summed.
    scores = sum(Conv(self.num_classes, (3, 3), padding=rate, kernel_dilation=rate,
                      kernel_init=nn.initializers.normal(0.01), dtype=self.dtype, param_dtype=jnp.float32,
                      name=f"fc1_c{i}")(c5) for i, rate in enumerate(self.rates))
    return {"logits": interp_zoom(scores, self.output_stride, height, width)}


def build(model_config, info):
  return DeepLabV2(num_classes=info.num_semantic_classes, depth=model_config.depth, width=model_config.width,
                   norm=model_config.norm, output_stride=model_config.output_stride,
                   rates=tuple(model_config.rates), dtype=jnp.dtype(model_config.dtype),
                   **pixel_normalization(model_config))
