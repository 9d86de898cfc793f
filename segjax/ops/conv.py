"""2-D convolution as matrix products where XLA:CPU's convolution is slow; pass as flax.linen.Conv's
`conv_general_dilated`. These paths are taken in programs lowered for CPU only; TPU and GPU programs get
lax.conv_general_dilated (segjax.ops.platform.select).

- A 1x1 convolution is one dot: XLA:CPU runs it about 2x faster than the convolution, and the dot's transposes
  (the gradients) 2-4x faster than the 1x1 weight- and strided input-gradient convolutions. Its VJP materialises
  the output gradient before transposing it for the weight gradient (see _pointwise_bwd).
- A stride-1 kernel from 16 to 32 or more channels keeps lax's convolution and input gradient (a custom VJP), but
  its weight gradient is k*k dots, one per tap: XLA:CPU's weight-gradient convolution runs these at a fraction of
  its dot's speed (ResNet's 3x3 convolutions, dilated too, U-Net's, Mask R-CNN's mask head, the FPN output convs).
- A kernel on fewer than 16 input channels to 32 or more (ResNet's 7x7 stride-2 stem and VGG's first layer on the
  RGB image), or strided from 128 channels (ResNet v1.5's stride-2 3x3 convolutions), is im2col and one dot
  (conv_as_matmul's path), its gradients too: there the taps' dots would be thin or strided, and XLA:CPU's
  weight-gradient convolution is at its slowest.
- A dilated kernel whose taps mostly read zero padding (DeepLab v3 Sec. 3.3: at rates near the feature-map size a
  3x3 atrous filter degenerates to its centre tap) runs tap by tap, each tap one dot over the output rows and
  columns where it reads the image: the padding's multiply-adds are skipped, in the gradients too.
Everything else goes to lax.conv_general_dilated. `conv_as_matmul` is for convolutions inside control flow, where
XLA:CPU's convolutions are slow: im2col, one dot. `up_convolution`, a transposed convolution whose kernel equals its
stride (U-Net's 2x2 up-convolution), is one dot and a depth-to-space reshape on CPU, where XLA's transposed
convolution and its gradients run as convolutions of a zero-dilated input. scripts/bench_conv.py times each path
against lax and torch at the models' layer shapes; scripts/bench_models.py gives the effect on whole models.
"""
import functools

import jax
from jax import lax
import jax.numpy as jnp

from segjax.ops import platform

_CHANNELS_LAST = (0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2)  # NHWC, HWIO, NHWC as lax.ConvDimensionNumbers specs
# Tap by tap below this share of in-bounds multiply-adds (bench_conv, forward + backward: ASPP rate 24 at 64x64,
# share 0.56, 1.75x faster than lax; rate 12, share 0.77, keeps lax's convolution, with the tap weight gradient below).
_MAX_IN_BOUNDS_SHARE = 2 / 3
# The weight gradient tap by tap from 16 input and 32 output channels (bench_conv, 3x3, forward + backward, against
# lax: U-Net's 16 -> 32 at 64x64 1.16x, 64 -> 128 at 32x32 1.62x, 256 -> 256 at 8x8 1.03x; ResNet-50's layer1 1.30x,
# layer3 at dilation 2 1.74x, layer4 at dilation 4 2.03x; ASPP rate 12 1.64x); with 16 output channels (U-Net's
# 32 -> 16 at 128x128, 0.93x) lax's weight-gradient convolution is as fast or faster, and on an RGB input the taps'
# dots are thin (im2col below).
_MIN_TAP_GRADIENT_INPUTS = 16
_MIN_TAP_GRADIENT_OUTPUTS = 32
# im2col for a kernel on fewer than _MIN_TAP_GRADIENT_INPUTS channels to _MIN_TAP_GRADIENT_OUTPUTS or more, or
# strided from _MIN_STRIDED_IM2COL_CHANNELS to as many (bench_conv, forward + backward, against lax: ResNet-50's 7x7
# stem at 512x512 4.2x and VGG-16's conv1_1 at 448x448 2.2x, both without the image's gradient; ResNet-50's stride-2
# 3x3 layers 1.2-1.4x). Narrower strided layers were not measured and stay with lax.
_MIN_STRIDED_IM2COL_CHANNELS = 128


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, precision=None, **kwargs):
  """lax.conv_general_dilated with the same arguments and result. In programs for CPU, the 2-D channels-last cases
  take the paths described above; on other platforms (segjax.ops.platform.select) lax's convolution."""
  native = lambda lhs, rhs: lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                                     dimension_numbers, feature_group_count, precision=precision,
                                                     **kwargs)
  args = _channels_last_2d(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                           feature_group_count, kwargs)
  cpu = args and _cpu_path(lhs.shape, rhs.shape, *args, precision)
  return native(lhs, rhs) if cpu is None else platform.select(lhs, rhs, cpu=cpu, xla=native)


