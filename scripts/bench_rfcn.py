"""R-FCN against Faster R-CNN on the same trunk and the same number of RoIs: inference seconds per image and their
ratio (Dai et al. 2016, Table 3: 0.17 s against 0.42 s with ResNet-101 and 300 RoIs on a K40 GPU).

  PYTHONPATH=. python scripts/bench_rfcn.py [--depth 101] [--width 64] [--size 608] [--rois 300] [--batch 1]

Faster R-CNN is the C4 model of segjax/models/mask_rcnn.py (name faster_rcnn, backbone c4): the RPN on conv4, then
conv5 run on every RoI (RoIAlign 14x14, res5 of stride 2, the box predictor) as the paper's baseline; R-FCN is
segjax/models/rfcn.py, whose conv5 runs once on the image. Both: random weights, 21 classes, RPN proposals after NMS
`--rois` at test (the RoIs scored), the same anchors, score threshold 0 so that every RoI's scores enter the
post-processing. The time is the best of `--iters` calls of the compiled forward and post-processing, per image.
"""
import argparse

import jax
import ml_collections
import numpy as np

from bench_util import best_seconds  # scripts/, on sys.path as the script's folder
from segjax.models import mask_rcnn, rfcn


def seconds_per_image(model_lib, config, images, iters):
  module = model_lib.build(config, ml_collections.ConfigDict({"num_thing_classes": 20}))
  variables = jax.jit(lambda x: module.init(jax.random.key(0), x))(images[:1])
  infer = jax.jit(lambda v, x: model_lib.predict(module.apply(v, x), config)).lower(variables, images).compile()
  jax.block_until_ready(infer(variables, images))
  return best_seconds(lambda: jax.block_until_ready(infer(variables, images)), iters) / images.shape[0]


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--depth", type=int, default=101)
  parser.add_argument("--width", type=int, default=64)
  parser.add_argument("--size", type=int, default=608, help="square input side, a multiple of 32")
  parser.add_argument("--rois", type=int, default=300)
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--iters", type=int, default=3)
  args = parser.parse_args()
  shared = {"depth": args.depth, "width": args.width, "norm": "frozen", "anchor_sizes": ((128, 256, 512),),
            "rpn_pre_nms_top_n_test": 6000, "rpn_post_nms_top_n_test": args.rois, "score_threshold": 0.0}
  faster = mask_rcnn.model_config("c4", "faster_rcnn")
  faster.update(shared)
  ours = rfcn.model_config()
  ours.update(shared)
  images = np.random.default_rng(0).uniform(size=(args.batch, args.size, args.size, 3)).astype(np.float32)
  print(f"{jax.devices()[0].platform}, ResNet-{args.depth} width {args.width}, {args.size}x{args.size}, "
        f"{args.rois} RoIs, batch {args.batch}")
  times = {}
  for name, model_lib, config in (("faster_rcnn_c4", mask_rcnn, faster), ("rfcn", rfcn, ours)):
    times[name] = seconds_per_image(model_lib, config, images, args.iters)
    print(f"{name:15s} {times[name]:8.3f} s/image", flush=True)
  print(f"Faster R-CNN / R-FCN: {times['faster_rcnn_c4'] / times['rfcn']:.2f}x")


if __name__ == "__main__":
  main()
