"""Model speed against torchvision on this machine, in the same run: inference and training step time per image,
and the XLA compile time.

  PYTHONPATH=. python scripts/bench_models.py [--size 512] [--batch 2] [--iters 3]

Rows: DeepLab v3 ResNet-50 (torchvision deeplabv3_resnet50 layout: output stride 8, aux head) against
torchvision's deeplabv3_resnet50, and Mask R-CNN R50-FPN against torchvision's maskrcnn_resnet50_fpn (frozen BN
in both, torchvision's training and test settings, the same weights); both on the CPU, float32, SGD steps.
Mask R-CNN: the random model returns 100 detections per image in both (printed), so both run the mask head and the
paste on them; in training its positive RoIs are the --instances ground-truth boxes per image, the RoIs its mask
head trains on (segjax's on the chunks of 8 slots per image that hold them).
Memory: XLA's buffers for segjax's training step, its state donated as the training loop donates it (arguments:
parameters, frozen BatchNorm statistics, momentum and batch; + outputs not written into the donated buffers +
temporaries); for torch, the same things: the growth of the process's peak RSS (reset before the step) over its RSS
before its first training step, in which it allocates its gradients and momentum buffers, plus the bytes of what it
holds before the step (parameters, FrozenBatchNorm buffers, the batch). Compile: wall and CPU seconds, the CPU
seconds steadier on a shared machine; cold, then warm: loaded from JAX's persistent compilation cache (a temporary
folder of this run), as segjax.main's next run of the same program loads it (segjax/compilation_cache.py).
"""
import argparse
import ctypes
import tempfile

import torch  # before TensorFlow-importing modules (see tests/conftest.py)
import torchvision
import torchvision.models.segmentation as tv_segmentation

import jax  # pylint: disable=wrong-import-order
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from bench_util import best_seconds, compiled_cold_and_warm, xla_memory_mb  # scripts/, on sys.path
from segjax import compilation_cache
from segjax.models import deeplab, mask_rcnn
from segjax.ops import platform
from segjax.weights import torchvision as tv_weights


def bench_deeplab_v3(size, batch, iters, instances, num_classes=21):
  del instances  # semantic segmentation
  torch.manual_seed(0)
  model = tv_segmentation.deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=num_classes,
                                             aux_loss=True)
  config, variables = tv_weights.convert("deeplabv3_resnet50", {k: v.numpy() for k, v in model.state_dict().items()})
  module = deeplab.build(config, ml_collections.ConfigDict({"num_semantic_classes": num_classes}))
  rng = np.random.default_rng(0)
  images = rng.uniform(size=(batch, size, size, 3)).astype(np.float32)
  labels = rng.integers(0, num_classes, size=(batch, size, size)).astype(np.int32)
  x_torch, y_torch = torch.from_numpy(images.transpose(0, 3, 1, 2).copy()), torch.from_numpy(labels).long()

  infer = jax.jit(lambda v, x: module.apply(v, x, train=False)["logits"])
  infer, *infer_compile = compiled_cold_and_warm(lambda: infer.lower(variables, images).compile())
  optimizer = optax.sgd(0.01, momentum=0.9)

  def step(params, batch_stats, opt_state, x, y):
    def loss_fn(params):
      outputs, updates = module.apply({"params": params, "batch_stats": batch_stats}, x, train=True,
                                      mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)})
      return deeplab.loss(outputs, {"semantic": y}, config)[0], updates
    (value, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    deltas, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, deltas), updates["batch_stats"], opt_state, value

  _, train_step, *train_compile = _compile_train_step(step, variables, optimizer, images, labels)

  ours_infer = best_seconds(lambda: infer(variables, images).block_until_ready(), iters)
  ours_train = best_seconds(train_step, iters)

  model.eval()
  with torch.no_grad():
    torch_infer = best_seconds(lambda: model(x_torch), iters)
  model.train()
  torch_optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

  def torch_step():
    outputs = model(x_torch)
    loss = (torch.nn.functional.cross_entropy(outputs["out"], y_torch, ignore_index=255)
            + 0.5 * torch.nn.functional.cross_entropy(outputs["aux"], y_torch, ignore_index=255))
    torch_optimizer.zero_grad()
    loss.backward()
    torch_optimizer.step()

  torch_train = best_seconds(torch_step, iters)
  _report(f"DeepLab v3 R50 {size}x{size}, batch {batch}, best of {iters}", batch, (ours_infer, torch_infer),
          (ours_train, torch_train), tuple(zip(infer_compile, train_compile)))


