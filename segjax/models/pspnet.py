"""PSPNet (Zhao et al., Pyramid Scene Parsing Network, CVPR 2017).

A dilated ResNet at output stride 8 (Sec. 3.3), the pyramid pooling module on C5 (bins 1, 2, 3, 6, each reduced to
C/4 channels; `segjax.layers.ppm`), a 3x3 conv of 512 + BN + ReLU, dropout 0.1 and a 1x1 classifier, with the
logits resized to the input with aligned corners as the Caffe Interp layer does. Deep supervision (Sec. 3.4): an
auxiliary FCN head on C4 (res4b22 in the paper; 3x3 conv to C/4, BN, ReLU, dropout 0.1, 1x1), trained with weight
`aux_weight` (0.4) and dropped at test time.

Table 1's ablation: `bins` () is the dilated-FCN baseline (the head's 3x3 conv straight on C5), `pooling` "max"
pools each bin's maximum, `dimension_reduction` False keeps every level's C channels (no 1x1 conv); Table 2's is
`aux` / `aux_weight`.

The backbone is torchvision's ResNet, so converted ImageNet weights fit; the paper's (and the released Caffe
models') ResNet differs in two places: a deep stem of three 3x3 convs (64, 64, 128 channels) instead of one 7x7
conv of 64, and the stride on the first 1x1 conv of a stage instead of the 3x3 (v1 vs. v1.5). So the stem holds
fewer parameters (9,536 vs. 112,832 in conv + BN for ResNet-50), layer1 sees 64 channels instead of 128, and
converted Caffe PSPNet weights do not fit this layout.
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from segjax.backbones.resnet import ResNet
from segjax.layers.conv import Conv
from segjax.layers.norms import norm_layer
from segjax.layers.ppm import POOLING, PyramidPooling
from segjax.models import deeplab, per_pixel, pixel_normalization
from segjax.models.validation import validated
from segjax.ops.image import IMAGENET_MEAN, IMAGENET_STD, normalize_images
from segjax.ops.pooling import resize_align_corners

TASK = "semantic"
BATCH_KEYS = ("image", "semantic")
INFERENCE_KEYS = frozenset()  # every config key shapes the variables or the training


class PSPHead(nn.Module):
  """Pyramid pooling + 3x3 conv (no bias) + BN + ReLU + dropout + 1x1 classifier: C5 [N,h,w,C] -> scores [N,h,w,L]."""
  num_classes: int
  bins: tuple[int, ...] = (1, 2, 3, 6)
  pooling: str = "avg"
  dimension_reduction: bool = True
  features: int = 512
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    y = x
    if self.bins:
      y = PyramidPooling(self.bins, self.pooling, self.dimension_reduction, dtype=self.dtype, name="ppm")(x, train)
    y = Conv(self.features, (3, 3), padding=1, use_bias=False, dtype=self.dtype, param_dtype=jnp.float32,
             name="bottleneck_conv")(y)
    y = nn.relu(norm_layer("batch", train=train, dtype=self.dtype)(name="bottleneck_bn")(y))
    y = nn.Dropout(0.1, deterministic=not train)(y)
    return Conv(self.num_classes, (1, 1), dtype=self.dtype, param_dtype=jnp.float32, name="logits")(y)


class PSPNet(nn.Module):
  """images [N,H,W,3] -> {"logits" [N,H,W,L]} (+ "aux_logits" from C4 when `aux`)."""
  num_classes: int
  depth: int = 50
  width: int = 64
  output_stride: int = 8
  bins: tuple[int, ...] = (1, 2, 3, 6)
  pooling: str = "avg"
  dimension_reduction: bool = True
  deformable_stages: tuple[int, ...] = ()
  aux: bool = True
  dtype: Any = jnp.float32
  pixel_mean: tuple[float, ...] = IMAGENET_MEAN
  pixel_std: tuple[float, ...] = IMAGENET_STD

  @nn.compact
  def __call__(self, images, train: bool = False):
    if self.bins and min(self.bins) < 1:
      raise ValueError(f"config.model.bins must be positive pyramid sizes (or () for no pyramid); got {self.bins}")
    size = images.shape[1:3]
    features = ResNet(depth=self.depth, width=self.width, output_stride=self.output_stride,
                      deformable_stages=self.deformable_stages, dtype=self.dtype,
                      name="backbone")(normalize_images(images, self.pixel_mean, self.pixel_std), train=train)
    scores = PSPHead(self.num_classes, tuple(self.bins), self.pooling, self.dimension_reduction, dtype=self.dtype,
                     name="classifier")(features["C5"], train)
    outputs = {"logits": resize_align_corners(scores.astype(jnp.float32), size)}
    if self.aux:
      aux = deeplab.FCNHead(self.num_classes, dtype=self.dtype, name="aux_classifier")(features["C4"], train)
      outputs["aux_logits"] = resize_align_corners(aux.astype(jnp.float32), size)
    return outputs


def model_config() -> ml_collections.ConfigDict:
  """PSPNet on ResNet-50 at output stride 8, bins (1, 2, 3, 6) average-pooled with dimension reduction, auxiliary
  loss weight 0.4 (Sec. 3.4)."""
  return ml_collections.ConfigDict({
      "name": "pspnet", "depth": 50, "width": 64, "output_stride": 8, "bins": (1, 2, 3, 6), "pooling": "avg",
      "dimension_reduction": True, "deformable_stages": (), "aux": True,
      "aux_weight": 0.4, "dtype": "float32", "pixel_mean": IMAGENET_MEAN, "pixel_std": IMAGENET_STD})


def build(config, info):
  c = validated(config, model_config())
  if c.pooling not in POOLING:
    raise ValueError(f"config.model.pooling must be one of {sorted(POOLING)}; got {c.pooling!r}")
  return PSPNet(num_classes=info.num_semantic_classes, depth=c.depth, width=c.width,
                output_stride=c.output_stride, bins=tuple(c.bins), pooling=c.pooling,
                dimension_reduction=c.dimension_reduction, deformable_stages=tuple(c.deformable_stages), aux=c.aux,
                dtype=jnp.dtype(c.dtype), **pixel_normalization(c))


loss = deeplab.loss  # Sec. 3.4: cross entropy (255 ignored) + aux_weight (its default 0.4) x the aux head's
predict = per_pixel.predict
