"""Multi-scale inputs for semantic networks: the same network on the image at several scales, its score maps fused.

DeepLab-MSC (Chen et al., TPAMI 2017, Sec. 4.1 and Table 4): scales {1, 0.75, 0.5}, the score maps resized to
those of scale 1 and fused by their maximum at each position and class. Attention to scale (Chen, Yang, Wang, Xu
& Yuille, CVPR 2016, Sec. 3.2): a small network reads the features of every scale and gives one weight per scale
and position, w^s = softmax over s of h^s (Eq. 2); the fused score map is g = sum_s w^s f^s (Eq. 1). Both train
with extra supervision: a cross entropy on each scale's score map besides the fused one (Sec. 3.3).
Images and score maps are resized as Caffe's Interp (corners aligned), as the reference code does; an image of
size H goes to (H - 1) s + 1, DeepLab's 321 -> 241 -> 161.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax.layers.conv import Conv
from segjax.layers.upsample import interp_zoom
from segjax.ops.pooling import resize_align_corners

FUSIONS = ("max", "attention")


def scaled_size(height, width, scale):
  return round((height - 1) * scale) + 1, round((width - 1) * scale) + 1


def check_scales(scales, fusion):
  """scales start with 1.0; a fusion is named when there are several."""
  if not scales or float(scales[0]) != 1.0 or any(s <= 0 for s in scales):
    raise ValueError(f"config.model.scales: positive, the first 1.0; got {tuple(scales)}")
  if len(scales) > 1 and fusion not in FUSIONS:
    raise ValueError(f"config.model.scale_fusion must be one of {FUSIONS} with several scales; got {fusion!r}")


def scale_input(images, scale):
  return images if scale == 1.0 else resize_align_corners(images, scaled_size(*images.shape[1:3], scale))


class AttentionToScale(nn.Module):
  """The attention model: 3x3 conv of 512 channels, ReLU, 1x1 conv to one logit per scale (Sec. 3.2)."""
  num_scales: int
  channels: int = 512

  @nn.compact
  def __call__(self, features):
    x = nn.relu(Conv(self.channels, (3, 3), padding=1, name="conv1")(features))
    return Conv(self.num_scales, (1, 1), name="conv2")(x)


def fuse_scales(scores, fusion, attention_logits=None):
  """Fuses score maps [S] x [N, h, w, L] (already at one size): their maximum, or sum_s softmax_s(h)^s f^s.

  Returns (fused [N, h, w, L], weights [N, h, w, S] or None)."""
  stacked = jnp.stack(scores, axis=-1)  # [N, h, w, L, S]
  if fusion == "max":
    return stacked.max(axis=-1), None
  weights = jax.nn.softmax(attention_logits, axis=-1)
  return jnp.einsum("nhwls,nhws->nhwl", stacked, weights), weights


def multiscale_logits(stream, images, scales, fusion, output_stride):
  """{"logits", "scale_logits", ["scale_weights"]} of `stream` (x -> (features, stride-`output_stride` scores)) run
  on `images` at `scales` (`scale_input`, `fuse_scales`); one scale gives {"logits"} only."""
  height, width = images.shape[1:3]
  features, scores = zip(*(stream(scale_input(images, s)) for s in scales))
  if len(scales) == 1:
    return {"logits": interp_zoom(scores[0], output_stride, height, width)}
  size = scores[0].shape[1:3]
  scores = [scores[0]] + [resize_align_corners(s, size) for s in scores[1:]]
  attention = None
  if fusion == "attention":
    resized = [features[0]] + [resize_align_corners(f, size) for f in features[1:]]
    attention = AttentionToScale(len(scales), name="attention")(jnp.concatenate(resized, -1))
  fused, weights = fuse_scales(scores, fusion, attention)
  outputs = {"logits": interp_zoom(fused, output_stride, height, width),
             "scale_logits": tuple(interp_zoom(s, output_stride, height, width) for s in scores)}
  if weights is not None:
    outputs["scale_weights"] = weights
  return outputs