def _cpu_path(lhs_shape, rhs_shape, strides, padding, dilation, precision):
  """The XLA:CPU implementation (x, w) -> y of a 2-D NHWC / HWIO convolution, or None where it is lax's own."""
  if rhs_shape[:2] == (1, 1) and padding == ((0, 0), (0, 0)):
    return lambda x, w: _pointwise(x[:, ::strides[0], ::strides[1]], w[0, 0], precision)  # stride s: every s-th pixel
  spans = [_tap_spans(lhs_shape[1 + a], rhs_shape[a], strides[a], padding[a], dilation[a]) for a in range(2)]
  output_size = [_output_size(lhs_shape[1 + a], rhs_shape[a], strides[a], padding[a], dilation[a]) for a in range(2)]
  in_bounds = _count(spans[0]) * _count(spans[1])
  if in_bounds < _MAX_IN_BOUNDS_SHARE * rhs_shape[0] * rhs_shape[1] * output_size[0] * output_size[1]:
    return lambda x, w: _tap_by_tap(x, w, strides, spans, output_size, precision)
  # One process only: with the taps' loop, a CPU run of two processes (gloo collectives) aborted with gloo's
  # collective-mismatch error ("received data size doesn't match expected size"; tests/test_train_multiprocess.py),
  # so there the weight gradient stays lax's.
  if (strides == (1, 1) and rhs_shape[2] >= _MIN_TAP_GRADIENT_INPUTS and rhs_shape[3] >= _MIN_TAP_GRADIENT_OUTPUTS
      and jax.process_count() == 1):
    return lambda x, w: _conv_tap_weight_gradient(x, w, padding, dilation, precision)
  if ((rhs_shape[2] < _MIN_TAP_GRADIENT_INPUTS and rhs_shape[3] >= _MIN_TAP_GRADIENT_OUTPUTS)
      or (strides != (1, 1) and min(rhs_shape[2:]) >= _MIN_STRIDED_IM2COL_CHANNELS)):
    return lambda x, w: _im2col(x, w, strides, padding, dilation, precision)
  return None


def conv_as_matmul(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None, dimension_numbers=None,
                   feature_group_count=1, precision=None, **kwargs):
  """lax.conv_general_dilated as matrix products only in programs for CPU, for convolutions traced inside lax.cond /
  switch / while: im2col (for a 1x1 kernel, one dot of the strided input). XLA:CPU runs a convolution inside control
  flow about 60x slower than outside (3x3, 256 -> 256 on 16 RoIs of 14x14, forward + backward: 45 ms at top level,
  3.05 s in a cond branch), while its matrix products keep their speed (im2col: 55 ms in the branch). On other
  platforms (segjax.ops.platform.select) lax's convolution."""
  args = _channels_last_2d(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                           feature_group_count, kwargs)
  if args is None:
    raise ValueError("conv_as_matmul: only 2-D NHWC / HWIO convolutions without groups or input dilation; got "
                     f"dimension_numbers {dimension_numbers}, feature_group_count {feature_group_count}, "
                     f"lhs_dilation {lhs_dilation}")
  native = lambda lhs, rhs: lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                                     dimension_numbers, precision=precision)
  return platform.select(lhs, rhs, cpu=lambda x, w: _im2col(x, w, *args, precision), xla=native)


def up_convolution(x, kernel, precision=None):
  """flax.linen.ConvTranspose(O, (kh, kw), strides=(kh, kw)) without bias: NHWC x [N, H, W, C], HWIO kernel
  [kh, kw, C, O] -> [N, kh H, kw W, O]. A kernel as large as its stride writes every input pixel's own kh x kw block
  of the output (U-Net's 2x2 up-convolution, Ronneberger et al. 2015), with the kernel flipped:
  y[n, kh i + a, kw j + b] = x[n, i, j] @ kernel[kh - 1 - a, kw - 1 - b], as lax.conv_transpose without
  transpose_kernel correlates the stride-dilated input with the kernel. In programs for CPU one dot [N H W, C] x
  [C, kh kw O] and a reshape; on other platforms (segjax.ops.platform.select) lax.conv_transpose, as flax runs it."""
  kh, kw = kernel.shape[:2]
  native = lambda x, w: lax.conv_transpose(x, w, (kh, kw), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                           precision=precision)
  return platform.select(x, kernel, cpu=lambda x, w: _blocks_by_dot(x, w, precision), xla=native)


