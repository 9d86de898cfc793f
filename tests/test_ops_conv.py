"""segjax.ops.conv.conv_general_dilated inside flax.linen.Conv against torch's conv2d in float64 (outputs, input and
weight gradients; float32 here, so atol 1e-5 of the largest value), on the five paths it takes: the 1x1 dot, the
tap-by-tap dilated kernel, lax's convolution with the tap-by-tap weight gradient (16 -> 32 or more channels), im2col
(fewer than 16 input channels to 32 or more, or strided from 128), and lax's convolution; and conv_as_matmul
(im2col) on the same geometries. The jaxprs show which path ran. These are the paths of programs for CPU, forced here by segjax.ops.platform.kernels("cpu"); tests/test_ops_platform.py checks
the choice by platform."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segjax.ops import platform
from segjax.layers.conv import UpConvolution
from segjax.ops.conv import conv_as_matmul, conv_general_dilated
from references import requires_torch, torch



@pytest.fixture(autouse=True)
def _cpu_kernels():
  with platform.kernels("cpu"):
    yield

# (H, W, kernel, stride, dilation, flax padding, path): the 1x1 kernel with every padding form and stride; dilated
# 3x3 kernels whose taps mostly read padding (DeepLab's ASPP rates on small maps, one above the map size, strided,
# asymmetric padding, a 5x5); wide (256-channel) dense kernels, one with asymmetric padding; im2col kernels on 3 input
# channels to 32 (a 7x7 stride-2 stem, a strided dilated one, asymmetric padding); and dense kernels that stay with
# lax.
CASES = [(9, 8, 1, 1, 1, "SAME", "dot"), (9, 8, 1, 2, 1, "SAME", "dot"), (9, 8, 1, 2, 1, "VALID", "dot"),
         (10, 7, 1, 3, 1, 0, "dot"),
         (17, 19, 3, 1, 12, 12, "taps"), (17, 19, 3, 1, 36, 36, "taps"), (17, 13, 3, 2, 9, 9, "taps"),
         (17, 13, 3, 2, 9, "SAME", "taps"), (17, 13, 3, 1, 7, ((7, 3), (2, 9)), "taps"), (12, 12, 5, 1, 4, 8, "taps"),
         (7, 6, 3, 1, 1, 1, "wide"), (9, 8, 3, 1, 2, "SAME", "wide"), (8, 9, 5, 1, 1, ((2, 1), (0, 3)), "wide"),
         (13, 12, 7, 2, 1, 3, "im2col"), (11, 10, 3, 2, 2, "SAME", "im2col"),
         (9, 8, 3, 1, 1, ((2, 0), (1, 2)), "im2col"),
         (12, 12, 3, 1, 1, 1, "lax"), (16, 16, 3, 1, 2, 2, "lax"), (12, 11, 3, 2, 1, 1, "lax")]


_CHANNELS = {"wide": (256, 256), "im2col": (3, 32)}  # (in, out) by path; (5, 6) for the others


def _torch_padding(padding, kernel, dilation, size, stride):
  """((top, bottom), (left, right)) of flax's padding argument."""
  if padding == "SAME":
    return jax.lax.padtype_to_pads(size, [1 + (kernel - 1) * dilation] * 2, (stride, stride), "SAME")
  if padding == "VALID":
    return ((0, 0), (0, 0))
  return ((padding, padding),) * 2 if isinstance(padding, int) else padding


