"""The semantic FPN of Panoptic FPN (Kirillov et al. CVPR 2019, Sec. 3.2, Fig. 3), detectron2's SemFPNHead layout:
from each of P2..P5, [3x3 conv, GroupNorm(32), ReLU, 2x bilinear upsampling] until 1/4 scale (one conv without
upsampling for P2), the four maps summed. Panoptic FPN's semantic head and Panoptic FCN's feature encoder use it."""
import flax.linen as nn

from segjax.layers.conv import Conv
from segjax.layers.norms import norm_layer
from segjax.ops.pooling import resize_bilinear

MSRA_FILL = nn.initializers.variance_scaling(2.0, "fan_out", "normal")  # detectron2's c2_msra_fill


def semantic_fpn_features(levels, channels, dtype):
  """Fig. 3's scale heads summed: [P2, P3, P4, P5] -> [N, H/4, W/4, channels]; called inside a compact module,
  whose parameters p{level}_conv{stage} and p{level}_norm{stage} it creates."""
  total = 0.0
  for k, x in enumerate(levels):  # P_{k+2}: k stages of [conv, GN, ReLU, 2x up], P2 one conv
    for stage in range(max(k, 1)):
      x = Conv(channels, (3, 3), use_bias=False, kernel_init=MSRA_FILL, dtype=dtype, name=f"p{k + 2}_conv{stage}")(x)
      x = nn.relu(norm_layer("group", train=False, dtype=dtype)(name=f"p{k + 2}_norm{stage}")(x))
      if k:
        x = resize_bilinear(x, 2 * x.shape[1], 2 * x.shape[2])
    total = total + x
  return total
