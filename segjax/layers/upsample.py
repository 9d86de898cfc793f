"""Bilinear upsampling: learned and initialised as bilinear interpolation (FCN, Long et al. 2015, Sec. 3.3), and
DeepLab's fixed interpolation of stride-f scores (Caffe's Interp layer)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def bilinear_kernel(factor: int, channels: int) -> np.ndarray:
  """[2f, 2f, C, C] kernel that upsamples each channel by `factor` bilinearly (FCN's upsample_filt)."""
  taps = 1.0 - np.abs(np.arange(2 * factor) - (factor - 0.5)) / factor
  kernel = np.zeros((2 * factor, 2 * factor, channels, channels), np.float32)
  kernel[:, :, np.arange(channels), np.arange(channels)] = np.outer(taps, taps)[:, :, None]
  return kernel


class BilinearUpsample(nn.Module):
  """Transposed convolution with stride f and kernel 2f whose output is exactly f times the input size.

  The geometry of torch's ConvTranspose2d(k=2f, s=f, padding=f/2); at its bilinear initialisation it equals
  jax.image.resize(..., "linear") away from the border. With full=True, Caffe's Deconvolution without padding (the
  FCN prototxts): (H + 1) f outputs, the f/2 more on each side that the crops of the VGG-16 FCN expect.
  """
  factor: int
  channels: int
  full: bool = False

  @nn.compact
  def __call__(self, x):
    f = self.factor
    kernel = self.param("kernel", lambda *_: jnp.asarray(bilinear_kernel(f, self.channels)))
    # lax.conv_transpose pads the stride-dilated input: torch's padding p is k - 1 - p per side here.
    pad = 2 * f - 1 - (0 if self.full else f // 2)
    return jax.lax.conv_transpose(x, kernel.astype(x.dtype), (f, f), ((pad, pad), (pad, pad)),
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _interp_matrix(out_size: int, in_size: int, factor: int) -> np.ndarray:
  """[out, in] weights: output pixel y reads input y / factor linearly, clamped to the last input."""
  source = np.minimum(np.arange(out_size) / factor, in_size - 1)
  lo = np.floor(source).astype(int)
  hi = np.minimum(lo + 1, in_size - 1)
  matrix = np.zeros((out_size, in_size), np.float32)
  np.add.at(matrix, (np.arange(out_size), lo), 1 - (source - lo))
  np.add.at(matrix, (np.arange(out_size), hi), source - lo)
  return matrix


def interp_zoom(x: jax.Array, factor: int, height: int, width: int) -> jax.Array:
  """DeepLab's upsampling of stride-`factor` scores [N,h,w,C] to [N,height,width,C] (float32).

  Score (i, j) sits on input pixel (factor i, factor j), the centre of its receptive field in the DeepLab nets;
  pixels in between are interpolated bilinearly, those past the last score repeat it. For inputs of size
  factor (h - 1) + 1 (DeepLab's 321, 513) this is Caffe's Interp layer with zoom_factor, i.e. torch's
  F.interpolate(mode="bilinear", align_corners=True).
  """
  rows = jnp.asarray(_interp_matrix(height, x.shape[1], factor))
  cols = jnp.asarray(_interp_matrix(width, x.shape[2], factor))
  return jnp.einsum("yh,nhwc,xw->nyxc", rows, x.astype(jnp.float32), cols, precision=jax.lax.Precision.HIGHEST)
