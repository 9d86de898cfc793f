"""Dense CRF mean field (10 iterations, 21 labels) with segjax's permutohedral lattice against pydensecrf2, in the
same run, on a natural-looking synthetic scene (smooth colour regions with sharp edges, noisy unaries).

  PYTHONPATH=. python scripts/bench_crf.py [--repeats 3] [--cases 250x1,250x4,500x1,500x4,1000x1,1000x2]

Each case runs in its own subprocess, which loads the scene from a file, so that its peak memory can be read: "rss" is
the process's maximum resident set at the end (resource.getrusage ru_maxrss) less its resident set just before the
first call (/proc/self/statm), so for segjax it includes XLA compilation; "xla" is XLA's own buffer estimate for the
compiled call (arguments + outputs + temporaries, Compiled.memory_analysis()). Times are per image, the best of
--repeats calls after a warm-up (compile excluded; segjax's compile time is printed apart); segjax's include building
both lattices, as pydensecrf's include its addPairwise* calls. pydensecrf runs the images of a batch one after the
other, segjax in one call with a leading batch axis; "vs 1" is segjax's time per image in the batch over its time on
the first image alone (each timed in the same subprocess). "agree" is the fraction of pixels where both give the
same label; "points" the bilateral and spatial lattice sizes of image 0 and the capacity used (the default).
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

from bench_util import best_seconds, xla_peak_mb  # scripts/, on sys.path as the script's folder

CASES = ((250, 1), (250, 4), (500, 1), (500, 4), (1000, 1), (1000, 2))
PARAMS = dict(theta_alpha=80.0, theta_beta=13.0, theta_gamma=3.0, w_bilateral=10.0, w_spatial=3.0)


def scene(size, batch, num_labels=21, seed=0, num_regions=12):
  """Images [B, S, S, 3] uint8 (Voronoi regions, each a colour ramp, edges sharp, pixel noise 4/255) and unary
  logits [B, S, S, L] (the region's label + 1.5, Gaussian noise of 1 on every label)."""
  rng = np.random.default_rng(seed)
  ys, xs = np.mgrid[:size, :size] / size
  images, logits = [], []
  for _ in range(batch):
    centres = rng.uniform(0, 1, (num_regions, 2))
    region = np.argmin((ys[..., None] - centres[:, 0]) ** 2 + (xs[..., None] - centres[:, 1]) ** 2, -1)
    slope = rng.normal(0, 40, (num_regions, 2, 3))[region]
    image = (rng.uniform(30, 225, (num_regions, 3))[region] + slope[..., 0, :] * ys[..., None]
             + slope[..., 1, :] * xs[..., None] + rng.normal(0, 4, (size, size, 3)))
    images.append(np.clip(image, 0, 255).astype(np.uint8))
    labels = rng.integers(0, num_labels, num_regions)[region]
    logits.append(1.5 * np.eye(num_labels)[labels] + rng.normal(0, 1.0, (size, size, num_labels)))
  logits = np.stack(logits).astype(np.float32)
  return np.stack(images), logits - np.log(np.exp(logits).sum(-1, keepdims=True))  # log-probabilities


def _resident_kb():
  with open("/proc/self/statm", encoding="ascii") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def _peak_growth_mb(resident_kb):
  return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - resident_kb) / 1024


def run_pydensecrf(folder, repeats):
  import pydensecrf.densecrf as dcrf  # pylint: disable=import-outside-toplevel
  with np.load(os.path.join(folder, "scene.npz")) as data:
    images, log_probabilities = data["images"], data["log_probabilities"]
  size = images.shape[1]
  num_labels = log_probabilities.shape[-1]
  unaries = [np.ascontiguousarray(-lp.reshape(-1, num_labels).T) for lp in log_probabilities]

  def infer():
    out = []
    for image, unary in zip(images, unaries):
      crf = dcrf.DenseCRF2D(size, size, num_labels)
      crf.setUnaryEnergy(unary)
      crf.addPairwiseGaussian(sxy=PARAMS["theta_gamma"], compat=PARAMS["w_spatial"])
      crf.addPairwiseBilateral(sxy=PARAMS["theta_alpha"], srgb=PARAMS["theta_beta"], rgbim=image,
                               compat=PARAMS["w_bilateral"])
      out.append(np.array(crf.inference(10)).reshape(num_labels, size, size).argmax(0))
    return np.stack(out)

  resident = _resident_kb()
  labels = infer()
  seconds = best_seconds(infer, repeats)
  np.save(os.path.join(folder, "pydensecrf.npy"), labels)
  return {"s": seconds / len(images), "rss_mb": _peak_growth_mb(resident)}


