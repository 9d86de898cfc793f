"""FCN-32s/16s/8s (Long et al. 2015) on a ResNet backbone or, as in the paper, on VGG-16.

Class scores from the deepest features are upsampled and summed with scores predicted from shallower
features ("skip fusion", Sec. 4.2): FCN-8s fuses C4 and C3 (pool4 and pool3 on VGG-16). Every upsampling is a
transposed convolution initialised as bilinear interpolation (Sec. 3.3); skip score layers start at zero, as in the
paper.

config.model.backbone: "resnet" (default; depth, width, output_stride, skips of C4/C3) or "vgg16" (skips of
pool4/pool3, optional skip_scales): the released Caffe networks voc-fcn32s/16s/8s layer for layer (FCNVGG16).
"""
import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from segjax.backbones.resnet import ResNet
from segjax.backbones.vgg import VGG16
from segjax.constants import IGNORE_LABEL
from segjax.layers.conv import Conv
from segjax.layers.upsample import BilinearUpsample
from segjax.models import per_pixel, pixel_normalization
from segjax.models.validation import validated
from segjax.ops.image import IMAGENET_MEAN, IMAGENET_STD, normalize_images

TASK = "semantic"
BATCH_KEYS = ("image", "semantic")
INFERENCE_KEYS = frozenset()  # every config key shapes the variables or the training
_STRIDES = {"C3": 8, "C4": 16, "C5": 32}


class FCN(nn.Module):
  num_classes: int
  depth: int = 50
  width: int = 64
  output_stride: int = 32
  skips: tuple = ("C4", "C3")  # FCN-8s; ("C4",) is FCN-16s, () FCN-32s.
  deformable_stages: tuple[int, ...] = ()
  dtype: jnp.dtype = jnp.float32
  pixel_mean: tuple[float, ...] = IMAGENET_MEAN
  pixel_std: tuple[float, ...] = IMAGENET_STD

  @nn.compact
  def __call__(self, images, train: bool = False):
    x = normalize_images(images, self.pixel_mean, self.pixel_std)
    features = ResNet(depth=self.depth, width=self.width, output_stride=self.output_stride,
                      deformable_stages=self.deformable_stages, dtype=self.dtype, name="backbone")(x, train=train)
    stride = lambda level: min(_STRIDES[level], self.output_stride)
    scores = Conv(self.num_classes, (1, 1), dtype=self.dtype, name="score_C5")(features["C5"])
    level = "C5"
    for skip in self.skips:
      factor = stride(level) // stride(skip)
      if factor > 1:
        scores = BilinearUpsample(factor, self.num_classes, name=f"upsample_{level}")(scores)
      skip_scores = Conv(self.num_classes, (1, 1), kernel_init=nn.initializers.zeros,
                         dtype=self.dtype, name=f"score_{skip}")(features[skip])
      # FCN's crop: the upsampled map may overhang the skip's map by the border of odd sizes.
      scores = scores[:, :skip_scores.shape[1], :skip_scores.shape[2]] + skip_scores
      level = skip
    logits = BilinearUpsample(stride(level), self.num_classes, name="upsample_out")(scores)
    return {"logits": logits[:, :images.shape[1], :images.shape[2]].astype(jnp.float32)}


VGG_SKIPS = ("pool4", "pool3")
# Caffe's crop offsets in voc-fcn{32,16,8}s/train.prototxt; they undo conv1_1's 100-pixel pad. score_pool4c and
# score_pool3c start 5 and 9 cells into the skip's scores; the output starts `offset` pixels into the last upsampling.
_SKIP_OFFSETS = {"pool4": 5, "pool3": 9}
_LAST_UPSAMPLING = {0: ("upscore", 32, 19), 1: ("upscore16", 16, 27), 2: ("upscore8", 8, 31)}