def _compile_train_step(step, variables, optimizer, *batch):
  """`step(params, batch_stats, opt_state, *batch) -> (params, batch_stats, opt_state, loss)` compiled as segjax's
  loop compiles its step (segjax/train/steps.py): the state donated, so that its update is written into its own
  buffers, as torch's optimizer updates its parameters in place. Returns (compiled, a function running one step on
  the state the previous one returned, cold (wall, CPU) and warm (wall, CPU) compile seconds)."""
  params = jax.tree.map(jnp.copy, variables["params"])  # donated: `variables` stays valid for inference
  state = [params, jax.tree.map(jnp.copy, variables["batch_stats"]), optimizer.init(params)]
  train, *seconds = compiled_cold_and_warm(
      lambda: jax.jit(step, donate_argnums=(0, 1, 2)).lower(*state, *batch).compile())

  def run():
    *state[:], loss = train(*state, *batch)  # the next step reads this step's state
    jax.block_until_ready(loss)

  return train, run, *seconds


def _report(title, batch, inference, train_step, compile_seconds):
  """Prints (segjax, torchvision) seconds per batch as seconds per image, their ratio, and the time to trace, lower
  and compile each program, cold and from the persistent cache ((wall, CPU) seconds; torch has no compile step)."""
  print(f"{title} (s per image):")
  for name, (ours, reference) in (("inference ", inference), ("train step", train_step)):
    print(f"  {name} segjax {ours / batch:.3f}  torchvision {reference / batch:.3f}  ratio {reference / ours:.2f}x")
  for name, (infer, train) in (("cold", compile_seconds[0]), ("warm (persistent cache)", compile_seconds[1])):
    print(f"  XLA compile {name} (trace + lower + compile): inference {infer[0]:.1f} s (CPU {infer[1]:.1f} s), "
          f"train step {train[0]:.1f} s (CPU {train[1]:.1f} s)")


def _status_mb(field):
  """A field of /proc/self/status (VmRSS, VmHWM) in MiB."""
  with open("/proc/self/status") as status:
    return next(int(line.split()[1]) for line in status if line.startswith(field + ":")) / 1024


def _torch_peak_mb(fn):
  """Growth of the process's peak RSS over its RSS before `fn`, with freed heap memory returned to the system (else
  `fn` reuses what an earlier row freed, unseen) and the peak reset (Linux clear_refs 5) first."""
  ctypes.CDLL("libc.so.6").malloc_trim(0)
  with open("/proc/self/clear_refs", "w") as clear_refs:
    clear_refs.write("5")
  before = _status_mb("VmRSS")
  fn()
  return _status_mb("VmHWM") - before


def _instances(batch, size, count=4, seed=0):
  """`count` random rectangles per image: boxes [B, count, 4] and masks [B, count, size, size]."""
  rng = np.random.default_rng(seed)
  xy = rng.uniform(0, size * 0.6, (batch, count, 2))
  wh = rng.uniform(size * 0.1, size * 0.4, (batch, count, 2))
  boxes = np.concatenate([xy, xy + wh], -1).astype(np.float32)
  masks = np.zeros((batch, count, size, size), np.uint8)
  for b, i in np.ndindex(batch, count):
    x1, y1, x2, y2 = boxes[b, i].astype(int)
    masks[b, i, y1:y2, x1:x2] = 1
  return boxes, masks


