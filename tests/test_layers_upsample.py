"""FCN's bilinear-initialised transposed convolution against torch and against bilinear resizing."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segjax.layers.upsample import BilinearUpsample, bilinear_kernel
from references import requires_torch, torch


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_equals_bilinear_resize_away_from_border(factor):
  x = jax.random.normal(jax.random.key(0), (2, 5, 7, 3))
  module = BilinearUpsample(factor, 3)
  y = module.apply(module.init(jax.random.key(1), x), x)
  assert y.shape == (2, 5 * factor, 7 * factor, 3)
  expected = jax.image.resize(x, y.shape, "linear")
  np.testing.assert_allclose(y[:, factor:-factor, factor:-factor], expected[:, factor:-factor, factor:-factor],
                             atol=1e-5)


@requires_torch
@pytest.mark.parametrize("factor", [2, 8])
def test_equals_torch_conv_transpose(factor):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(1, 4, 6, 3)).astype(np.float32)
  kernel = rng.normal(size=(2 * factor, 2 * factor, 3, 3)).astype(np.float32)  # Learned: not symmetric.
  y = BilinearUpsample(factor, 3).apply({"params": {"kernel": kernel}}, x)
  deconv = torch.nn.ConvTranspose2d(3, 3, 2 * factor, stride=factor, padding=factor // 2, bias=False)
  with torch.no_grad():
    # torch's weight is [in, out, kh, kw] and applies the kernel flipped relative to lax.conv_transpose.
    deconv.weight.copy_(torch.from_numpy(kernel[::-1, ::-1].transpose(2, 3, 0, 1).copy()))
    expected = deconv(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
  np.testing.assert_allclose(np.asarray(y), expected, atol=1e-4)


def test_kernel_is_fcn_upsample_filt():
  k = bilinear_kernel(2, 2)
  np.testing.assert_allclose(k[:, :, 0, 0], np.outer([0.25, 0.75, 0.75, 0.25], [0.25, 0.75, 0.75, 0.25]))
  assert not k[:, :, 0, 1].any()
