"""Backbones: ResNet, VGG."""
