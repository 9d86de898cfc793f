"""Converters from public checkpoints to segjax variables."""
from segjax.weights import torchvision_detection  # noqa: F401  registers maskrcnn_resnet50_fpn, fasterrcnn_*
from segjax.weights import torchvision_segmentation  # noqa: F401  registers deeplabv3_* and fcn_resnet*
from segjax.weights.torchvision import CONVERTERS, convert, register
