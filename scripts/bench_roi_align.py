"""Benchmark segjax roi_align against torchvision's CPU kernel, in the same process.

FPN P2-sized input by default: features 2x200x304x256 float32 (an 800x1216 image at stride 4),
512 RoIs, 7x7 output, sampling_ratio 2, aligned=True. Times the forward, and forward+backward
(the value and the gradient w.r.t. features of sum(out * cotangent)), median of several runs
after a warm-up, and a memory-bandwidth floor: the bytes either must touch divided by the
bandwidth of a large NumPy copy on this machine.

  PYTHONPATH=. python scripts/bench_roi_align.py [--rois 512] [--repeats 7]
"""
import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from segjax.ops import roi


def _median_time(fn, repeats):
  fn()  # warm-up (and compile)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def _copy_bandwidth(nbytes, repeats):
  """Bytes read + written per second by np.copyto between two warm buffers (STREAM copy)."""
  src = np.ones(nbytes // 4, np.float32)
  dst = np.zeros_like(src)
  return 2 * src.nbytes / _median_time(lambda: np.copyto(dst, src), repeats)


def _fpn_rois(rng, num, image_hw, batch):
  """Boxes centred anywhere in the image, sides log-uniform in 16..512 px, clipped."""
  h, w = image_hw
  centre = rng.uniform(0, 1, (num, 2)) * (w, h)
  size = np.exp(rng.uniform(np.log(16), np.log(512), (num, 2)))
  boxes = np.concatenate([centre - size / 2, centre + size / 2], 1)
  boxes = np.clip(boxes, 0, [w, h, w, h])
  return np.concatenate([rng.integers(0, batch, (num, 1)), boxes], 1).astype(np.float32)


def bench(batch=2, height=200, width=304, channels=256, num_rois=512, output_size=7,
          spatial_scale=0.25, sampling_ratio=2, aligned=True, repeats=7, seed=0):
  """Times (seconds) of segjax and torchvision roi_align, forward and forward+backward.

  Returns a dict: segjax_forward_s, segjax_forward_backward_s, torchvision_forward_s,
  torchvision_forward_backward_s, speedup_forward, speedup_forward_backward (torchvision /
  segjax), profile split of the segjax backward (taps_s, zero_fill_s), copy_bandwidth_gbs,
  floor_forward_s, floor_forward_backward_s and each time divided by its floor.
  """
  import torch  # pylint: disable=import-outside-toplevel
  import torchvision  # pylint: disable=import-outside-toplevel

  rng = np.random.default_rng(seed)
  features = rng.standard_normal((batch, height, width, channels), dtype=np.float32)
  rois = _fpn_rois(rng, num_rois, (height / spatial_scale, width / spatial_scale), batch)
  cotangent = rng.standard_normal((num_rois, output_size, output_size, channels),
                                  dtype=np.float32)
  args = (output_size, spatial_scale, sampling_ratio, aligned)
  result = {}

  # segjax under jit.
  f, r, ct = jnp.asarray(features), jnp.asarray(rois), jnp.asarray(cotangent)
  forward = jax.jit(lambda f, r: roi.roi_align(f, r, *args))
  loss = lambda f, r: jnp.vdot(roi.roi_align(f, r, *args), ct)
  forward_backward = jax.jit(jax.value_and_grad(loss))
  zero_fill = jax.jit(lambda f: jnp.zeros_like(f) + f[0, 0, 0, 0])
  taps = jax.jit(lambda r: roi._roi_align_taps(  # pylint: disable=protected-access
      *roi._split_rois(r, batch), spatial_scale, height, width, 0,  # pylint: disable=protected-access
      (output_size, output_size), sampling_ratio, aligned))
  run = lambda fn, *a: jax.block_until_ready(fn(*a))
  result["segjax_forward_s"] = _median_time(lambda: run(forward, f, r), repeats)
  result["segjax_forward_backward_s"] = _median_time(lambda: run(forward_backward, f, r), repeats)
  result["segjax_taps_s"] = _median_time(lambda: run(taps, r), repeats)
  result["segjax_zero_fill_s"] = _median_time(lambda: run(zero_fill, f), repeats)

  # torchvision, NCHW.
  f_t = torch.tensor(np.moveaxis(features, -1, 1)).requires_grad_(True)
  r_t, ct_t = torch.tensor(rois), torch.tensor(np.moveaxis(cotangent, -1, 1))

  def torch_forward():
    with torch.no_grad():
      return torchvision.ops.roi_align(f_t, r_t, *args)

  def torch_forward_backward():
    value = (torchvision.ops.roi_align(f_t, r_t, *args) * ct_t).sum()
    return value, torch.autograd.grad(value, f_t)

  result["torchvision_forward_s"] = _median_time(torch_forward, repeats)
  result["torchvision_forward_backward_s"] = _median_time(torch_forward_backward, repeats)
  value_t, (grad_t,) = torch_forward_backward()
  value, grad = forward_backward(f, r)
  result["max_abs_grad_diff"] = float(np.abs(np.moveaxis(grad_t.numpy(), 1, -1) - grad).max())
  result["max_abs_grad"] = float(np.abs(grad).max())
  result["rel_value_diff"] = abs(float(value) - value_t.item()) / abs(value_t.item())

  # Bandwidth floor: the forward reads each sampled feature row once and writes the output; the
  # backward also reads the cotangent and writes the whole feature gradient.
  index, _ = taps(r)
  row_bytes = channels * 4
  touched = np.unique(np.asarray(index)).size * row_bytes
  out_bytes = cotangent.nbytes
  bandwidth = _copy_bandwidth(features.nbytes, repeats)
  result["copy_bandwidth_gbs"] = bandwidth / 1e9
  result["floor_forward_s"] = (touched + out_bytes) / bandwidth
  result["floor_forward_backward_s"] = (touched + 2 * out_bytes + features.nbytes) / bandwidth
  for who in ("segjax", "torchvision"):
    for part in ("forward", "forward_backward"):
      result[f"{who}_{part}_over_floor"] = result[f"{who}_{part}_s"] / result[f"floor_{part}_s"]
  for part in ("forward", "forward_backward"):
    result[f"speedup_{part}"] = result[f"torchvision_{part}_s"] / result[f"segjax_{part}_s"]
  return result


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rois", type=int, default=512)
  parser.add_argument("--repeats", type=int, default=7)
  flags = parser.parse_args()
  result = bench(num_rois=flags.rois, repeats=flags.repeats)
  ms = lambda key: f"{1e3 * result[key]:8.1f} ms"
  print(f"devices: {jax.devices()}, copy bandwidth {result['copy_bandwidth_gbs']:.1f} GB/s")
  for part in ("forward", "forward_backward"):
    print(f"{part:17s} segjax {ms(f'segjax_{part}_s')} ({result[f'segjax_{part}_over_floor']:5.1f}x "
          f"floor)  torchvision {ms(f'torchvision_{part}_s')} "
          f"({result[f'torchvision_{part}_over_floor']:5.1f}x floor)  floor {ms(f'floor_{part}_s')}"
          f"  torchvision/segjax {result[f'speedup_{part}']:.2f}")
  backward = result["segjax_forward_backward_s"] - result["segjax_forward_s"]
  print(f"segjax split: taps {ms('segjax_taps_s')}, forward gathers "
        f"{1e3 * (result['segjax_forward_s'] - result['segjax_taps_s']):.1f} ms, backward "
        f"{1e3 * backward:.1f} ms of which zero-filling the gradient {ms('segjax_zero_fill_s')}")
  print(f"agreement: max |grad diff| {result['max_abs_grad_diff']:.2e} (max |grad| "
        f"{result['max_abs_grad']:.1f}), "
        f"relative value diff {result['rel_value_diff']:.2e}")


if __name__ == "__main__":
  main()
