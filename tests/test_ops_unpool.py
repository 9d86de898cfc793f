"""max_pool_with_argmax / max_unpool against torch's max_pool2d(return_indices=True) / max_unpool2d (NCHW,
transposed here). Integer-valued inputs make ties, which must go to torch's first maximum; values, indices and
unpooled maps are compared exactly, gradients with atol 1e-6 (float32 sums of the same terms)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segjax.ops.unpool import max_pool_with_argmax, max_unpool
from references import requires_torch, torch

F = torch.nn.functional if torch else None

# (H, W, window, stride, ceil_mode): even and odd sizes, overlapping windows, Caffe's ceil rounding.
CASES = [(8, 8, 2, 2, False), (7, 9, 2, 2, False), (7, 9, 2, 2, True), (11, 10, 3, 2, False), (11, 10, 3, 2, True),
         (6, 5, 3, 1, False)]


def _inputs(h, w, seed):
  rng = np.random.default_rng(seed)
  return rng.integers(0, 3, size=(2, h, w, 3)).astype(np.float32)  # three values: ties in most windows


def _nchw(a, grad=False):
  return torch.tensor(np.ascontiguousarray(np.moveaxis(a, -1, 1)), requires_grad=grad)


def _nhwc(t):
  return np.moveaxis(t.detach().numpy(), 1, -1)


@requires_torch
@pytest.mark.parametrize("h,w,window,stride,ceil_mode", CASES)
def test_pool_values_indices_and_gradient_match_torch(h, w, window, stride, ceil_mode):
  x = _inputs(h, w, seed=h * w)
  xt = _nchw(x, grad=True)
  ref, ref_idx = F.max_pool2d(xt, window, stride, ceil_mode=ceil_mode, return_indices=True)
  cotangent = np.random.default_rng(1).normal(size=_nhwc(ref).shape).astype(np.float32)
  ref.backward(_nchw(cotangent))
  pooled, indices = max_pool_with_argmax(jnp.asarray(x), window, stride, ceil_mode)
  np.testing.assert_array_equal(pooled, _nhwc(ref))
  np.testing.assert_array_equal(indices, _nhwc(ref_idx))
  _, pool_vjp = jax.vjp(lambda v: max_pool_with_argmax(v, window, stride, ceil_mode)[0], jnp.asarray(x))
  np.testing.assert_allclose(pool_vjp(jnp.asarray(cotangent))[0], _nhwc(xt.grad), rtol=0, atol=1e-6)


@requires_torch
@pytest.mark.parametrize("h,w,window,stride,ceil_mode", CASES)
def test_unpool_and_its_gradient_match_torch(h, w, window, stride, ceil_mode):
  x = _inputs(h, w, seed=h + w)
  _, ref_idx = F.max_pool2d(_nchw(x), window, stride, ceil_mode=ceil_mode, return_indices=True)
  values = np.random.default_rng(2).normal(size=_nhwc(ref_idx).shape).astype(np.float32)
  vt = _nchw(values, grad=True)
  ref = F.max_unpool2d(vt, ref_idx, window, stride, output_size=(h, w))
  cotangent = np.random.default_rng(3).normal(size=(2, h, w, 3)).astype(np.float32)
  ref.backward(_nchw(cotangent))
  indices = max_pool_with_argmax(jnp.asarray(x), window, stride, ceil_mode)[1]
  out, vjp = jax.vjp(lambda v: max_unpool(v, indices, (h, w)), jnp.asarray(values))
  np.testing.assert_array_equal(out, _nhwc(ref))
  np.testing.assert_allclose(vjp(jnp.asarray(cotangent))[0], _nhwc(vt.grad), rtol=0, atol=1e-6)


def test_unpooling_puts_each_maximum_back_in_place():
  """The lecture's example (cs231n, "Max Unpooling"): pool a 4x4 map, unpool, and only the maxima remain."""
  x = np.array([[1, 2, 6, 3], [3, 5, 2, 1], [1, 2, 2, 1], [7, 3, 4, 8]], np.float32)[None, :, :, None]
  pooled, indices = max_pool_with_argmax(jnp.asarray(x), 2, 2)
  np.testing.assert_array_equal(pooled[0, :, :, 0], [[5, 6], [7, 8]])
  out = max_unpool(jnp.asarray([[1., 2.], [3., 4.]])[None, :, :, None], indices, (4, 4))
  np.testing.assert_array_equal(out[0, :, :, 0], [[0, 0, 2, 0], [0, 1, 0, 0], [0, 0, 0, 0], [3, 0, 0, 4]])


def test_one_compile_for_new_data():
  traces = []

  @jax.jit
  def round_trip(x):
    traces.append(1)
    pooled, indices = max_pool_with_argmax(x, 2, 2, ceil_mode=True)
    return max_unpool(pooled, indices, x.shape[1:3])

  for seed in range(3):
    x = jnp.asarray(np.random.default_rng(seed).normal(size=(2, 9, 7, 4)).astype(np.float32))
    out = round_trip(x)
    # Every window keeps exactly its maximum: the sum of the round trip is the sum of the pooled values.
    np.testing.assert_allclose(out.sum(), max_pool_with_argmax(x, 2, 2, True)[0].sum(), rtol=1e-6)
  assert len(traces) == 1


def test_bad_shapes_are_named():
  with pytest.raises(ValueError, match="smaller than the window"):
    max_pool_with_argmax(jnp.zeros((1, 1, 4, 1)), 2, 2)
  with pytest.raises(ValueError, match="x and indices"):
    max_unpool(jnp.zeros((1, 2, 2, 1)), jnp.zeros((1, 2, 2, 2), jnp.int32), (4, 4))
