"""deform_conv2d against torchvision.ops.deform_conv2d (NCHW / OIHW, transposed here) and, with
zero offsets, against lax.conv_general_dilated.

Tolerances: float64 atol 1e-10 (same arithmetic up to summation order); float32 atol 1e-4
(sums over kh * kw * C_in = 36 products of O(1) terms).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segjax.ops.deform_conv import deform_conv2d
import references
from references import requires_torch

_deform_conv2d = jax.jit(deform_conv2d, static_argnames=("stride", "padding", "dilation"))

# (N, H, W, C_in, C_out, kh, kw, offset groups, weight groups, stride, padding, dilation, mask)
CASES = {
    "v2": (2, 7, 9, 4, 6, 3, 3, 1, 1, 1, 1, 1, True),
    "v2_offset_groups": (2, 7, 9, 4, 6, 3, 3, 2, 1, 1, 1, 1, True),
    "v1_strided_dilated_grouped": (1, 8, 6, 6, 4, 3, 2, 3, 2, (2, 1), (0, 2), (2, 1), False),
    "v2_1x1_depthwise_offsets": (2, 5, 5, 4, 4, 1, 1, 4, 4, 1, 0, 1, True),
}


def _pair(v):
  return (v, v) if isinstance(v, int) else v


def _inputs(case, rng, dtype):
  n, h, w, c_in, c_out, kh, kw, g, groups, stride, pad, dil, _ = case
  stride, pad, dil = _pair(stride), _pair(pad), _pair(dil)
  h_out = (h + 2 * pad[0] - dil[0] * (kh - 1) - 1) // stride[0] + 1
  w_out = (w + 2 * pad[1] - dil[1] * (kw - 1) - 1) // stride[1] + 1
  x = rng.standard_normal((n, c_in, h, w))
  # Offsets up to 3 pixels push many samples off the map (zero padding and its gradient).
  offset = rng.uniform(-3, 3, (n, 2 * g * kh * kw, h_out, w_out))
  mask = rng.uniform(0, 1, (n, g * kh * kw, h_out, w_out))
  weight = rng.standard_normal((c_out, c_in // groups, kh, kw))
  bias = rng.standard_normal(c_out)
  cotangent = rng.standard_normal((n, h_out, w_out, c_out))
  return [a.astype(dtype) for a in (x, offset, weight, bias, mask)], cotangent.astype(dtype)


def _torch_reference(case, arrays, cotangent):
  """torchvision output and gradients, returned in segjax layouts."""
  torch, tv = references.torch, references.torchvision
  *_, stride, pad, dil, use_mask = case
  x, offset, weight, bias, mask = (torch.tensor(a, requires_grad=True) for a in arrays)
  out = tv.ops.deform_conv2d(x, offset, weight, bias, _pair(stride), _pair(pad), _pair(dil),
                             mask if use_mask else None)
  out.backward(torch.tensor(np.moveaxis(cotangent, -1, 1)))
  nhwc = lambda t: np.moveaxis(t.detach().numpy(), 1, -1)
  grads = [nhwc(x.grad), nhwc(offset.grad), np.transpose(weight.grad.numpy(), (2, 3, 1, 0)),
           bias.grad.numpy()]
  return nhwc(out), grads + ([nhwc(mask.grad)] if use_mask else [])


def _segjax(case, arrays, cotangent):
  *_, stride, pad, dil, use_mask = case
  x, offset, weight, bias, mask = arrays
  args = [np.moveaxis(x, 1, -1), np.moveaxis(offset, 1, -1), np.transpose(weight, (2, 3, 1, 0)),
          bias] + ([np.moveaxis(mask, 1, -1)] if use_mask else [])
  fn = lambda x, o, w, b, m=None: _deform_conv2d(x, o, w, b, m, stride=stride, padding=pad,
                                                 dilation=dil)
  out, vjp = jax.vjp(fn, *map(jnp.asarray, args))
  return np.asarray(out), [np.asarray(g) for g in vjp(jnp.asarray(cotangent, out.dtype))]


@requires_torch
@pytest.mark.parametrize("name", list(CASES))
def test_deform_conv2d_matches_torchvision_float64(name):
  case = CASES[name]
  rng = np.random.default_rng(0)
  arrays, cotangent = _inputs(case, rng, np.float64)
  with jax.enable_x64(True):
    out, grads = _segjax(case, arrays, cotangent)
  expected_out, expected_grads = _torch_reference(case, arrays, cotangent)
  np.testing.assert_allclose(out, expected_out, rtol=0, atol=1e-10)
  assert len(grads) == len(expected_grads)
  for g, e in zip(grads, expected_grads):  # x, offset, weight, bias[, mask]
    np.testing.assert_allclose(g, e, rtol=0, atol=1e-10)


@requires_torch
def test_deform_conv2d_matches_torchvision_float32():
  case = CASES["v2_offset_groups"]
  rng = np.random.default_rng(1)
  arrays, cotangent = _inputs(case, rng, np.float32)
  out, grads = _segjax(case, arrays, cotangent)
  expected_out, expected_grads = _torch_reference(case, arrays, cotangent)
  assert out.dtype == np.float32
  np.testing.assert_allclose(out, expected_out, rtol=0, atol=1e-4)
  for g, e in zip(grads, expected_grads):
    np.testing.assert_allclose(g, e, rtol=0, atol=1e-4)


def test_zero_offsets_are_a_convolution():
  """Integer sampling points with unit mask: a plain (grouped, strided, dilated) convolution."""
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.standard_normal((2, 9, 8, 6)), jnp.float32)
  weight = jnp.asarray(rng.standard_normal((3, 3, 3, 4)), jnp.float32)  # 2 groups
  offset = jnp.zeros((2, 5, 8, 2 * 2 * 3 * 3))  # 2 offset groups
  out = _deform_conv2d(x, offset, weight, stride=(2, 1), padding=(1, 2), dilation=(1, 2))
  expected = jax.lax.conv_general_dilated(
      x, weight, (2, 1), ((1, 1), (2, 2)), rhs_dilation=(1, 2),
      dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=2)
  np.testing.assert_allclose(out, expected, rtol=0, atol=1e-4)


def test_no_recompile_for_new_offsets():
  traces = []

  @jax.jit
  def loss(x, offset, mask):
    traces.append(None)
    return deform_conv2d(x, offset, jnp.ones((3, 3, 4, 5)), None, mask, padding=1).sum()

  rng = np.random.default_rng(3)
  x = jnp.ones((1, 6, 6, 4))
  for _ in range(3):
    offset = jnp.asarray(rng.uniform(-2, 2, (1, 6, 6, 18)), jnp.float32)
    mask = jnp.asarray(rng.uniform(0, 1, (1, 6, 6, 9)), jnp.float32)
    jax.grad(loss, argnums=(0, 1, 2))(x, offset, mask)
  assert len(traces) == 1


def test_bad_inputs():
  x, weight = jnp.zeros((1, 6, 6, 4)), jnp.zeros((3, 3, 4, 5))
  with pytest.raises(ValueError, match="offset must be"):
    deform_conv2d(x, jnp.zeros((1, 4, 4, 17)), weight)
  with pytest.raises(ValueError, match="offset must be"):
    deform_conv2d(x, jnp.zeros((1, 6, 6, 18)), weight)  # output is 4x4 without padding
  with pytest.raises(ValueError, match="offset must be"):
    deform_conv2d(x, jnp.zeros((1, 4, 4, 54)), weight)  # 3 offset groups do not divide 4
  with pytest.raises(ValueError, match="mask must be"):
    deform_conv2d(x, jnp.zeros((1, 4, 4, 18)), weight, mask=jnp.zeros((1, 4, 4, 18)))
  with pytest.raises(ValueError, match="equal groups"):
    deform_conv2d(x, jnp.zeros((1, 4, 4, 18)), jnp.zeros((3, 3, 3, 5)))
  with pytest.raises(ValueError, match="4-D"):
    deform_conv2d(x[0], jnp.zeros((1, 4, 4, 18)), weight)
