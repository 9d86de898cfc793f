"""segjax.ops.conv against lax.conv_general_dilated and torch's conv2d on this CPU, in the same run: forward +
backward (input and weight gradients; the weight gradient only for a layer that reads the image) of single
convolutions at the shapes of the models' hot layers; then
ops.conv.up_convolution against lax.conv_transpose (what flax.linen.ConvTranspose runs) and torch's
conv_transpose2d at U-Net's 2x2 up-convolutions.

  PYTHONPATH=. python scripts/bench_conv.py [--iters 3] [--rows 'stem,stride 2']

Each row names the path ops.conv takes (dot, im2col, taps, tap weight gradient, lax) and prints milliseconds for lax,
ops.conv, conv_as_matmul (im2col, what the Mask R-CNN mask head runs inside its chunk loop on CPU) and torch, and
ops.conv's speed-up over lax and its ratio to torch (>1: faster than torch). ops.conv's paths are those of programs
for CPU (segjax.ops.platform); `--kernels=xla` times the plain lax ones TPU and GPU programs get instead.
"""
import argparse

import torch  # before TensorFlow-importing modules (see tests/conftest.py)

import jax  # pylint: disable=wrong-import-order
from jax import lax
import jax.numpy as jnp
import numpy as np

from bench_util import best_seconds  # scripts/, on sys.path as the script's folder
from segjax.ops import platform
from segjax.ops.conv import conv_as_matmul, conv_general_dilated, up_convolution

_DIMENSIONS = lax.ConvDimensionNumbers((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))
# (what it is, batch, size, in, out, kernel, stride, dilation[, False: the layer reads the image, no input gradient])
ROWS = [
    ("ResNet-50 stem 7x7 stride 2 at 512x512", 2, 512, 3, 64, 7, 2, 1, False),
    ("VGG-16 conv1_1 at 448x448", 2, 448, 3, 64, 3, 1, 1, False),
    ("ResNet-50 layer2 3x3 stride 2", 2, 128, 128, 128, 3, 2, 1),
    ("ResNet-50 layer3 3x3 stride 2", 2, 64, 256, 256, 3, 2, 1),
    ("ResNet-50 layer4 3x3 stride 2", 2, 32, 512, 512, 3, 2, 1),
    ("ResNet-50 bottleneck 1x1 reduce", 2, 64, 1024, 256, 1, 1, 1),
    ("ResNet-50 bottleneck 1x1 expand", 2, 128, 64, 256, 1, 1, 1),
    ("ResNet-50 downsample 1x1 stride 2", 2, 128, 256, 512, 1, 2, 1),
    ("DeepLab v3 ASPP rate 12 at OS8", 2, 64, 2048, 256, 3, 1, 12),
    ("DeepLab v3 ASPP rate 24 at OS8", 2, 64, 2048, 256, 3, 1, 24),
    ("DeepLab v3 ASPP rate 36 at OS8", 2, 64, 2048, 256, 3, 1, 36),
    ("DeepLab v3 ASPP rate 18 at OS16", 2, 32, 2048, 256, 3, 1, 18),
    ("Mask R-CNN mask head, 256 RoIs", 256, 14, 256, 256, 3, 1, 1),
    ("Mask R-CNN mask head, 16 RoIs", 16, 14, 256, 256, 3, 1, 1),
    ("FPN output conv on P2", 2, 128, 256, 256, 3, 1, 1),
    ("ResNet-50 layer3 3x3 dilation 2 at OS8", 2, 64, 256, 256, 3, 1, 2),
    ("ResNet-50 layer4 3x3 dilation 4 at OS8", 2, 64, 512, 512, 3, 1, 4),
    ("ResNet-50 layer1 3x3", 2, 128, 64, 64, 3, 1, 1),
    ("U-Net width 16, 3x3 32 -> 16 at 128x128", 8, 128, 32, 16, 3, 1, 1),
    ("U-Net width 16, 3x3 16 -> 32 at 64x64", 8, 64, 16, 32, 3, 1, 1),
    ("U-Net width 16, 3x3 64 -> 128 at 32x32", 8, 32, 64, 128, 3, 1, 1),
    ("U-Net width 16, 3x3 256 -> 256 at 8x8", 8, 8, 256, 256, 3, 1, 1),
]
# (what it is, batch, input size, in, out): 2x2 stride-2 up-convolutions of the width-16 U-Net on 8 images of
# 128 x 128 (the bottom-up demos) and of the paper's width-64 U-Net on one 572 x 572 tile.
UP_ROWS = [
    ("U-Net width 16, upconv4", 8, 8, 256, 128),
    ("U-Net width 16, upconv2", 8, 32, 64, 32),
    ("U-Net width 16, upconv1", 8, 64, 32, 16),
    ("U-Net width 64, upconv4", 1, 28, 1024, 512),
    ("U-Net width 64, upconv1", 1, 196, 128, 64),
]