def _assert_matches_torch(conv_general, h, w, kernel, stride, dilation, padding, channels_in, channels_out):
  """flax Conv with `conv_general` against torch conv2d in float64: output, input and weight gradients. Returns
  (the Conv, its variables, the input)."""
  rng = np.random.default_rng(h * w + kernel + dilation)
  x = rng.normal(size=(2, h, w, channels_in)).astype(np.float32)
  conv = nn.Conv(channels_out, (kernel, kernel), strides=stride, padding=padding, kernel_dilation=dilation,
                 conv_general_dilated=conv_general)
  variables = conv.init(jax.random.key(0), x)
  y = conv.apply(variables, x)
  cotangent = rng.normal(size=y.shape).astype(np.float32)
  dx, dvars = jax.vjp(lambda x, v: conv.apply(v, x), x, variables)[1](cotangent)

  (top, bottom), (left, right) = _torch_padding(padding, kernel, dilation, (h, w), stride)
  xt = torch.tensor(np.moveaxis(x, -1, 1), dtype=torch.float64, requires_grad=True)
  wt = torch.tensor(np.asarray(variables["params"]["kernel"]).transpose(3, 2, 0, 1), dtype=torch.float64,
                    requires_grad=True)
  bt = torch.tensor(np.asarray(variables["params"]["bias"]), dtype=torch.float64)
  yt = torch.nn.functional.conv2d(torch.nn.functional.pad(xt, (left, right, top, bottom)), wt, bt, stride=stride,
                                  dilation=dilation)
  yt.backward(torch.tensor(np.moveaxis(cotangent, -1, 1), dtype=torch.float64))
  for ours, reference in ((y, np.moveaxis(yt.detach().numpy(), 1, -1)),
                          (dx, np.moveaxis(xt.grad.numpy(), 1, -1)),
                          (dvars["params"]["kernel"], wt.grad.numpy().transpose(2, 3, 1, 0))):
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-5 * np.abs(reference).max())
  return conv, variables, x


@requires_torch
@pytest.mark.parametrize("h,w,kernel,stride,dilation,padding,path", CASES)
def test_matches_torch_conv2d_and_takes_the_expected_path(h, w, kernel, stride, dilation, padding, path):
  conv, variables, x = _assert_matches_torch(conv_general_dilated, h, w, kernel, stride, dilation, padding,
                                             *_CHANNELS.get(path, (5, 6)))

  eqns = jax.make_jaxpr(lambda x: conv.apply(variables, x))(x).eqns
  primitives = [e.primitive.name for e in eqns]
  # The dot, wide and im2col paths are custom VJPs (their own gradients): one call, whose forward is a dot, lax's
  # conv, or the windows concatenated and one dot.
  custom = [[i.primitive.name for i in e.params["call_jaxpr"].eqns]
            for e in eqns if e.primitive.name == "custom_vjp_call"]
  if path == "im2col":
    (forward,) = custom
    assert {"concatenate", "dot_general"} <= set(forward) and "conv_general_dilated" not in forward, forward
  else:
    assert custom == {"dot": [["dot_general"]], "wide": [["conv_general_dilated"]]}.get(path, []), custom
  assert primitives.count("conv_general_dilated") == (path == "lax"), primitives
  (top, bottom), (left, right) = _torch_padding(padding, kernel, dilation, (h, w), stride)
  taps = _in_bounds_taps((h, w), kernel, stride, dilation, ((top, bottom), (left, right))) if path == "taps" else 0
  assert primitives.count("dot_general") == taps, primitives


@requires_torch
@pytest.mark.parametrize("h,w,kernel,stride,dilation,padding,path", CASES)
def test_conv_as_matmul_matches_torch_conv2d_without_a_convolution(h, w, kernel, stride, dilation, padding, path):
  conv, variables, x = _assert_matches_torch(conv_as_matmul, h, w, kernel, stride, dilation, padding, 5, 6)
  # Neither the forward nor the gradients hold a convolution, inside a cond as XLA:CPU needs it (conv_as_matmul).
  step = lambda p, x: jax.lax.cond(x.sum() > 0, jax.grad(lambda p, x: conv.apply({"params": p}, x).sum(), (0, 1)),
                                   lambda p, x: (p, x), p, x)
  jaxpr = str(jax.make_jaxpr(step)(variables["params"], x))
  assert "cond[" in jaxpr and "conv_general_dilated" not in jaxpr and "dot_general" in jaxpr


