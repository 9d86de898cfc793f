"""Input normalisation of backbones pretrained on ImageNet, and CoordConv's coordinate channels."""
import jax.numpy as jnp

# torchvision's ImageNet statistics of RGB images in [0, 1]: its pretrained ResNets and VGGs expect (x - mean) / std.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_images(images, mean, std):
  """images [..., C] -> (images - mean) / std per channel."""
  return (images - jnp.asarray(mean, images.dtype)) / jnp.asarray(std, images.dtype)


def coord_features(x):
  """[N,h,w,C] -> [N,h,w,C+2]: x then y coordinates, linspace(-1, 1) over the map (CoordConv)."""
  n, h, w, _ = x.shape
  xs = jnp.broadcast_to(jnp.linspace(-1, 1, w, dtype=x.dtype)[None, None, :, None], (n, h, w, 1))
  ys = jnp.broadcast_to(jnp.linspace(-1, 1, h, dtype=x.dtype)[None, :, None, None], (n, h, w, 1))
  return jnp.concatenate([x, xs, ys], axis=-1)
