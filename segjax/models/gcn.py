"""GCN + BR (Peng et al., Large Kernel Matters -- Improve Semantic Segmentation by Global Convolutional Network,
CVPR 2017, Fig. 2a).

A ResNet (the paper's is ResNet-152, output stride 32) gives C2..C5; on each a GCN block (`segjax.layers.gcn`)
predicts class score maps directly (k = 15 by default, the paper's best in Table 1), followed by a Boundary
Refinement block. From C5 down, the coarser scores are upsampled x2 by a deconvolution (initialised bilinear,
learned), added to the next level's and refined by a BR; at stride 4 two more deconv x2 + BR steps give the scores
at input size. Deconvolved maps are cropped to the finer map where odd input sizes make them overhang (FCN's crop).
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from segjax.backbones.resnet import ResNet
from segjax.layers.gcn import BoundaryRefinement, GlobalConv
from segjax.layers.upsample import BilinearUpsample
from segjax.models import per_pixel, pixel_normalization
from segjax.ops.image import IMAGENET_MEAN, IMAGENET_STD, normalize_images

TASK = "semantic"
BATCH_KEYS = ("image", "semantic")
LEVELS = ("C5", "C4", "C3", "C2")


class GCN(nn.Module):
  """images [N,H,W,3] -> {"logits" [N,H,W,L]}."""
  num_classes: int
  depth: int = 152
  width: int = 64
  kernel_size: int = 15
  dtype: Any = jnp.float32
  pixel_mean: tuple[float, ...] = IMAGENET_MEAN
  pixel_std: tuple[float, ...] = IMAGENET_STD

  @nn.compact
  def __call__(self, images, train: bool = False):
    features = ResNet(depth=self.depth, width=self.width, output_stride=32, dtype=self.dtype,
                      name="backbone")(normalize_images(images, self.pixel_mean, self.pixel_std), train=train)
    refine = lambda name: BoundaryRefinement(dtype=self.dtype, name=name)
    upsample = lambda name: BilinearUpsample(2, self.num_classes, name=name)
    scores = None
    for level in LEVELS:
      level_scores = refine(f"br_{level}")(
          GlobalConv(self.num_classes, self.kernel_size, dtype=self.dtype, name=f"gcn_{level}")(features[level]))
      if scores is None:
        scores = level_scores
      else:
        up = upsample(f"deconv_{level}")(scores)[:, :level_scores.shape[1], :level_scores.shape[2]]
        scores = refine(f"br_fuse_{level}")(up + level_scores)
    for i in (1, 2):  # stride 4 -> 2 -> 1
      scores = refine(f"br_out{i}")(upsample(f"deconv_out{i}")(scores))
    return {"logits": scores[:, :images.shape[1], :images.shape[2]].astype(jnp.float32)}


def build(model_config, info):
  return GCN(num_classes=info.num_semantic_classes, depth=model_config.depth, width=model_config.width,
             kernel_size=model_config.kernel_size, dtype=jnp.dtype(model_config.dtype),
             **pixel_normalization(model_config))


loss, predict = per_pixel.loss, per_pixel.predict  # pixel-wise cross entropy, 255 ignored (no auxiliary head); argmax
