"""Detection model speed on this machine, in one run: YOLO v1 and Fast YOLO (Redmon et al. 2016) inference time per
image at 448x448 against the same network in torch, YOLO v1's training step time per image, and Faster R-CNN
R50-FPN's (Ren et al. 2015; torchvision's fasterrcnn_resnet50_fpn layout) inference time per image at the same size.

  PYTHONPATH=. python scripts/bench_detection.py [--size 448] [--batch 1] [--iters 3]

The torch reference is the same layers with the same (random) weights written with torch.nn.functional (NCHW,
padding size // 2, leaky ReLU 0.1, two connected layers); segjax's inference includes the decoding, the class-specific
confidences and per-class NMS, torch's stops at the 7x7x30 output. The training step is the forward, Eq. 3 and an SGD
update in segjax, the forward, a squared error and an SGD update in torch. Faster R-CNN (segjax/models/faster_rcnn.py,
random weights, 20 classes, torchvision's test settings: 1000 proposals per image, per-class NMS, 100 detections) is
timed from the image to the detections; the input side must be a multiple of 32 for it. float32 on the CPU. The
paper's speeds (45 FPS YOLO, 155 FPS Fast YOLO; Faster R-CNN VGG-16 7 FPS, YOLO Table 1) are on a Titan X GPU.
"""
import argparse
import time

import torch  # before TensorFlow-importing modules (see tests/conftest.py)
import torch.nn.functional as F

import jax  # pylint: disable=wrong-import-order
import jax.numpy as jnp
import numpy as np
import optax

from bench_util import best_seconds  # scripts/, on sys.path as the script's folder
from segjax.models import faster_rcnn
from segjax.models import yolo
from segjax.train.state import TrainState


def torch_variables(variables, requires_grad=False):
  """segjax's variables as torch tensors in torch's layout, made once: conv kernels OIHW (contiguous), fc kernels
  [in, out] over segjax's NHWC flattening."""
  params = {}
  for name, leaves in variables["params"].items():
    kernel = torch.from_numpy(np.array(leaves["kernel"]))
    if name.startswith("conv"):
      kernel = kernel.permute(3, 2, 0, 1).contiguous()
    params[name] = {"kernel": kernel.requires_grad_(requires_grad),
                    "bias": torch.from_numpy(np.array(leaves["bias"])).requires_grad_(requires_grad)}
  return params


def bench(name, size, batch, iters, train):
  config = yolo.model_config(name)
  module = yolo.build(config, type("Info", (), {"num_thing_classes": 20}))
  rng = np.random.default_rng(0)
  images = rng.uniform(size=(batch, size, size, 3)).astype(np.float32)
  variables = jax.device_get(jax.jit(lambda x: module.init(jax.random.key(0), x))(images[:1]))
  infer = jax.jit(lambda v, x: yolo.predict(module.apply(v, x), config)).lower(variables, images).compile()
  jax.block_until_ready(infer(variables, images))
  ours = best_seconds(lambda: jax.block_until_ready(infer(variables, images)), iters) / batch
  layers = yolo.ARCHITECTURES[name]
  x_torch = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
  with torch.no_grad():
    params = torch_variables(variables)
    torch_forward(layers, params, x_torch, train=False)
    theirs = best_seconds(lambda: torch_forward(layers, params, x_torch, train=False), iters) / batch
  print(f"{name:19s} inference  segjax {1000 * ours:8.1f} ms/image ({1 / ours:6.2f} FPS)   torch {1000 * theirs:8.1f} "
        f"ms/image   ratio segjax/torch {ours / theirs:5.2f}")
  if not train:
    return
  boxes = np.tile(np.array([[[40, 60, 200, 300], [220, 100, 400, 380]]], np.float32), (batch, 1, 1))
  batch_dict = {"image": images, "boxes": boxes, "classes": np.ones((batch, 2), np.int32),
                "instance_valid": np.ones((batch, 2), bool)}
  optimizer = optax.sgd(1e-3, momentum=0.9)

  def step(state, b, key):
    def loss_fn(params):
      outputs = module.apply({"params": params}, b["image"], train=True, rngs={"dropout": key})
      return yolo.loss(outputs, b, config)[0]
    value, grads = jax.value_and_grad(loss_fn)(state.params)
    deltas, opt_state = optimizer.update(grads, state.opt_state, state.params)
    return state.replace(params=optax.apply_updates(state.params, deltas), opt_state=opt_state), value

  state = TrainState.create(variables, optimizer)
  train_step = jax.jit(step, donate_argnums=0)
  state, _ = train_step(state, batch_dict, jax.random.key(0))
  jax.block_until_ready(state)
  times = []
  for i in range(iters):
    start = time.perf_counter()
    state, value = train_step(state, batch_dict, jax.random.key(i))
    jax.block_until_ready(value)
    times.append(time.perf_counter() - start)
  ours = min(times) / batch
  params = torch_variables(variables, requires_grad=True)
  sgd = torch.optim.SGD([t for leaves in params.values() for t in leaves.values()], lr=1e-3, momentum=0.9)
  target = torch.zeros(batch, 1470)

  def torch_step():
    sgd.zero_grad()
    out = torch_forward(layers, params, x_torch)
    ((out - target) ** 2).sum().backward()
    sgd.step()

  torch_step()
  theirs = best_seconds(torch_step, iters) / batch
  print(f"{name:19s} train step segjax {1000 * ours:8.1f} ms/image                 torch {1000 * theirs:8.1f} "
        f"ms/image   ratio segjax/torch {ours / theirs:5.2f}")


