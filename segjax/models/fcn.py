"""FCN-32s/16s/8s (Long et al. 2015) on a ResNet backbone.

Class scores from the deepest features are upsampled and summed with scores predicted from shallower
features ("skip fusion", Sec. 4.2): FCN-8s fuses C4 and C3. Every upsampling is a transposed convolution
initialised as bilinear interpolation (Sec. 3.3); skip score layers start at zero, as in the paper.
"""
import flax.linen as nn
import jax.numpy as jnp

from segjax.backbones.resnet import ResNet
from segjax.layers.upsample import BilinearUpsample
from segjax.ops.losses import softmax_cross_entropy

TASK = "semantic"
BATCH_KEYS = ("image", "semantic")
_STRIDES = {"C3": 8, "C4": 16, "C5": 32}


class FCN(nn.Module):
  num_classes: int
  depth: int = 50
  width: int = 64
  output_stride: int = 32
  skips: tuple = ("C4", "C3")  # FCN-8s; ("C4",) is FCN-16s, () FCN-32s.
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, images, train: bool = False):
    features = ResNet(depth=self.depth, width=self.width, output_stride=self.output_stride,
                      dtype=self.dtype, name="backbone")(images, train=train)
    stride = lambda level: min(_STRIDES[level], self.output_stride)
    scores = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name="score_C5")(features["C5"])
    level = "C5"
    for skip in self.skips:
      factor = stride(level) // stride(skip)
      if factor > 1:
        scores = BilinearUpsample(factor, self.num_classes, name=f"upsample_{level}")(scores)
      skip_scores = nn.Conv(self.num_classes, (1, 1), kernel_init=nn.initializers.zeros,
                            dtype=self.dtype, name=f"score_{skip}")(features[skip])
      # FCN's crop: the upsampled map may overhang the skip's map by the border of odd sizes.
      scores = scores[:, :skip_scores.shape[1], :skip_scores.shape[2]] + skip_scores
      level = skip
    logits = BilinearUpsample(stride(level), self.num_classes, name="upsample_out")(scores)
    return {"logits": logits[:, :images.shape[1], :images.shape[2]].astype(jnp.float32)}


def build(model_config, info):
  return FCN(num_classes=info.num_semantic_classes, depth=model_config.depth, width=model_config.width,
             output_stride=model_config.output_stride, skips=tuple(model_config.skips),
             dtype=jnp.dtype(model_config.dtype))


def loss(outputs, batch, model_config):
  """Per-pixel softmax cross entropy averaged over the pixels not labelled 255 (Sec. 3)."""
  value = softmax_cross_entropy(outputs["logits"], batch["semantic"], ignore_index=255)
  return value, {}


def predict(outputs):
  return {"labels": jnp.argmax(outputs["logits"], axis=-1).astype(jnp.int32)}
