"""SOLOv2 speed on this machine: inference and train step per image (ResNet-50-FPN, the paper's head), XLA
compile times, and Matrix NMS against hard mask NMS on the same masks.

  PYTHONPATH=. python scripts/bench_solov2.py [--size 512] [--batch 2] [--iters 3]

Inference is the forward pass plus the whole post-processing (points NMS, top 500, dynamic masks, Matrix NMS,
top 100 at input size); the train step is forward, targets, loss, backward and an SGD update on random ground
truth. Matrix NMS runs on 500 masks at 1/4 of the input size (the pre-NMS masks of one image) against the
greedy same-label hard mask NMS of scripts/bench_nms.py in torch.
"""
import argparse
import os
import sys
import time

import torch  # before TensorFlow-importing modules (see tests/conftest.py)

import jax  # pylint: disable=wrong-import-order
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_nms  # pylint: disable=g-import-not-at-top,wrong-import-position
from bench_util import best_seconds  # pylint: disable=g-import-not-at-top,wrong-import-position

from experiments import solov2_r50_fpn_1x_coco  # pylint: disable=g-import-not-at-top,wrong-import-position
from segjax.models import solov2  # pylint: disable=g-import-not-at-top,wrong-import-position


def _random_batch(rng, batch, size, max_instances=20, num_classes=80):
  """Images and ellipse instances of random size and place (all valid), with their tight boxes."""
  yy, xx = np.mgrid[:size, :size]
  masks = np.zeros((batch, max_instances, size, size), np.uint8)
  boxes = np.zeros((batch, max_instances, 4), np.float32)
  for b in range(batch):
    for i in range(max_instances):
      cy, cx = rng.uniform(0, size, 2)
      ry, rx = np.exp(rng.uniform(np.log(4), np.log(size / 3), 2))
      masks[b, i] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
      ys, xs = np.nonzero(masks[b, i])
      boxes[b, i] = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
  return {"image": rng.uniform(size=(batch, size, size, 3)).astype(np.float32), "boxes": boxes, "masks": masks,
          "classes": rng.integers(1, num_classes + 1, (batch, max_instances)).astype(np.int32),
          "instance_valid": np.ones((batch, max_instances), bool),
          "is_crowd": np.zeros((batch, max_instances), bool)}


def bench_solov2(size, batch, iters):
  config = solov2_r50_fpn_1x_coco.get_config().model
  config.norm = "batch"  # trained from scratch here; the COCO config freezes converted BN statistics
  module = solov2.build(config, ml_collections.ConfigDict({"num_thing_classes": 80}))
  data = _random_batch(np.random.default_rng(0), batch, size)
  variables = module.init(jax.random.key(0), data["image"][:1])
  print(f"parameters: {sum(x.size for x in jax.tree.leaves(variables['params'])) / 1e6:.2f} M")

  infer = jax.jit(lambda v, x: solov2.predict(module.apply(v, x), config))
  start = time.perf_counter()
  infer = infer.lower(variables, data["image"]).compile()
  infer_compile = time.perf_counter() - start
  optimizer = optax.sgd(0.01, momentum=0.9)

  def step(params, batch_stats, opt_state, batch_data):
    def loss_fn(params):
      outputs, updates = module.apply({"params": params, "batch_stats": batch_stats}, batch_data["image"],
                                      train=True, mutable=["batch_stats"])
      return solov2.loss(outputs, batch_data, config)[0], updates
    (value, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    deltas, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, deltas), updates["batch_stats"], opt_state, value

  params, batch_stats = variables["params"], variables["batch_stats"]
  opt_state = optimizer.init(params)
  start = time.perf_counter()
  train = jax.jit(step).lower(params, batch_stats, opt_state, data).compile()
  train_compile = time.perf_counter() - start

  infer_s = best_seconds(lambda: jax.block_until_ready(infer(variables, data["image"])), iters)
  train_s = best_seconds(lambda: jax.block_until_ready(train(params, batch_stats, opt_state, data)), iters)
  print(f"SOLOv2 R50-FPN {size}x{size}, batch {batch}, best of {iters}, s per image:")
  print(f"  inference (with post-processing) {infer_s / batch:.3f}   train step {train_s / batch:.3f}")
  print(f"  XLA compile: inference {infer_compile:.1f} s, train step {train_compile:.1f} s")


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--size", type=int, default=512)
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--iters", type=int, default=3)
  args = parser.parse_args()
  if args.size % 32:
    parser.error("--size must be a multiple of 32")
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}, torch {torch.__version__} "
        f"with {torch.get_num_threads()} threads")
  bench_solov2(args.size, args.batch, args.iters)
  m = bench_nms.bench_matrix_nms(num_masks=solov2.PREDICT_DEFAULTS["nms_pre"], size=args.size // solov2.MASK_STRIDE)
  print(f"Matrix NMS on {m['num_masks']} masks of {m['mask_size']}x{m['mask_size']}: segjax matrix_nms (jit) "
        f"{m['segjax_matrix_nms_ms']:.2f} ms, torch hard mask NMS {m['torch_hard_mask_nms_ms']:.2f} ms, "
        f"hard/matrix = {m['speedup']:.2f}")


if __name__ == "__main__":
  main()
