"""max_pool, adaptive_avg_pool2d, adaptive_max_pool2d, resize_align_corners and resize_bilinear against torch (values
and gradients), one compile per shape."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segjax.ops import adaptive_avg_pool2d, adaptive_max_pool2d, resize_align_corners, resize_bilinear
from segjax.ops import platform
from references import requires_torch, torch

F = torch.nn.functional if torch else None


def _compare(ours, reference, x, out_hw):
  """Values and input gradients of sum(op(x) * g) for a random g, NHWC here and NCHW in torch."""
  rng = np.random.default_rng(1)
  g = rng.normal(size=(x.shape[0], *out_hw, x.shape[3])).astype(np.float32)
  value, grad = jax.value_and_grad(lambda x: (ours(x) * g).sum())(jnp.asarray(x))
  y = jax.jit(ours)(x)
  xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_(True)
  yt = reference(xt)
  (yt * torch.from_numpy(g.transpose(0, 3, 1, 2).copy())).sum().backward()
  # float32 sums of up to ~100 terms (gradients of a 10x upsampling): 1e-5 relative to the largest value.
  for a, b in ((y, yt.detach().numpy()), (grad, xt.grad.numpy())):
    b = b.transpose(0, 2, 3, 1)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * max(1.0, np.abs(b).max()))
  assert np.isfinite(value)


@requires_torch
@pytest.mark.parametrize("bins", [1, 2, 3, 6])
@pytest.mark.parametrize("hw", [(13, 17), (7, 9), (60, 60)])
def test_adaptive_avg_pool_matches_torch(bins, hw):
  """torch's bins [floor(i H / n), ceil((i + 1) H / n)) overlap on odd sizes (13 / 6); 60 is PSPNet's 473 map."""
  x = np.random.default_rng(0).normal(size=(2, *hw, 3)).astype(np.float32)
  _compare(lambda x: adaptive_avg_pool2d(x, (bins, bins)), lambda x: F.adaptive_avg_pool2d(x, (bins, bins)), x,
           (bins, bins))


@requires_torch
@pytest.mark.parametrize("bins", [1, 2, 3, 6])
@pytest.mark.parametrize("hw", [(13, 17), (7, 9)])
def test_adaptive_max_pool_matches_torch(bins, hw):
  """PSPNet's MAX rows (Table 1): the same overlapping bins as the average; the gradient goes to each bin's argmax."""
  x = np.random.default_rng(2).normal(size=(2, *hw, 3)).astype(np.float32)
  _compare(lambda x: adaptive_max_pool2d(x, (bins, bins)), lambda x: F.adaptive_max_pool2d(x, (bins, bins)), x,
           (bins, bins))


@requires_torch
@pytest.mark.parametrize("in_hw,out_hw", [((1, 1), (7, 9)), ((2, 3), (13, 17)), ((6, 6), (60, 60)),
                                          ((60, 60), (473, 473)), ((13, 17), (5, 4)), ((5, 7), (1, 1))])
def test_resize_align_corners_matches_torch(in_hw, out_hw):
  """Up (PSPNet's pooled bins to the map, the 60 -> 473 logits) and down, including 1-pixel sides."""
  x = np.random.default_rng(0).normal(size=(2, *in_hw, 3)).astype(np.float32)
  _compare(lambda x: resize_align_corners(x, out_hw),
           lambda x: F.interpolate(x, size=out_hw, mode="bilinear", align_corners=True), x, out_hw)


@requires_torch
@pytest.mark.parametrize("in_hw,out_hw", [((6, 8), (24, 32)), ((5, 7), (13, 17)), ((24, 32), (12, 16)),
                                          ((13, 17), (5, 4)), ((1, 1), (3, 3))])
def test_resize_bilinear_matches_torch(in_hw, out_hw):
  """torch's default F.interpolate(mode="bilinear", align_corners=False), up (feature maps to logits) and down
  (SOLOv2's P2 at half size, where torch does not antialias)."""
  x = np.random.default_rng(1).normal(size=(2, *in_hw, 3)).astype(np.float32)
  _compare(lambda x: resize_bilinear(x, *out_hw),
           lambda x: F.interpolate(x, size=out_hw, mode="bilinear", align_corners=False), x, out_hw)


def test_resize_bilinear_keeps_the_dtype():
  x = jnp.ones((1, 4, 4, 2), jnp.bfloat16)
  assert resize_bilinear(x, 8, 8).dtype == jnp.bfloat16


def test_rows_average_what_they_cover():
  """A float64 NumPy check of one overlapping bin: H = 13, n = 6, bin 2 covers rows floor(26/6)=4 .. ceil(39/6)=7."""
  x = np.random.default_rng(0).normal(size=(1, 13, 1, 1))
  y = adaptive_avg_pool2d(jnp.asarray(x, jnp.float32), (6, 1))
  np.testing.assert_allclose(y[0, 2, 0, 0], x[0, 4:7, 0, 0].mean(), rtol=1e-6)


def test_second_batch_does_not_recompile():
  traces = []

  @jax.jit
  def both(x):
    traces.append(1)
    return resize_align_corners(adaptive_avg_pool2d(x, (3, 3)), x.shape[1:3])

  rng = np.random.default_rng(0)
  for _ in range(2):
    both(rng.normal(size=(2, 11, 15, 4)).astype(np.float32)).block_until_ready()
  assert len(traces) == 1


def test_bad_input_is_named():
  with pytest.raises(ValueError, match="adaptive_avg_pool2d.*N, H, W, C"):
    adaptive_avg_pool2d(jnp.zeros((4, 4, 3)), (2, 2))
  with pytest.raises(ValueError, match="resize_align_corners.*positive"):
    resize_align_corners(jnp.zeros((1, 4, 4, 3)), (0, 2))


# (window, stride, padding, ceil_mode): 2 x 2 blocks (U-Net, YOLO), ResNet's stem, VGG's pool1-3 in Caffe's ceil
# mode (segjax.backbones.vgg.max_pool_ceil) and DeepLab's stride-1 pool4 / pool5.
POOLS = ((2, 2, 0, False), (3, 2, 1, False), (2, 2, 0, True), (3, 2, 1, True), (3, 1, 1, False))


def _pool_pair(window, stride, pad, ceil_mode, x):
  """(ours, torch's) for one POOLS row on x [N, H, W, C], and the output size."""
  from segjax.backbones.vgg import max_pool_ceil  # pylint: disable=g-import-not-at-top
  from segjax.ops.pooling import max_pool, max_pool_2x2  # pylint: disable=g-import-not-at-top
  reference = lambda t: F.max_pool2d(t, window, stride, pad, ceil_mode=ceil_mode)
  out_hw = reference(torch.zeros(1, 1, *x.shape[1:3])).shape[2:]
  if ceil_mode:
    ours = lambda x: max_pool_ceil(x, window, stride, pad)
  elif window == 2:
    ours = max_pool_2x2
  else:
    ours = lambda x: max_pool(x, (window, window), (stride, stride), ((pad, pad), (pad, pad)))
  return ours, reference, tuple(out_hw)


@requires_torch
@pytest.mark.parametrize("kernels", ["cpu", "xla"])
@pytest.mark.parametrize("hw", [(8, 8), (7, 9)])
@pytest.mark.parametrize("pool", POOLS)
def test_max_pool_matches_torch_values_and_gradients(pool, hw, kernels):
  """Both implementations (the taps' selects of CPU programs, reduce_window elsewhere) against torch."""
  x = np.random.default_rng(0).normal(size=(2, *hw, 3)).astype(np.float32)  # no ties: one maximum per window
  ours, reference, out_hw = _pool_pair(*pool, x)
  with platform.kernels(kernels):
    # a fresh function per kernel: jit caches traces by function, and `kernels` acts when tracing
    _compare(lambda x: ours(x), reference, x, out_hw)


@requires_torch
@pytest.mark.parametrize("kernels", ["cpu", "xla"])
@pytest.mark.parametrize("pool", POOLS)
def test_max_pool_gives_a_tied_windows_gradient_to_its_first_maximum_as_torch(pool, kernels):
  """Values in {0, 1, 2} tie within most windows: torch's max_pool2d (and XLA's select-and-scatter) give the gradient
  to the first maximum in row-major order, and so does each implementation."""
  x = np.random.default_rng(2).integers(0, 3, size=(2, 8, 11, 3)).astype(np.float32)
  ours, reference, out_hw = _pool_pair(*pool, x)
  with platform.kernels(kernels):
    _compare(lambda x: ours(x), reference, x, out_hw)


def test_max_pool_taps_stay_out_of_tpu_programs():
  from segjax.ops.pooling import max_pool  # pylint: disable=g-import-not-at-top
  grad = jax.grad(lambda x: max_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1))).sum())
  x = jax.ShapeDtypeStruct((1, 8, 8, 3), jnp.float32)
  tpu = jax.jit(grad).trace(x).lower(lowering_platforms=("tpu",)).as_text(debug_info=True)
  cpu = jax.jit(grad).trace(x).lower(lowering_platforms=("cpu",)).as_text(debug_info=True)
  assert platform.CPU_SCOPE not in tpu and platform.CPU_SCOPE in cpu
