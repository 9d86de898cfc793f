"""Converters from public checkpoints to segjax variables."""
from segjax.weights.torchvision import convert
