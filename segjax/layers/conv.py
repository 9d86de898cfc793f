"""flax.linen.Conv running segjax.ops.conv's convolution (1x1 kernels as a dot, mostly-padding atrous kernels
tap by tap): the same parameters, names and results, faster on XLA:CPU."""
import functools

import flax.linen as nn

from segjax.ops.conv import conv_as_matmul, conv_general_dilated

Conv = functools.partial(nn.Conv, conv_general_dilated=conv_general_dilated)
# For convolutions inside lax.cond / switch / while (Mask R-CNN's mask head): matrix products only, see conv_as_matmul.
MatmulConv = functools.partial(nn.Conv, conv_general_dilated=conv_as_matmul)
HE_NORMAL = nn.initializers.variance_scaling(2.0, "fan_in", "normal")  # He et al. 2015; Caffe's "msra" filler
