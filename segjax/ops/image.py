"""Input normalisation of backbones pretrained on ImageNet."""
import jax.numpy as jnp

# torchvision's ImageNet statistics of RGB images in [0, 1]: its pretrained ResNets and VGGs expect (x - mean) / std.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_images(images, mean, std):
  """images [..., C] -> (images - mean) / std per channel."""
  return (images - jnp.asarray(mean, images.dtype)) / jnp.asarray(std, images.dtype)
