"""Flax building blocks shared by several models."""
from segjax.layers.fpn import FPN
from segjax.layers.gcn import BoundaryRefinement, GlobalConv
from segjax.layers.norms import BatchNorm, FrozenBatchNorm, norm_layer
from segjax.layers.ppm import PyramidPooling
from segjax.layers.semantic_fpn import semantic_fpn_features
from segjax.layers.upsample import BilinearUpsample
