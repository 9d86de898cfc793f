"""A CPU training step with glibc's default allocator against huge pages (GLIBC_TUNABLES=glibc.malloc.hugetlb=1,
what `make demo` exports), each in its own process, in the same run.

  PYTHONPATH=. python scripts/bench_allocator.py [--steps 10]

XLA:CPU allocates an executable's temporaries (one block, `bench_util.xla_memory_mb`) and its outputs afresh at every
call; blocks of more than 32 MiB are mapped and unmapped by glibc each time, and the kernel zeroes every 4 KiB page
they touch (a minor page fault). With huge pages malloc asks for 2 MiB pages, 512 times fewer faults. The step is
the metric-learning demo's (experiments/demo_metric_learning.py: a width-16 U-Net, 8 images of 128 x 128, the
pairwise and seediness losses). Prints per step: wall seconds (best of --steps), minor page faults and system CPU
seconds (means), and the speed-up of huge pages.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

SETTINGS = {"glibc default": None, "huge pages": "glibc.malloc.hugetlb=1"}


def _child(steps):
  import jax  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from segjax.models import metric_learning  # pylint: disable=g-import-not-at-top

  batch_size, size, instances = 8, 128, 16
  rng = np.random.default_rng(0)
  masks = np.zeros((batch_size, instances, size, size), bool)
  for b in range(batch_size):
    for k in range(6):
      y, x = rng.integers(0, size - 24, 2)
      masks[b, k, y:y + 24, x:x + 24] = True
  batch = {"image": rng.uniform(size=(batch_size, size, size, 3)).astype(np.float32), "masks": masks,
           "is_crowd": np.zeros((batch_size, instances), bool),
           "instance_valid": np.broadcast_to(np.arange(instances) < 6, (batch_size, instances)).copy()}
  config = ml_collections.ConfigDict(dict(metric_learning.LOSS_DEFAULTS))
  module = metric_learning.MetricLearningNet(embedding_dim=8, width=16)
  params = jax.jit(module.init)(jax.random.key(0), batch["image"][:1])

  @jax.jit
  def step(params, batch):
    return jax.grad(lambda p: metric_learning.loss(module.apply(p, batch["image"]), batch, config)[0])(params)

  jax.block_until_ready(step(params, batch))
  walls, before = [], resource.getrusage(resource.RUSAGE_SELF)
  for _ in range(steps):
    start = time.perf_counter()
    jax.block_until_ready(step(params, batch))
    walls.append(time.perf_counter() - start)
  after = resource.getrusage(resource.RUSAGE_SELF)
  print(json.dumps({"wall": min(walls), "faults": (after.ru_minflt - before.ru_minflt) / steps,
                    "system": (after.ru_stime - before.ru_stime) / steps}))


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    _child(args.steps)
    return
  results = {}
  for name, tunables in SETTINGS.items():
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    if tunables:
      env["GLIBC_TUNABLES"] = tunables
    out = subprocess.run([sys.executable, __file__, "--child", f"--steps={args.steps}"], env=env, check=True,
                         capture_output=True, text=True).stdout
    results[name] = json.loads(out.strip().splitlines()[-1])
    r = results[name]
    print(f"  {name:14s} wall {r['wall']:.3f} s/step  minor faults {r['faults']:9.0f}/step  "
          f"system CPU {r['system']:.3f} s/step", flush=True)
  default, huge = results["glibc default"], results["huge pages"]
  print(f"huge pages: {default['wall'] / huge['wall']:.2f}x the default's speed, "
        f"{default['faults'] / max(huge['faults'], 1):.0f}x fewer faults")


if __name__ == "__main__":
  main()