def _path(x, w, conv):
  eqns = jax.make_jaxpr(conv)(x, w).eqns
  custom = [i.primitive.name for e in eqns if e.primitive.name == "custom_vjp_call"
            for i in e.params["call_jaxpr"].eqns]
  if custom:
    if "conv_general_dilated" in custom:
      return "tap weight gradient"
    return "im2col" if "concatenate" in custom else "dot"
  return "lax" if any(e.primitive.name == "conv_general_dilated" for e in eqns) else "taps"


def bench_row(batch, size, channels_in, channels_out, kernel, stride, dilation, input_gradient=True, *, iters):
  """(path, lax ms, ops.conv ms, conv_as_matmul ms, torch ms) of forward + backward."""
  rng = np.random.default_rng(0)
  x = rng.uniform(size=(batch, size, size, channels_in)).astype(np.float32)
  w = rng.normal(0, 0.01, size=(kernel, kernel, channels_in, channels_out)).astype(np.float32)
  pad = dilation * (kernel - 1) // 2
  times = []
  for impl in (lax.conv_general_dilated, conv_general_dilated, conv_as_matmul):
    conv = lambda x, w, impl=impl: impl(x, w, (stride, stride), ((pad, pad), (pad, pad)), None, (dilation, dilation),
                                        _DIMENSIONS)
    step = jax.jit(jax.grad(lambda x, w, conv=conv: jnp.sum(conv(x, w) ** 2), (0, 1) if input_gradient else 1))
    jax.block_until_ready(step(x, w))
    times.append(best_seconds(lambda step=step: jax.block_until_ready(step(x, w)), iters))
  xt = torch.tensor(x.transpose(0, 3, 1, 2).copy(), requires_grad=input_gradient)
  wt = torch.tensor(w.transpose(3, 2, 0, 1).copy(), requires_grad=True)

  def torch_step():
    xt.grad, wt.grad = None, None
    (torch.nn.functional.conv2d(xt, wt, stride=stride, padding=pad, dilation=dilation) ** 2).sum().backward()

  torch_step()
  times.append(best_seconds(torch_step, iters))
  return (_path(x, w, lambda x, w: conv_general_dilated(x, w, (stride, stride), ((pad, pad), (pad, pad)), None,
                                                        (dilation, dilation), _DIMENSIONS)),
          *(1e3 * t for t in times))


def bench_up_row(batch, size, channels_in, channels_out, iters):
  """(lax.conv_transpose ms, up_convolution ms, torch ms) of forward + backward."""
  rng = np.random.default_rng(0)
  x = rng.uniform(size=(batch, size, size, channels_in)).astype(np.float32)
  w = rng.normal(0, 0.01, size=(2, 2, channels_in, channels_out)).astype(np.float32)
  native = lambda x, w: lax.conv_transpose(x, w, (2, 2), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  times = []
  for impl in (native, up_convolution):
    step = jax.jit(jax.grad(lambda x, w, impl=impl: jnp.sum(impl(x, w) ** 2), (0, 1)))
    jax.block_until_ready(step(x, w))
    times.append(best_seconds(lambda step=step: jax.block_until_ready(step(x, w)), iters))
  xt = torch.tensor(x.transpose(0, 3, 1, 2).copy(), requires_grad=True)
  wt = torch.tensor(w[::-1, ::-1].transpose(2, 3, 0, 1).copy(), requires_grad=True)

  def torch_step():
    xt.grad, wt.grad = None, None
    (torch.nn.functional.conv_transpose2d(xt, wt, stride=2) ** 2).sum().backward()

  torch_step()
  times.append(best_seconds(torch_step, iters))
  return [1e3 * t for t in times]


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--iters", type=int, default=3)
  parser.add_argument("--kernels", choices=("cpu", "xla"), default="cpu")
  parser.add_argument("--rows", default="", help="only the rows whose names contain one of these comma-separated "
                                                 "strings (e.g. 'stem,stride 2')")
  args = parser.parse_args()
  with platform.kernels(args.kernels):
    _run(args)


def _run(args):
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}, torch {torch.__version__} "
        f"with {torch.get_num_threads()} threads; forward + backward, best of {args.iters}, ms")
  chosen = lambda name: not args.rows or any(part in name for part in args.rows.split(","))
  for name, *shape in filter(lambda row: chosen(row[0]), ROWS):
    path, ours_lax, ours, matmul, reference = bench_row(*shape, iters=args.iters)
    print(f"  {name:40s} [{path:19s}] lax {ours_lax:7.1f}  ops.conv {ours:7.1f}  conv_as_matmul {matmul:7.1f}  "
          f"torch {reference:7.1f}  speed-up {ours_lax / ours:.2f}x  vs torch {reference / ours:.2f}x", flush=True)
  for name, *shape in filter(lambda row: chosen(row[0]), UP_ROWS):
    ours_lax, ours, reference = bench_up_row(*shape, args.iters)
    print(f"  {name:40s} [up-convolution     ] lax {ours_lax:7.1f}  ops.conv {ours:7.1f}  "
          f"torch {reference:7.1f}  speed-up {ours_lax / ours:.2f}x  vs torch {reference / ours:.2f}x", flush=True)


if __name__ == "__main__":
  main()
