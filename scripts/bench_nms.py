"""Benchmarks segjax NMS against torchvision, and Matrix NMS against hard mask NMS, in the same run.

  python scripts/bench_nms.py

Prints median wall times (ms) over several runs after a warm-up (jit compile excluded) and the ratio
reference / segjax (> 1: segjax is faster). `bench_nms` and `bench_matrix_nms` return the figures.
"""
import time

import jax
import numpy as np
import torch
import torchvision

from segjax.ops import mask_nms as matrix_nms_lib
from segjax.ops import box_nms as nms_lib


def median_ms(fn, repeats):
  fn()  # warm-up: compiles under jit
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return 1e3 * float(np.median(times))


def proposal_boxes(num_boxes, seed=0, num_objects=50, height=800, width=1216):
  """RPN-like proposals: boxes jittered around a few dozen objects of a detection-sized image, so that
  they overlap heavily; uniform scores."""
  rng = np.random.default_rng(seed)
  centre = rng.uniform((0, 0), (width, height), (num_objects, 2))
  size = np.exp(rng.uniform(np.log(16), np.log(400), num_objects))
  size = np.stack([size, size * np.exp(rng.uniform(-0.7, 0.7, num_objects))], axis=1)
  k = rng.integers(0, num_objects, num_boxes)
  c = centre[k] + rng.normal(0, 0.15, (num_boxes, 2)) * size[k]
  s = size[k] * np.exp(rng.normal(0, 0.2, (num_boxes, 2)))
  boxes = np.clip(np.concatenate([c - s / 2, c + s / 2], axis=1), 0, [width, height, width, height])
  return boxes.astype(np.float32), rng.uniform(0, 1, num_boxes).astype(np.float32)


def bench_nms(num_boxes=5000, iou_threshold=0.7, max_output_sizes=(1000, 5000), repeats=9, seed=0):
  """segjax nms (jit) vs torchvision.ops.nms on the same boxes; checks the kept indices are equal."""
  boxes, scores = proposal_boxes(num_boxes, seed)
  t_boxes, t_scores = torch.tensor(boxes), torch.tensor(scores)
  ref = torchvision.ops.nms(t_boxes, t_scores, iou_threshold).numpy()
  torchvision_ms = median_ms(lambda: torchvision.ops.nms(t_boxes, t_scores, iou_threshold), repeats)
  result = {"num_boxes": num_boxes, "iou_threshold": iou_threshold, "num_kept": len(ref),
            "torchvision_ms": torchvision_ms, "torch_threads": torch.get_num_threads(), "segjax": {}}
  for max_output_size in max_output_sizes:
    fn = jax.jit(lambda b, s, m=max_output_size: nms_lib.nms(b, s, iou_threshold, m))
    kept = np.asarray(fn(boxes, scores))
    n = min(max_output_size, len(ref))
    if not (np.array_equal(kept[:n], ref[:n]) and (kept[n:] == -1).all()):
      raise AssertionError(f"segjax nms differs from torchvision (max_output_size={max_output_size})")
    ms = median_ms(lambda: fn(boxes, scores).block_until_ready(), repeats)
    result["segjax"][max_output_size] = {"ms": ms, "speedup": torchvision_ms / ms}
  return result


def blob_masks(num_masks, size, seed=0, num_objects=20, num_classes=4):
  """Binary masks jittered around a few elliptical objects, labels, and descending scores."""
  rng = np.random.default_rng(seed)
  centre = rng.uniform(8, size - 8, (num_objects, 2))
  radius = rng.uniform(4, size / 4, (num_objects, 2))
  k = rng.integers(0, num_objects, num_masks)
  c = centre[k] + rng.normal(0, 2, (num_masks, 2))
  r = radius[k] * np.exp(rng.normal(0, 0.15, (num_masks, 2)))
  yy, xx = np.mgrid[:size, :size]
  masks = (((xx[None] - c[:, None, None, 0]) / r[:, None, None, 0]) ** 2
           + ((yy[None] - c[:, None, None, 1]) / r[:, None, None, 1]) ** 2) <= 1
  labels = (k % num_classes).astype(np.int32)
  scores = np.sort(rng.uniform(0.05, 1, num_masks))[::-1].astype(np.float32)
  return masks, labels, scores


def hard_mask_nms_torch(masks, labels, scores, iou_threshold=0.5):
  """Greedy same-label mask NMS on sorted masks: IoU matrix by one matmul, then the sequential pass."""
  flat = masks.reshape(len(masks), -1).float()
  inter = flat @ flat.T
  area = flat.sum(1)
  iou = inter / (area[:, None] + area[None, :] - inter).clamp(min=1)
  suppresses = ((iou > iou_threshold) & (labels[:, None] == labels[None, :])).numpy()
  keep = np.ones(len(masks), bool)
  for i in range(len(masks)):
    if keep[i]:
      keep[i + 1:] &= ~suppresses[i, i + 1:]
  return scores * torch.from_numpy(keep)


def bench_matrix_nms(num_masks=500, size=64, repeats=9, seed=0):
  """segjax matrix_nms (jit) vs hard mask NMS in torch on the same masks."""
  masks, labels, scores = blob_masks(num_masks, size, seed)
  fn = jax.jit(matrix_nms_lib.matrix_nms)
  t_masks, t_labels, t_scores = map(torch.tensor, (masks, labels, scores))
  matrix_ms = median_ms(lambda: fn(masks, labels, scores).block_until_ready(), repeats)
  hard_ms = median_ms(lambda: hard_mask_nms_torch(t_masks, t_labels, t_scores), repeats)
  return {"num_masks": num_masks, "mask_size": size, "segjax_matrix_nms_ms": matrix_ms,
          "torch_hard_mask_nms_ms": hard_ms, "speedup": hard_ms / matrix_ms}


def main():
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}, torch {torch.__version__}, "
        f"torchvision {torchvision.__version__}")
  r = bench_nms()
  print(f"nms: {r['num_boxes']} boxes, IoU > {r['iou_threshold']}, {r['num_kept']} kept; "
        f"torchvision.ops.nms {r['torchvision_ms']:.2f} ms ({r['torch_threads']} threads)")
  for max_output_size, v in r["segjax"].items():
    print(f"  segjax nms (jit), max_output_size={max_output_size}: {v['ms']:.2f} ms, "
          f"torchvision/segjax = {v['speedup']:.2f}")
  m = bench_matrix_nms()
  print(f"matrix nms: {m['num_masks']} masks of {m['mask_size']}x{m['mask_size']}: segjax matrix_nms "
        f"{m['segjax_matrix_nms_ms']:.2f} ms, torch hard mask NMS {m['torch_hard_mask_nms_ms']:.2f} ms, "
        f"hard/matrix = {m['speedup']:.2f}")


if __name__ == "__main__":
  main()