def _blocks_by_dot(x, w, precision):
  n, h, width, c = x.shape
  kh, kw, _, o = w.shape
  blocks = jnp.matmul(x, w[::-1, ::-1].transpose(2, 0, 1, 3).reshape(c, kh * kw * o), precision=precision)
  return blocks.reshape(n, h, width, kh, kw, o).transpose(0, 1, 3, 2, 4, 5).reshape(n, kh * h, kw * width, o)


def _channels_last_2d(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                      feature_group_count, kwargs):
  """(strides, explicit padding, dilation) of a plain 2-D NHWC / HWIO convolution; None for anything else."""
  if (kwargs or feature_group_count != 1 or any(d != 1 for d in lhs_dilation or ()) or lhs.ndim != 4
      or not isinstance(dimension_numbers, lax.ConvDimensionNumbers)
      or tuple(map(tuple, dimension_numbers)) != _CHANNELS_LAST):
    return None
  strides, dilation = tuple(window_strides), tuple(rhs_dilation or (1, 1))
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], [1 + (k - 1) * d for k, d in zip(rhs.shape[:2], dilation)],
                                  strides, padding)
  return strides, tuple(map(tuple, padding)), dilation


def _after(x, g):
  """x made to depend on g: what a backward pass recomputes from its residual x then neither starts before the output
  gradient g exists nor is merged by XLA's CSE with the forward pass's identical computation, which would keep that
  forward result (im2col windows: k*k times the input) alive through the whole backward pass. XLA:CPU drops
  optimization barriers before its last CSE and scheduling, so the dependency is a data one: x + 0 * (one entry of g),
  x itself for a finite g."""
  return x + 0 * g.reshape(-1)[:1].sum().astype(x.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _pointwise(x, w, precision):
  return lax.dot_general(x, w, (((3,), (0,)), ((), ())), precision=precision)


def _pointwise_fwd(x, w, precision):
  return _pointwise(x, w, precision), (x, w)


def _pointwise_bwd(precision, residuals, g):
  """dx = g w^T; dW^T = g^T x, on g materialised first. XLA:CPU's dot wants the contracted pixels minor in its left
  operand, so one operand of the weight gradient is transposed: left to itself, XLA transposed g's producers (the
  ReLU and BatchNorm backward) in one strided fusion, 1.0-3.6x slower over ResNet-50's and the FPN's 1x1 layers."""
  x, w = residuals
  g = lax.optimization_barrier(g)
  dx = lax.dot_general(g, w, (((3,), (1,)), ((), ())), precision=precision)
  dw_t = jnp.matmul(g.reshape(-1, g.shape[3]).T, x.reshape(-1, x.shape[3]), precision=precision)
  return dx.astype(x.dtype), dw_t.T.astype(w.dtype)


_pointwise.defvjp(_pointwise_fwd, _pointwise_bwd)


def _lax_conv(x, w, padding, dilation, precision):
  return lax.conv_general_dilated(x, w, (1, 1), padding, rhs_dilation=dilation, precision=precision,
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv_tap_weight_gradient(x, w, padding, dilation, precision):
  return _lax_conv(x, w, padding, dilation, precision)


def _conv_tap_weight_gradient_fwd(x, w, padding, dilation, precision):
  return _lax_conv(x, w, padding, dilation, precision), (x, w)


def _conv_tap_weight_gradient_bwd(padding, dilation, precision, residuals, g):
  """dx from lax; dW[i, j]^T = g^T x_window(i, j) over the padded input (stride 1), one tap at a time (lax.map) so
  that only one window is held. g is transposed once, not each window (XLA:CPU's dot wants the contracted pixels
  minor in its left operand): 1.8-2.4x faster than transposing the windows (FPN P2, mask head)."""
  x, w = residuals
  dx = jax.vjp(lambda x: _lax_conv(x, w, padding, dilation, precision), x)[1](g)[0]
  padded = jnp.pad(_after(x, g), ((0, 0), padding[0], padding[1], (0, 0)))
  g_t = lax.optimization_barrier(g.reshape(-1, g.shape[3]).T)  # [C_out, N*H*W], materialised once
  offsets = jnp.asarray([(i * dilation[0], j * dilation[1]) for i in range(w.shape[0]) for j in range(w.shape[1])])
  tap = lambda offset: jnp.matmul(
      g_t, lax.dynamic_slice(padded, (0, offset[0], offset[1], 0), (*g.shape[:3], x.shape[3])).reshape(-1, x.shape[3]),
      precision=precision)
  dw_t = lax.map(tap, offsets)  # [k*k, C_out, C_in]
  return dx, dw_t.transpose(0, 2, 1).reshape(w.shape).astype(w.dtype)


_conv_tap_weight_gradient.defvjp(_conv_tap_weight_gradient_fwd, _conv_tap_weight_gradient_bwd)


def _windows(x, kernel, strides, padding, dilation, output_size):
  """im2col: [N, H_out, W_out, kh * kw * C], the shifted (strided, dilated) windows of the padded x concatenated tap
  by tap, in the row order of an HWIO kernel reshaped to [kh * kw * C, O]. Built in two passes, the kw column shifts
  of every padded row and then the kh row shifts of those: kh + kw slices (XLA fusions, each compiled on its own)
  instead of kh * kw (49 for a 7 x 7 stem)."""
  padded = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
  n, rows, c = x.shape[0], padded.shape[1], x.shape[3]
  (s0, s1), (d0, d1), (h, w) = strides, dilation, output_size
  columns = jnp.concatenate([lax.slice(padded, (0, 0, j * d1, 0), (n, rows, j * d1 + (w - 1) * s1 + 1, c),
                                       (1, 1, s1, 1)) for j in range(kernel[1])], -1)  # [N, rows, W_out, kw * C]
  return jnp.concatenate([lax.slice(columns, (0, i * d0, 0, 0), (n, i * d0 + (h - 1) * s0 + 1, w, columns.shape[3]),
                                    (1, s0, 1, 1)) for i in range(kernel[0])], -1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _im2col(x, w, strides, padding, dilation, precision):
  output_size = [_output_size(x.shape[1 + a], w.shape[a], strides[a], padding[a], dilation[a]) for a in range(2)]
  return jnp.matmul(_windows(x, w.shape[:2], strides, padding, dilation, output_size), w.reshape(-1, w.shape[3]),
                    precision=precision)


def _im2col_fwd(x, w, strides, padding, dilation, precision):
  return _im2col(x, w, strides, padding, dilation, precision), (x, w)


def _im2col_bwd(strides, padding, dilation, precision, residuals, g):
  """dx: g w^T folded back onto the windows; dW^T = g^T windows, the windows recomputed rather than saved (k*k times
  the input)."""
  x, w = residuals
  g = lax.optimization_barrier(g)
  x = _after(x, g)
  windows = lambda x: _windows(x, w.shape[:2], strides, padding, dilation, g.shape[1:3])
  dx = jax.vjp(windows, x)[1](jnp.matmul(g, w.reshape(-1, w.shape[3]).T, precision=precision))[0]
  dw_t = jnp.matmul(g.reshape(-1, g.shape[3]).T, windows(x).reshape(-1, w.shape[0] * w.shape[1] * w.shape[2]),
                    precision=precision)
  return dx.astype(x.dtype), dw_t.T.reshape(w.shape).astype(w.dtype)


_im2col.defvjp(_im2col_fwd, _im2col_bwd)


def _output_size(size, kernel, stride, pad, dilation):
  return (size + pad[0] + pad[1] - dilation * (kernel - 1) - 1) // stride + 1


def _tap_spans(size, kernel, stride, pad, dilation):
  """Per tap t: (first input pixel, first output, end output) of the outputs o whose input o*s + t*d - pad[0]
  lies in [0, size); empty spans (first >= end) for taps that only read padding."""
  outputs = _output_size(size, kernel, stride, pad, dilation)
  spans = []
  for t in range(kernel):
    offset = t * dilation - pad[0]
    first = max(0, -(offset // stride))  # ceil(-offset / stride) for offset < 0
    end = min(outputs, (size - 1 - offset) // stride + 1) if offset < size else 0
    spans.append((first * stride + offset, first, max(first, end)))
  return spans


def _count(spans):
  return sum(end - first for _, first, end in spans)


def _tap_by_tap(x, w, strides, spans, output_size, precision):
  """y[:, o_y, o_x] = sum over in-bounds taps (i, j) of x[:, o_y*s + i*d - p, o_x*s + j*d - p] @ w[i, j]."""
  n, channels = x.shape[0], x.shape[3]
  y = jnp.zeros((n, *output_size, w.shape[3]), jnp.result_type(x, w))
  for i, (row, top, bottom) in enumerate(spans[0]):
    for j, (col, left, right) in enumerate(spans[1]):
      if bottom <= top or right <= left:
        continue
      window = lax.slice(x, (0, row, col, 0), (n, row + (bottom - top - 1) * strides[0] + 1,
                                               col + (right - left - 1) * strides[1] + 1, channels), (1, *strides, 1))
      tap = lax.dot_general(window, w[i, j], (((3,), (0,)), ((), ())), precision=precision)
      y = y + jnp.pad(tap, ((0, 0), (top, output_size[0] - bottom), (left, output_size[1] - right), (0, 0)))
  return y
