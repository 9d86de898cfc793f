"""DeepLab v1 (Chen et al., ICLR 2015): VGG-16 with atrous ("hole") convolution at output stride 8 (Sec. 3.1).

variant "deeplab": the basic DeepLab (Table 2 row DeepLab-CRF: fc6 4x4 at input stride 4, 4096 channels, 65.1M
parameters at 21 classes); "largefov": DeepLab-LargeFOV (fc6 3x3 at input stride 12, 1024 channels, 20.5M). The
trunk is segjax.backbones.vgg.VGG16 ("deeplab" / "deeplab_largefov"); the head is drop7 and fc8, a 1x1 conv to the
classes initialised N(0, 0.01), bias 0 (the released prototxts). Evaluated with DenseCRF post-processing through
the "dense_crf" model (Sec. 4).

Logits: the stride-8 fc8 scores upsampled x8 bilinearly to the input size (segjax.layers.upsample.interp_zoom, Caffe's
Interp), as the paper does at test time. In training the paper instead sums the cross entropy over the stride-8 score
map against "the ground truth labels (subsampled by 8)"; segjax trains on the upsampled logits against the full-size
labels, so that the loss, the evaluator and the CRF take one output at the input's size like every semantic model
here. The loss then also weighs the pixels between score centres; the paper's subsampling is not reproduced.
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from segjax.backbones.vgg import VGG16
from segjax.layers.conv import Conv
from segjax.layers.upsample import interp_zoom
from segjax.models import pixel_normalization
from segjax.models.per_pixel import loss, predict  # noqa: F401  per-pixel cross entropy and argmax
from segjax.ops.image import IMAGENET_MEAN, IMAGENET_STD, normalize_images

TASK = "semantic"
BATCH_KEYS = ("image", "semantic")
TRUNKS = {"deeplab": "deeplab", "largefov": "deeplab_largefov"}  # config.model.variant -> VGG16 variant
OUTPUT_STRIDE = 8


class DeepLabV1(nn.Module):
  """images [N,H,W,3] -> {"logits" [N,H,W,L]}; in train mode drop6/drop7 need a "dropout" rng."""
  num_classes: int
  variant: str = "largefov"
  width: int = 64
  dtype: Any = jnp.float32
  pixel_mean: tuple[float, ...] = IMAGENET_MEAN
  pixel_std: tuple[float, ...] = IMAGENET_STD

  def __post_init__(self):
    if self.variant not in TRUNKS:
      raise ValueError(f"config.model.variant must be one of {tuple(TRUNKS)}; got {self.variant!r}")
    super().__post_init__()

  @nn.compact
  def __call__(self, images, train: bool = False):
    height, width = images.shape[1:3]
    x = normalize_images(images, self.pixel_mean, self.pixel_std)
    fc7 = VGG16(variant=TRUNKS[self.variant], width=self.width, dtype=self.dtype, name="backbone")(x, train)["fc7"]
    x = nn.Dropout(0.5, deterministic=not train, name="drop7")(fc7)
    scores = Conv(self.num_classes, (1, 1), kernel_init=nn.initializers.normal(0.01), dtype=self.dtype,
                  param_dtype=jnp.float32, name="fc8")(x)
    return {"logits": interp_zoom(scores, OUTPUT_STRIDE, height, width)}


def build(model_config, info):
  return DeepLabV1(num_classes=info.num_semantic_classes, variant=model_config.variant, width=model_config.width,
                   dtype=jnp.dtype(model_config.dtype), **pixel_normalization(model_config))