@pytest.mark.parametrize("h,w,kernel,stride,dilation,padding,path", CASES[::3])
def test_plain_lax_kernels_match_torch_conv2d(h, w, kernel, stride, dilation, padding, path):
  """The implementation of TPU and GPU programs (kernels "xla"): lax's convolution for both functions."""
  channels = _CHANNELS.get(path, (5, 6))
  with platform.kernels("xla"):
    for conv_general in (conv_general_dilated, conv_as_matmul):
      conv, variables, x = _assert_matches_torch(conv_general, h, w, kernel, stride, dilation, padding, *channels)
      primitives = [e.primitive.name for e in jax.make_jaxpr(lambda x: conv.apply(variables, x))(x).eqns]
      assert primitives.count("conv_general_dilated") == 1 and "custom_vjp_call" not in primitives, primitives


def test_conv_as_matmul_rejects_what_it_does_not_cover():
  grouped = nn.Conv(4, (3, 3), feature_group_count=2, conv_general_dilated=conv_as_matmul)
  with pytest.raises(ValueError, match="feature_group_count 2"):
    grouped.init(jax.random.key(0), jnp.ones((1, 6, 6, 4)))


def _in_bounds_taps(size, kernel, stride, dilation, padding):
  """Taps (i, j) that read at least one image pixel, by brute force over the output positions."""
  reads = []
  for axis in range(2):
    outputs = np.arange((size[axis] + sum(padding[axis]) - dilation * (kernel - 1) - 1) // stride + 1)
    inputs = outputs[:, None] * stride + np.arange(kernel)[None] * dilation - padding[axis][0]
    reads.append(((inputs >= 0) & (inputs < size[axis])).any(0))
  return int(np.outer(*reads).sum())


def _eqns(conv, input_shape):
  """The top-level equations of a Conv's forward on an input of input_shape, traced without running it."""
  x = jax.ShapeDtypeStruct(input_shape, jnp.float32)
  variables = jax.eval_shape(conv.init, jax.random.key(0), x)
  return jax.make_jaxpr(conv.apply)(variables, x).eqns


def _primitives(conv, input_shape):
  return [e.primitive.name for e in _eqns(conv, input_shape)]


def test_tap_weight_gradient_from_16_input_and_32_output_channels_at_stride_1():
  conv = lambda channels, stride=1: nn.Conv(channels, (3, 3), strides=stride, padding=1,
                                            conv_general_dilated=conv_general_dilated)
  assert "custom_vjp_call" in _primitives(conv(256), (256, 14, 14, 256))  # Mask R-CNN's mask head
  assert "custom_vjp_call" in _primitives(conv(64), (2, 128, 128, 64))  # ResNet-50's layer1 at 512 x 512
  assert "custom_vjp_call" in _primitives(conv(32), (8, 64, 64, 16))  # U-Net width 16, its second level
  assert "conv_general_dilated" in _primitives(conv(16), (8, 128, 128, 32))  # 16 output channels


def _path(conv, input_shape):
  """The path of a dense Conv in a program for CPU: "tap weight gradient", "im2col" or "lax"."""
  eqns = _eqns(conv, input_shape)
  custom = {i.primitive.name for e in eqns if e.primitive.name == "custom_vjp_call"
            for i in e.params["call_jaxpr"].eqns}
  if custom:
    return "tap weight gradient" if "conv_general_dilated" in custom else "im2col"
  return "lax" if any(e.primitive.name == "conv_general_dilated" for e in eqns) else "?"


def test_im2col_from_few_input_channels_to_32_or_strided_from_128():
  conv = lambda channels, kernel=3, stride=1: nn.Conv(channels, (kernel, kernel), strides=stride, padding=kernel // 2,
                                                      conv_general_dilated=conv_general_dilated)
  assert _path(conv(64, 7, 2), (2, 512, 512, 3)) == "im2col"  # ResNet's stem
  assert _path(conv(64), (2, 448, 448, 3)) == "im2col"  # VGG-16's conv1_1
  assert _path(conv(128, stride=2), (2, 128, 128, 128)) == "im2col"  # ResNet v1.5's stride-2 3x3
  assert _path(conv(64), (2, 128, 128, 64)) == "tap weight gradient"  # stride 1 from 16 input channels
  assert _path(conv(16), (8, 128, 128, 3)) == "lax"  # U-Net's RGB layer: 16 outputs
  assert _path(conv(64, stride=2), (2, 64, 64, 64)) == "lax"  # strided under 128 channels


def test_several_processes_keep_the_lax_weight_gradient(monkeypatch):
  conv = nn.Conv(64, (3, 3), padding=1, conv_general_dilated=conv_general_dilated)
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  primitives = _primitives(conv, (2, 32, 32, 64))
  assert "conv_general_dilated" in primitives and "custom_vjp_call" not in primitives


def test_other_layouts_and_groups_go_to_lax():
  x = jnp.ones((1, 6, 6, 4))
  grouped = nn.Conv(4, (1, 1), feature_group_count=2, conv_general_dilated=conv_general_dilated)
  variables = grouped.init(jax.random.key(0), x)
  primitives = {e.primitive.name for e in jax.make_jaxpr(lambda x: grouped.apply(variables, x))(x).eqns}
  assert "conv_general_dilated" in primitives


@requires_torch
@pytest.mark.parametrize("mode", ["cpu", "xla"])
@pytest.mark.parametrize("h,w,kernel,use_bias", [(5, 7, (2, 2), True), (4, 3, (2, 3), False), (3, 3, (3, 3), True)])
def test_up_convolution_matches_torch_conv_transpose2d_and_flax(mode, h, w, kernel, use_bias):
  """UpConvolution against torch's conv_transpose2d(stride = kernel) in float64 (outputs, input and weight
  gradients) and against flax.linen.ConvTranspose on the same variables; kernels "cpu" is one dot and no
  convolution, "xla" lax's transposed convolution."""
  rng = np.random.default_rng(h * w + kernel[1])
  x = rng.normal(size=(2, h, w, 5)).astype(np.float32)
  flax_module = nn.ConvTranspose(6, kernel, strides=kernel, use_bias=use_bias)
  with platform.kernels(mode):
    module = UpConvolution(6, kernel, use_bias=use_bias)
    variables = module.init(jax.random.key(0), x)
    y = module.apply(variables, x)
    cotangent = rng.normal(size=y.shape).astype(np.float32)
    dx, dvars = jax.vjp(lambda x, v: module.apply(v, x), x, variables)[1](cotangent)
    primitives = [e.primitive.name for e in jax.make_jaxpr(lambda x: module.apply(variables, x))(x).eqns]
  assert primitives.count("conv_general_dilated") == (mode == "xla"), primitives
  assert jax.tree.map(np.shape, variables) == jax.tree.map(np.shape, flax_module.init(jax.random.key(0), x))
  np.testing.assert_allclose(y, flax_module.apply(variables, x), rtol=1e-6, atol=1e-6)

  # torch's ConvTranspose2d weight [I, O, a, b] writes input pixel i at output kh i + a, unflipped.
  kernel_values = np.asarray(variables["params"]["kernel"])
  xt = torch.tensor(np.moveaxis(x, -1, 1), dtype=torch.float64, requires_grad=True)
  wt = torch.tensor(kernel_values[::-1, ::-1].transpose(2, 3, 0, 1).copy(), dtype=torch.float64, requires_grad=True)
  bias = torch.tensor(np.asarray(variables["params"]["bias"]), dtype=torch.float64) if use_bias else None
  yt = torch.nn.functional.conv_transpose2d(xt, wt, bias, stride=kernel)
  yt.backward(torch.tensor(np.moveaxis(cotangent, -1, 1), dtype=torch.float64))
  for ours, reference in ((y, np.moveaxis(yt.detach().numpy(), 1, -1)),
                          (dx, np.moveaxis(xt.grad.numpy(), 1, -1)),
                          (dvars["params"]["kernel"], wt.grad.numpy().transpose(2, 3, 0, 1)[::-1, ::-1])):
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-5 * np.abs(reference).max())