def bench_faster_rcnn(size, batch, iters):
  """Faster R-CNN R50-FPN's inference (forward and post-processing, compiled once) per image."""
  config = faster_rcnn.model_config("fpn")
  module = faster_rcnn.build(config, type("Info", (), {"num_thing_classes": 20}))
  images = np.random.default_rng(0).uniform(size=(batch, size, size, 3)).astype(np.float32)
  variables = jax.device_get(jax.jit(lambda x: module.init(jax.random.key(0), x))(images[:1]))
  infer = jax.jit(lambda v, x: faster_rcnn.predict(module.apply(v, x), config)).lower(variables, images).compile()
  jax.block_until_ready(infer(variables, images))
  ours = best_seconds(lambda: jax.block_until_ready(infer(variables, images)), iters) / batch
  print(f"{'faster_rcnn_r50_fpn':19s} inference  segjax {1000 * ours:8.1f} ms/image ({1 / ours:6.2f} FPS)")


def torch_forward(layers, params, x, train=True):
  """The network on torch_variables: NCHW convolutions padded size // 2, leaky ReLU 0.1, fc0 on segjax's NHWC
  flattening (so its kernel is used as is), dropout 0.5 in training, fc1."""
  index = 0
  for layer in layers:
    if layer == "M":
      x = F.max_pool2d(x, 2, 2)
      continue
    _, size, stride = layer
    p = params[f"conv{index}"]
    x = F.leaky_relu(F.conv2d(x, p["kernel"], p["bias"], stride=stride, padding=size // 2), 0.1)
    index += 1
  x = x.permute(0, 2, 3, 1).flatten(1)
  x = F.dropout(F.leaky_relu(x @ params["fc0"]["kernel"] + params["fc0"]["bias"], 0.1), 0.5, training=train)
  return x @ params["fc1"]["kernel"] + params["fc1"]["bias"]


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--size", type=int, default=448, help="square input side, a multiple of 32")
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--iters", type=int, default=3)
  args = parser.parse_args()
  torch.set_num_threads(max(torch.get_num_threads(), 1))
  print(f"CPU, {jax.local_device_count()} device(s), torch threads {torch.get_num_threads()}, "
        f"{args.size}x{args.size}, batch {args.batch}")
  bench("fast_yolo", args.size, args.batch, args.iters, train=False)
  bench("yolo_v1", args.size, args.batch, args.iters, train=True)
  bench_faster_rcnn(args.size, args.batch, args.iters)


if __name__ == "__main__":
  main()