class FCNVGG16(nn.Module):
  """FCN-32s/16s/8s-VGG16 as the released prototxts: score_fr on fc7 after drop7; upscore2 and upscore_pool4 (4x4/2),
  upscore16 (32x32/16) or upscore8 (16x16/8) or upscore (64x64/32): transposed convs without bias in Caffe's geometry
  ((H + 1) f outputs), initialised bilinear; score_fr, score_pool4 and score_pool3 start at zero (Caffe's default
  filler, Sec. 4.3). skip_scales multiply pool4 and pool3 before their scores: FCN-8s at-once's fixed Scale layers
  (0.01, 0.0001), ones for the staged networks. The logits are cropped to exactly the input's pixels."""
  num_classes: int
  skips: tuple = VGG_SKIPS  # FCN-8s; ("pool4",) is FCN-16s, () FCN-32s.
  skip_scales: tuple = (1.0, 1.0)
  dtype: jnp.dtype = jnp.float32
  pixel_mean: tuple[float, ...] = IMAGENET_MEAN
  pixel_std: tuple[float, ...] = IMAGENET_STD

  def __post_init__(self):
    if tuple(self.skips) != VGG_SKIPS[:len(self.skips)]:
      raise ValueError(f"config.model.skips: with backbone vgg16 one of (), ('pool4',), {VGG_SKIPS}; got {self.skips}")
    if len(self.skip_scales) != len(self.skips):
      raise ValueError(f"config.model.skip_scales: one per skip {self.skips}; got {self.skip_scales}")
    super().__post_init__()

  @nn.compact
  def __call__(self, images, train: bool = False):
    conv = lambda name: Conv(self.num_classes, (1, 1), kernel_init=nn.initializers.zeros, dtype=self.dtype,
                             name=name)
    x = normalize_images(images, self.pixel_mean, self.pixel_std)
    features = VGG16(variant="fcn", dtype=self.dtype, name="backbone")(x, train=train)
    fc7 = nn.Dropout(0.5, deterministic=not train, name="drop7")(features["fc7"])
    scores = conv("score_fr")(fc7)
    for skip, scale, name in zip(self.skips, self.skip_scales, ("upscore2", "upscore_pool4")):
      scores = BilinearUpsample(2, self.num_classes, full=True, name=name)(scores)
      skip_scores = conv(f"score_{skip}")(scale * features[skip])
      offset = _SKIP_OFFSETS[skip]
      scores = scores + skip_scores[:, offset:offset + scores.shape[1], offset:offset + scores.shape[2]]
    name, factor, offset = _LAST_UPSAMPLING[len(self.skips)]
    logits = BilinearUpsample(factor, self.num_classes, full=True, name=name)(scores)
    return {"logits": logits[:, offset:offset + images.shape[1], offset:offset + images.shape[2]].astype(jnp.float32)}


def model_config() -> ml_collections.ConfigDict:
  """FCN-8s on a ResNet (the skips of C4 and C3); backbone "vgg16" reads skips of pool4/pool3 scaled by skip_scales."""
  return ml_collections.ConfigDict({
      "name": "fcn", "backbone": "resnet", "depth": 50, "width": 64, "output_stride": 32, "skips": ("C4", "C3"),
      "skip_scales": None, "deformable_stages": (), "dtype": "float32", "pixel_mean": IMAGENET_MEAN, "pixel_std": IMAGENET_STD})


def build(config, info):
  c = validated(config, model_config())
  backbone = c.backbone
  if backbone == "vgg16":
    if c.deformable_stages:
      raise ValueError("config.model.deformable_stages: deformable stages are ResNet's; backbone 'vgg16' has none")
    skips = tuple(c.skips)
    return FCNVGG16(num_classes=info.num_semantic_classes, skips=skips,
                    skip_scales=tuple(c.skip_scales) if c.skip_scales is not None else (1.0,) * len(skips),
                    dtype=jnp.dtype(c.dtype), **pixel_normalization(c))
  if backbone != "resnet":
    raise ValueError(f"config.model.backbone: 'resnet' or 'vgg16'; got {backbone!r}")
  return FCN(num_classes=info.num_semantic_classes, depth=c.depth, width=c.width,
             output_stride=c.output_stride, skips=tuple(c.skips), deformable_stages=tuple(c.deformable_stages),
             dtype=jnp.dtype(c.dtype), **pixel_normalization(c))


loss, predict = per_pixel.loss, per_pixel.predict  # Sec. 3: per-pixel cross entropy, 255 ignored; argmax
