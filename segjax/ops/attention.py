"""Gaussian-interpolation glimpses (DRAW, Gregor et al. 2015, Eqs. 19-22), as Recurrent Attention (Ren & Zemel,
CVPR 2017, Eqs. 11-16 and 19) uses them to read a box out of an image and to write a patch back.

A box of centre (g_X, g_Y) and extent (delta_X, delta_Y) in pixels, read into a K_Y x K_X patch: patch point i
sits at mu_X^i = g_X + (i - K_X / 2 + 0.5) * delta_X / K_X (pixel centres at a + 0.5), and the filterbank
F_X[a, i] = exp(-(a + 0.5 - mu_X^i)^2 / (2 sigma_X^2)) / Z_i weighs image column a for patch column i, each
patch column's weights summing to one. Extract(x, F_Y, F_X) = F_Y^T x F_X reads the patch; its transpose
Extract(p, F_Y^T, F_X^T) = F_Y p F_X^T writes a patch back into the image (Eq. 19's segmentation output).
"""
import jax.numpy as jnp


def gaussian_filterbank(center, extent, sigma, image_size, patch_size, eps=1e-8):
  """F [image_size, patch_size] for one axis; center, extent, sigma are scalars (pixels)."""
  offsets = (jnp.arange(patch_size) - patch_size / 2 + 0.5) * extent / patch_size
  mu = center + offsets  # [K]
  positions = jnp.arange(image_size) + 0.5  # [A]
  weights = jnp.exp(-jnp.square(positions[:, None] - mu[None, :]) / (2 * jnp.square(sigma)))
  return weights / jnp.maximum(weights.sum(axis=0, keepdims=True), eps)


def extract_patch(image, filter_y, filter_x):
  """F_Y^T x F_X: image [H, W, C], filter_y [H, K_Y], filter_x [W, K_X] -> patch [K_Y, K_X, C]."""
  return jnp.einsum("hk,hwc,wl->klc", filter_y, image, filter_x)


def write_patch(patch, filter_y, filter_x):
  """The transpose of `extract_patch`: F_Y p F_X^T, patch [K_Y, K_X, C] -> image [H, W, C]."""
  return jnp.einsum("hk,klc,wl->hwc", filter_y, patch, filter_x)
