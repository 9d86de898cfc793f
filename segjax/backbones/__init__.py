"""Backbones: ResNet (18-152, dilated for output stride 8/16), VGG-16 (FCN and DeepLab v1 trunks)."""
from segjax.backbones.resnet import ResNet
from segjax.backbones.vgg import VGG16
