"""U-Net (Ronneberger et al. 2015, "U-Net: Convolutional Networks for Biomedical Image Segmentation").

Contracting path: 4 times two 3x3 convolutions + ReLU then 2x2 max-pool, channels doubling from `width`
(64 in the paper) to 16 * width (1024). Expansive path: 2x2 up-convolution halving the channels,
concatenation with the cropped contracting-path features, two 3x3 convolutions + ReLU; a final 1x1
convolution gives the class scores (Sec. 2, Fig. 1). `UNet` with padding "valid" is the paper's network on one
tile (572 -> 388 pixels); "same" keeps the input size. `build` gives a valid-padding U-Net as `OverlapTileUNet`: the
overlap-tile strategy (Sec. 2, Fig. 2) on the whole input, whose border is predicted from a mirrored extrapolation of
the image, so that the logits have the input's size like every semantic model's. Weights start as in Sec. 3: Gaussian
with std sqrt(2 / N), N the incoming nodes of one unit (9 * 64 = 576 for a 3x3 convolution over 64 channels); flax's
default (LeCun, std sqrt(1 / N)) halves the variance at each of the 23 ReLU layers, so the scores start near zero and
a short run barely moves the loss. Trained from scratch, U-Net reads the [0, 1] images as they are (no ImageNet
pixel_mean / pixel_std). The loss is Eq. 1's: the pixel-wise cross entropy, weighted by the weight map of Eq. 2 when
the batch carries it as "pixel_weights" (config.dataset.unet_weight_map: segjax/data/pipeline.py,
segjax/models/per_pixel.py).
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from segjax.layers.conv import Conv, UpConvolution
from segjax.models.per_pixel import loss, predict  # noqa: F401  cross entropy (Eq. 1, with the batch's weights), argmax
from segjax.models.validation import validated
from segjax.ops.pooling import max_pool_2x2

TASK = "semantic"
BATCH_KEYS = ("image", "semantic", "pixel_weights")  # pixel_weights: with config.dataset.unet_weight_map only
INFERENCE_KEYS = frozenset()  # every config key shapes the variables or the training
_PADDINGS = ("valid", "same")
# A 2x2/2 up-convolution's output unit sees one input pixel: N = C_in, where fan_in counts the 4 taps.
_HE_NORMAL = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
_HE_NORMAL_UPCONV = nn.initializers.variance_scaling(8.0, "fan_in", "normal")
# A valid tile: its bottom level's 3x3 convolutions output b pixels a side, the top's 16 b - 60 (388 at b = 28) from an
# input of 16 b + 124 (572): the convolutions consume CONTEXT pixels on each side, and outputs are 4 modulo 16.
CONTEXT = 92


def _center_crop(x, height, width):
  top, left = (x.shape[1] - height) // 2, (x.shape[2] - width) // 2
  return x[:, top:top + height, left:left + width]


class UNet(nn.Module):
  num_classes: int
  width: int = 64
  padding: str = "valid"
  dtype: jnp.dtype = jnp.float32

  def _double_conv(self, x, channels, name):
    for i in range(2):
      x = nn.relu(Conv(channels, (3, 3), padding=self.padding.upper(), kernel_init=_HE_NORMAL, dtype=self.dtype,
                       name=f"{name}_conv{i + 1}")(x))
    return x

  @nn.compact
  def __call__(self, images, train: bool = False):
    if self.padding not in _PADDINGS:
      raise ValueError(f"config.model.padding: {self.padding!r} not in {_PADDINGS}")
    x, skips = images.astype(self.dtype), []
    for level in range(4):
      x = self._double_conv(x, self.width * 2 ** level, f"down{level + 1}")
      skips.append(x)
      x = max_pool_2x2(x)
    x = self._double_conv(x, self.width * 16, "bottom")
    for level in reversed(range(4)):
      channels = self.width * 2 ** level
      x = UpConvolution(channels, (2, 2), kernel_init=_HE_NORMAL_UPCONV, dtype=self.dtype,
                        name=f"upconv{level + 1}")(x)
      x = jnp.concatenate([_center_crop(skips[level], x.shape[1], x.shape[2]), x], axis=-1)
      x = self._double_conv(x, channels, f"up{level + 1}")
    logits = Conv(self.num_classes, (1, 1), kernel_init=_HE_NORMAL, dtype=self.dtype, name="score")(x)
    logits = logits.astype(jnp.float32)
    if self.padding == "same":
      logits = jax.image.resize(logits, images.shape[:3] + logits.shape[3:], "bilinear")
    return {"logits": logits}


def mirror_padding(size: int) -> tuple[int, int]:
  """Pixels (before, after) that extend `size` to the smallest valid tile whose output covers it, centred: CONTEXT on
  each side plus the few that make the output 4 modulo 16 (all four 2x2 poolings then see even sizes, Sec. 2)."""
  extra = (4 - size) % 16
  return CONTEXT + extra // 2, CONTEXT + extra - extra // 2


def _mirrored(size: int, before: int, after: int) -> np.ndarray:
  """Indices of numpy.pad(mode="reflect") along an axis of `size`: the edge pixel is not repeated (the authors'
  tiled_predict.m), and pads longer than the axis reflect again."""
  period = max(2 * (size - 1), 1)
  index = np.arange(-before, size + after) % period
  return np.where(index < size, index, period - index)


class OverlapTileUNet(UNet):
  """The valid U-Net on an input of any size as one tile (Fig. 2): the input mirrored by `mirror_padding`, the
  network, and the centre of its output: logits at the input's size. Its variables are `UNet`'s."""

  def __call__(self, images, train: bool = False):
    if self.padding != "valid":
      raise ValueError(f"config.model.padding: the overlap-tile strategy is for 'valid' padding; got {self.padding!r}")
    (top, bottom), (left, right) = mirror_padding(images.shape[1]), mirror_padding(images.shape[2])
    tile = images[:, _mirrored(images.shape[1], top, bottom)][:, :, _mirrored(images.shape[2], left, right)]
    logits = super().__call__(tile, train)["logits"]
    y, x = top - CONTEXT, left - CONTEXT  # the tile's output starts CONTEXT pixels into the padded input
    return {"logits": logits[:, y:y + images.shape[1], x:x + images.shape[2]]}


def model_config() -> ml_collections.ConfigDict:
  """U-Net as the paper (unpadded convolutions, overlap-tile)."""
  return ml_collections.ConfigDict({"name": "unet", "width": 64, "padding": "valid", "dtype": "float32"})


def build(config, info):
  c = validated(config, model_config())
  model = OverlapTileUNet if c.padding == "valid" else UNet
  return model(num_classes=info.num_semantic_classes, width=c.width, padding=c.padding,
               dtype=jnp.dtype(c.dtype))
