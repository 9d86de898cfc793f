"""U-Net (Ronneberger et al. 2015, "U-Net: Convolutional Networks for Biomedical Image Segmentation").

Contracting path: 4 times two 3x3 convolutions + ReLU then 2x2 max-pool, channels doubling from `width`
(64 in the paper) to 16 * width (1024). Expansive path: 2x2 up-convolution halving the channels,
concatenation with the cropped contracting-path features, two 3x3 convolutions + ReLU; a final 1x1
convolution gives the class scores (Sec. 2, Fig. 1). padding "valid" is the paper's (572 -> 388 pixels);
"same" keeps the input size. Weights start as in Sec. 3: Gaussian with std sqrt(2 / N), N the incoming nodes of
one unit (9 * 64 = 576 for a 3x3 convolution over 64 channels); flax's default (LeCun, std sqrt(1 / N)) halves the
variance at each of the 23 ReLU layers, so the scores start near zero and a short run barely moves the loss.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax.ops.losses import softmax_cross_entropy

TASK = "semantic"
BATCH_KEYS = ("image", "semantic")
_PADDINGS = ("valid", "same")
# A 2x2/2 up-convolution's output unit sees one input pixel: N = C_in, where fan_in counts the 4 taps.
_HE_NORMAL = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
_HE_NORMAL_UPCONV = nn.initializers.variance_scaling(8.0, "fan_in", "normal")


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
      x = nn.relu(nn.Conv(channels, (3, 3), padding=self.padding.upper(), kernel_init=_HE_NORMAL, dtype=self.dtype,
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
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = self._double_conv(x, self.width * 16, "bottom")
    for level in reversed(range(4)):
      channels = self.width * 2 ** level
      x = nn.ConvTranspose(channels, (2, 2), strides=(2, 2), kernel_init=_HE_NORMAL_UPCONV, dtype=self.dtype,
                           name=f"upconv{level + 1}")(x)
      x = jnp.concatenate([_center_crop(skips[level], x.shape[1], x.shape[2]), x], axis=-1)
      x = self._double_conv(x, channels, f"up{level + 1}")
    logits = nn.Conv(self.num_classes, (1, 1), kernel_init=_HE_NORMAL, dtype=self.dtype, name="score")(x)
    logits = logits.astype(jnp.float32)
    if self.padding == "same":
      logits = jax.image.resize(logits, images.shape[:3] + logits.shape[3:], "bilinear")
    return {"logits": logits}


def build(model_config, info):
  return UNet(num_classes=info.num_semantic_classes, width=model_config.width,
              padding=model_config.padding, dtype=jnp.dtype(model_config.dtype))


def loss(outputs, batch, model_config):
  """Per-pixel softmax cross entropy (Eq. 1, without the weight map), labels cropped to the output."""
  logits = outputs["logits"]
  labels = _center_crop(batch["semantic"][..., None], logits.shape[1], logits.shape[2])[..., 0]
  return softmax_cross_entropy(logits, labels, ignore_index=255), {}


def predict(outputs):
  return {"labels": jnp.argmax(outputs["logits"], axis=-1).astype(jnp.int32)}