def run_segjax(folder, repeats):
  import jax  # pylint: disable=import-outside-toplevel
  from segjax.ops.crf import dense, permutohedral  # pylint: disable=import-outside-toplevel
  with np.load(os.path.join(folder, "scene.npz")) as data:
    images, log_probabilities = data["images"], data["log_probabilities"]
  fn = jax.jit(lambda u, i: dense.dense_crf(u, i, num_iterations=10, **PARAMS).argmax(-1))
  args = (jax.device_put(log_probabilities), jax.device_put(images.astype(np.float32)))
  resident = _resident_kb()
  start = time.perf_counter()
  compiled = fn.lower(*args).compile()
  compile_s = time.perf_counter() - start
  xla_mb = xla_peak_mb(compiled)
  labels = np.asarray(compiled(*args))
  seconds = best_seconds(lambda: compiled(*args).block_until_ready(), repeats)
  rss_mb = _peak_growth_mb(resident)
  single = seconds
  if len(images) > 1:
    one = fn.lower(*(a[:1] for a in args)).compile()
    one(*(a[:1] for a in args)).block_until_ready()
    single = best_seconds(lambda: one(*(a[:1] for a in args)).block_until_ready(), repeats)
  points = []
  for theta in ((PARAMS["theta_alpha"], PARAMS["theta_beta"]), (PARAMS["theta_gamma"],)):
    features = dense._features(args[1][:1], *theta)  # pylint: disable=protected-access
    capacity = permutohedral.default_capacity(*features.shape[1:])
    lattice = jax.jit(permutohedral.build_lattice, static_argnums=1)(features, capacity)
    points.append(f"{int(lattice.count[0])}/{capacity}")
  reference = np.load(os.path.join(folder, "pydensecrf.npy"))
  return {"s": seconds / len(images), "vs_single": seconds / len(images) / single, "compile_s": compile_s,
          "rss_mb": rss_mb, "xla_mb": xla_mb, "agree": float(np.mean(labels == reference)), "points": points}


def run_case(library, folder, repeats):
  """One case in a fresh interpreter: its figures as a dict."""
  out = subprocess.run([sys.executable, __file__, "--case", library, folder, "--repeats", str(repeats)], check=True,
                       capture_output=True, text=True).stdout
  return json.loads(out.strip().splitlines()[-1])


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--case", nargs=2, metavar=("LIBRARY", "FOLDER"))
  parser.add_argument("--cases", default=",".join(f"{size}x{batch}" for size, batch in CASES),
                      help="comma-separated SIZExBATCH, e.g. 500x1,250x4")
  args = parser.parse_args()
  if args.case:
    print(json.dumps((run_segjax if args.case[0] == "segjax" else run_pydensecrf)(args.case[1], args.repeats)))
    return
  print(f"{'case':>12} {'pd s/img':>8} {'sj s/img':>8} {'ratio':>6} {'vs 1':>5} {'compile s':>9} {'pd rss MB':>9} "
        f"{'sj rss MB':>9} {'sj xla MB':>9} {'agree':>6}  lattice points (bilateral, spatial)")
  for case in args.cases.split(","):
    size, batch = map(int, case.split("x"))
    folder = tempfile.mkdtemp(prefix="bench_crf_")
    images, log_probabilities = scene(size, batch)
    np.savez(os.path.join(folder, "scene.npz"), images=images, log_probabilities=log_probabilities)
    reference = run_case("pydensecrf", folder, args.repeats)
    ours = run_case("segjax", folder, args.repeats)
    print(f"{size:>4}x{size:<4}x{batch:<2} {reference['s']:8.3f} {ours['s']:8.3f} {ours['s'] / reference['s']:6.2f} "
          f"{ours['vs_single']:5.2f} {ours['compile_s']:9.1f} {reference['rss_mb']:9.0f} {ours['rss_mb']:9.0f} "
          f"{ours['xla_mb']:9.0f} {ours['agree']:6.3f}  {', '.join(ours['points'])}", flush=True)


if __name__ == "__main__":
  main()
