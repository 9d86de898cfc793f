"""SegNet (Badrinarayanan, Kendall & Cipolla, TPAMI 2017, "SegNet: A Deep Convolutional Encoder-Decoder
Architecture for Image Segmentation").

Encoder: VGG-16's 13 3x3 convolutions, each followed by batch norm and ReLU, and 2x2/2 max pools that keep the
positions of their maxima (Sec. 3). Decoder: the mirror image; each stage unpools with its encoder's indices
(sparse maps, no learning) and densifies them with 3x3 convolution + BN + ReLU. Channel widths follow the released
Models/segnet_train.prototxt: a decoder stage's last convolution narrows to the width of the stage above (conv4_1_D:
512 -> 256, ...), and the last one, conv1_1_D, is a 3x3 convolution straight to the class scores (no BN, no ReLU).
Pools round up like Caffe's (torch's ceil_mode=True), so 360x480 inputs give 23x30 at pool5 as in the prototxt.
Weights start as in the paper (Sec. 3.2, He et al.): Gaussian, std sqrt(2 / fan_in). No fully connected layers, no
dropout (the released train prototxt has none). `width` scales every stage (64 in the paper). Trained from scratch
like this, it reads the [0, 1] images as they are (no ImageNet pixel_mean / pixel_std).
"""
import flax.linen as nn
import jax.numpy as jnp

from segjax.backbones.vgg import STAGES
from segjax.layers.conv import Conv
from segjax.layers.norms import BatchNorm
from segjax.models import per_pixel
from segjax.ops.unpool import max_pool_with_argmax, max_unpool

TASK = "semantic"
BATCH_KEYS = ("image", "semantic")
HE_NORMAL = nn.initializers.variance_scaling(2.0, "fan_in", "normal")  # Caffe's "msra" filler


class SegNet(nn.Module):
  num_classes: int
  width: int = 64
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, images, train: bool = False):
    stages = [[c * self.width // 64 for c in stage] for stage in STAGES]

    def conv_bn_relu(x, channels, name):
      x = Conv(channels, (3, 3), padding=1, kernel_init=HE_NORMAL, dtype=self.dtype, name=name)(x)
      return nn.relu(BatchNorm(use_running_average=not train, dtype=self.dtype, name=f"{name}_bn")(x))

    x, pools = images.astype(self.dtype), []
    for s, widths in enumerate(stages, start=1):
      for i, channels in enumerate(widths, start=1):
        x = conv_bn_relu(x, channels, f"conv{s}_{i}")
      size = x.shape[1:3]
      x, indices = max_pool_with_argmax(x, 2, 2, ceil_mode=True)
      pools.append((indices, size))
    for s in reversed(range(1, len(stages) + 1)):
      indices, size = pools[s - 1]
      x = max_unpool(x, indices, size)
      for i in range(len(stages[s - 1]), 1 if s == 1 else 0, -1):  # conv1_1_D is the classifier below
        channels = stages[s - 1][i - 1] if i > 1 else stages[s - 2][-1]  # conv{s}_1_D: the stage above's width
        x = conv_bn_relu(x, channels, f"conv{s}_{i}_D")
    logits = Conv(self.num_classes, (3, 3), padding=1, kernel_init=HE_NORMAL, dtype=self.dtype,
                  name="conv1_1_D")(x)
    return {"logits": logits.astype(jnp.float32)}


def build(model_config, info):
  return SegNet(num_classes=info.num_semantic_classes, width=model_config.width, dtype=jnp.dtype(model_config.dtype))


# Per-pixel softmax cross entropy; `class_weights` (one per class, or empty) is median frequency balancing (Sec. 3.2:
# median class frequency over each class's frequency, computed on the training set). Labels: the argmax.
loss, predict = per_pixel.loss, per_pixel.predict