def bench_mask_rcnn(size, batch, iters, instances):
  torch.manual_seed(0)
  body = torchvision.models.resnet50(norm_layer=torchvision.ops.FrozenBatchNorm2d)
  backbone = torchvision.models.detection.backbone_utils._resnet_fpn_extractor(body, 5)  # pylint: disable=protected-access
  model = torchvision.models.detection.MaskRCNN(backbone, num_classes=91, min_size=size, max_size=size)
  state = {k: v.numpy() for k, v in model.state_dict().items()}
  config, variables = tv_weights.convert("maskrcnn_resnet50_fpn", state)
  module = mask_rcnn.build(config, None)
  rng = np.random.default_rng(0)
  images = rng.uniform(size=(batch, size, size, 3)).astype(np.float32)
  boxes, masks = _instances(batch, size, instances)
  count = boxes.shape[1]
  targets = {"boxes": boxes, "classes": np.ones((batch, count), np.int32), "masks": masks,
             "is_crowd": np.zeros((batch, count), bool), "instance_valid": np.ones((batch, count), bool)}
  x_torch = [torch.from_numpy(im.transpose(2, 0, 1).copy()) for im in images]
  t_torch = [{"boxes": torch.from_numpy(boxes[b]), "labels": torch.ones(count, dtype=torch.int64),
              "masks": torch.from_numpy(masks[b])} for b in range(batch)]

  model.train()
  # Learning rate 0: every timed step, and the inference after them, sees the initial weights, as segjax's steps do
  # (their updates are not fed back). At 0.01 this random model's losses reach 1e11 at the second step and NaN at the
  # third, and the NaN weights left torchvision's inference without a single proposal.
  torch_optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0, momentum=0.9)

  def torch_step():
    loss = sum(model(x_torch, t_torch).values())
    torch_optimizer.zero_grad()
    loss.backward()
    torch_optimizer.step()

  torch_memory = _torch_peak_mb(torch_step)  # the first step: later ones reuse memory torch's allocator kept
  torch_train = best_seconds(torch_step, iters)
  optimizer = optax.sgd(0.0, momentum=0.9)  # learning rate 0, as torch's above

  def step(params, batch_stats, opt_state, x, t):
    def loss_fn(params):
      outputs = module.apply({"params": params, "batch_stats": batch_stats}, x, train=True, targets=t,
                             rngs={"sampling": jax.random.key(0)})
      return mask_rcnn.loss(outputs, t, config)[0]
    value, grads = jax.value_and_grad(loss_fn)(params)
    deltas, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, deltas), batch_stats, opt_state, value

  train, train_step, *train_compile = _compile_train_step(step, variables, optimizer, images, targets)
  ours_train = best_seconds(train_step, iters)

  infer = jax.jit(lambda v, x: mask_rcnn.predict(module.apply(v, x, train=False), config))
  infer, *infer_compile = compiled_cold_and_warm(lambda: infer.lower(variables, images).compile())
  model.eval()
  with torch.no_grad():
    counts = [len(d["boxes"]) for d in model(x_torch)]
    torch_infer = best_seconds(lambda: model(x_torch), iters)
  ours_counts = np.asarray(infer(variables, images)["valid"]).sum(1).tolist()
  ours_infer = best_seconds(lambda: jax.block_until_ready(infer(variables, images)), iters)
  _report(f"Mask R-CNN R50-FPN {size}x{size}, batch {batch}, best of {iters}", batch, (ours_infer, torch_infer),
          (ours_train, torch_train), tuple(zip(infer_compile, train_compile)))
  print(f"  detections per image: torchvision {counts}, segjax {ours_counts}; training on {instances} ground-truth "
        "instances per image")
  memory = xla_memory_mb(train)
  # What torch holds before the step that XLA counts among its arguments: the parameters and FrozenBatchNorm
  # buffers (segjax's params and batch_stats) and the batch. The momentum buffers are not there yet: torch allocates
  # them in its first step, within its growth, as XLA holds segjax's momentum among its arguments.
  tensors = [*model.state_dict().values(), *x_torch, *(v for t in t_torch for v in t.values())]
  resident = sum(t.numel() * t.element_size() for t in tensors) / 2**20
  torch_total = torch_memory + resident
  print(f"  train step peak memory: segjax (XLA) {memory['peak']:.0f} MiB (arguments {memory['arguments']:.0f}, "
        f"outputs {memory['outputs']:.0f} of which {memory['aliased']:.0f} written into the donated arguments, "
        f"temporaries {memory['temporaries']:.0f}), torchvision {torch_total:.0f} MiB (peak RSS growth "
        f"{torch_memory:.0f} over its resident parameters, buffers and batch, {resident:.0f}): "
        f"{memory['peak'] / torch_total:.2f}x")


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--size", type=int, default=512)
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--iters", type=int, default=3)
  parser.add_argument("--models", default="deeplab_v3,mask_rcnn", help="comma-separated rows to run")
  parser.add_argument("--instances", type=int, default=4,
                      help="Mask R-CNN ground-truth boxes per image: with random weights these are the positive "
                           "RoIs, and so the RoIs the mask head trains on")
  parser.add_argument("--kernels", default="auto", choices=platform.KERNELS,
                      help="segjax.ops.platform's implementations (config.kernels); auto: those of the devices' "
                           "platform, resolved before tracing as segjax.main's steps resolve it")
  args = parser.parse_args()
  if args.batch < 2:
    parser.error("--batch must be at least 2: the image-pooling BatchNorm sees one value per channel per image")
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}, torch {torch.__version__} "
        f"with {torch.get_num_threads()} threads")
  rows = {"deeplab_v3": bench_deeplab_v3, "mask_rcnn": bench_mask_rcnn}
  with tempfile.TemporaryDirectory(prefix="bench_models_cache_") as cache:
    compilation_cache.configure(cache)  # before the first compilation
    with platform.kernels(platform.for_devices(args.kernels, jax.devices())):
      for name in args.models.split(","):
        rows[name](args.size, args.batch, args.iters, args.instances)


if __name__ == "__main__":
  main()
