"""DeconvNet (Noh, Hong & Han, ICCV 2015, "Learning Deconvolution Network for Semantic Segmentation").

Table 1: VGG-16's 13 convolutions (each with batch norm and ReLU, Sec. 3.3) and five 2x2/2 max pools that keep
their indices, fc6 a 7x7 VALID convolution to 4096 channels (7x7 -> 1x1 on the paper's 224x224 inputs), fc7 a 1x1
convolution, then the mirrored deconvolution network: deconv-fc6, a 7x7 VALID transposed convolution back to 512
channels (1x1 -> 7x7), and per stage an unpooling with the stored indices (Sec. 3.1) followed by 3x3 deconvolutions
with batch norm and ReLU; a 1x1 convolution gives the class scores. Widths are those of the released
DeconvNet_inference_deploy.prototxt (deconv4_3: 256, deconv3_3: 128, deconv2_2: 64). Pools round up like Caffe's.
Inputs need pool5 >= 7x7 (>= 224 pixels a side). `width` scales every layer (64 in the paper, fc 64 * width).
Weights start from He initialisation; the paper starts the encoder from ImageNet VGG-16 and the deconvolutions
from Gaussians of std 0.01, and trains in two stages on object proposals (Sec. 4.1), which segjax does not do.
Started from scratch, it reads the [0, 1] images as they are (no ImageNet pixel_mean / pixel_std).
"""
import flax.linen as nn
import jax.numpy as jnp

from segjax.backbones.vgg import STAGES
from segjax.layers.conv import Conv
from segjax.layers.norms import BatchNorm
from segjax.models.per_pixel import loss, predict  # noqa: F401  per-pixel cross entropy and argmax
from segjax.models.segnet import HE_NORMAL
from segjax.ops.unpool import max_pool_with_argmax, max_unpool

TASK = "semantic"
BATCH_KEYS = ("image", "semantic")


class DeconvNet(nn.Module):
  num_classes: int
  width: int = 64
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, images, train: bool = False):
    stages = [[c * self.width // 64 for c in stage] for stage in STAGES]
    fc = 64 * self.width

    def bn_relu(x, name):
      return nn.relu(BatchNorm(use_running_average=not train, dtype=self.dtype, name=f"{name}_bn")(x))

    def conv(x, channels, kernel, padding, name):
      return bn_relu(Conv(channels, kernel, padding=padding, kernel_init=HE_NORMAL, dtype=self.dtype,
                          name=name)(x), name)

    def deconv(x, channels, kernel, padding, name):
      return bn_relu(nn.ConvTranspose(channels, kernel, padding=padding, kernel_init=HE_NORMAL, dtype=self.dtype,
                                      name=name)(x), name)

    x, pools = images.astype(self.dtype), []
    for s, widths in enumerate(stages, start=1):
      for i, channels in enumerate(widths, start=1):
        x = conv(x, channels, (3, 3), 1, f"conv{s}_{i}")
      size = x.shape[1:3]
      x, indices = max_pool_with_argmax(x, 2, 2, ceil_mode=True)
      pools.append((indices, size))
    if min(x.shape[1:3]) < 7:
      raise ValueError(f"DeconvNet: pool5 is {x.shape[1:3]}, smaller than fc6's 7x7; inputs need >= 224 pixels a side, "
                       f"got {images.shape[1:3]} (config.dataset.image_size)")
    x = conv(x, fc, (7, 7), "VALID", "fc6")
    x = conv(x, fc, (1, 1), "VALID", "fc7")
    x = deconv(x, stages[-1][-1], (7, 7), "VALID", "deconv_fc6")
    for s in reversed(range(1, len(stages) + 1)):
      indices, size = pools[s - 1]
      x = max_unpool(x, indices, size)
      for i in range(1, len(stages[s - 1]) + 1):
        last = i == len(stages[s - 1]) and s > 1
        channels = stages[s - 2][-1] if last else stages[s - 1][i - 1]  # deconv{s}_last narrows to the stage above
        x = deconv(x, channels, (3, 3), "SAME", f"deconv{s}_{i}")
    logits = Conv(self.num_classes, (1, 1), kernel_init=HE_NORMAL, dtype=self.dtype, name="score")(x)
    return {"logits": logits.astype(jnp.float32)}


def build(model_config, info):
  return DeconvNet(num_classes=info.num_semantic_classes, width=model_config.width,
                   dtype=jnp.dtype(model_config.dtype))
