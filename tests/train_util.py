"""Shared set-up for the training tests: a tiny synthetic data set and a tiny FCN config."""
import json
import math
import os
import re
import subprocess
import sys
import time

from segjax.config import override

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Overrides of experiments/demo.py that make a run take seconds: the same keys a user would pass on the CLI.
TINY = {
    "batch_size": 8, "total_steps": 6, "log_every_steps": 1, "eval_every_steps": 6,
    "checkpoint_every_steps": 3, "num_pictures": 2,
    "model.width": 8, "dataset.image_size": (64, 64), "dataset.num_train": 24, "dataset.num_val": 10,
}


# A run of a few steps learns only at full learning rate from the first step: demo.py's 50 warm-up steps would keep
# it at <= 8% of it. AdamW at a constant 1e-2 (from the first step) for the loop tests that must learn.
FAST_OPTIMIZER = {"optimizer.name": "adamw", "optimizer.learning_rate": 1e-2, "optimizer.schedule": "constant",
                  "optimizer.warmup_steps": 0}

# The synthetic scenes' 7 classes: at init a model's cross-entropy is about log 7 = 1.95. The best predictor that
# ignores the image gives every pixel the training split's class frequencies; their entropy is 0.76 log 7 for the
# 64 x 64 tiny split and 0.78 log 7 at 32 x 32. A cross-entropy below 0.7 log 7 = 1.36 needs the image.
CE_BELOW_IMAGE_BLIND = 0.7 * math.log(7)


def xla_flags(device_count, fast_compiles=True):
  """The test session's XLA_FLAGS (conftest.py) for a subprocess with `device_count` host devices; without
  `fast_compiles`, less conftest's two settings for shorter compiles (the subprocess compiles as users' programs do)."""
  flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", os.environ.get("XLA_FLAGS", ""))
  if not fast_compiles:
    flags = re.sub(r"--xla_(backend_optimization_level|cpu_use_fusion_emitters)=\S+", "", flags)
  return f"{flags} --xla_force_host_platform_device_count={device_count}".strip()


def tiny_config(data_root, **overrides):
  sys.path.insert(0, REPO)
  from experiments import demo  # pylint: disable=g-import-not-at-top
  return override(demo.get_config(), {**TINY, "dataset.root": str(data_root),
                                      "dataset.data_dir": str(data_root) + "_tfds", **overrides})


def cli_args(config_overrides: dict):
  """--config.key=value flags for the CLI from a dict of overrides."""
  return [f"--config.{k}={v}" for k, v in config_overrides.items()]


def run_cli(workdir, data_root, extra=(), env=None, **overrides):
  """Starts `python -m segjax.main` on demo.py with the tiny overrides; returns the Popen."""
  flags = {**TINY, "dataset.root": str(data_root), "dataset.data_dir": str(data_root) + "_tfds", **overrides}
  command = [sys.executable, "-m", "segjax.main", "--config=experiments/demo.py", f"--workdir={workdir}",
             *cli_args(flags), *extra]
  return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)


def wait_until(ready, processes, timeout, what):
  """Polls `ready()` until it is true; fails if one of `processes` (the run) ends first or `timeout` seconds pass."""
  deadline = time.time() + timeout
  while time.time() < deadline:
    if ready():
      return
    for process in processes:
      assert process.poll() is None, process.communicate()[0]
    time.sleep(0.05)
  raise TimeoutError(f"{what} not reached in {timeout} s")


def wait_for_step(workdir, step, processes, timeout=600):
  """Returns once the metrics.jsonl of `workdir` holds training step `step`. The file is rewritten whole at each row:
  a line cut short is skipped."""

  def has_step():
    try:
      with open(os.path.join(workdir, "metrics.jsonl")) as f:
        lines = f.read().splitlines()
    except FileNotFoundError:
      return False
    for line in lines:
      try:
        row = json.loads(line)
      except json.JSONDecodeError:
        continue
      if row["split"] == "train" and row["step"] >= step:
        return True
    return False

  wait_until(has_step, processes, timeout, f"{workdir}: step {step}")


def wait_for_checkpoint(workdir, step, processes, timeout=600):
  """Returns once `workdir` holds the checkpoint of `step` (orbax renames a save's directory to its step when the
  save is complete)."""
  wait_until(lambda: os.path.isdir(os.path.join(workdir, "checkpoints", str(step))), processes, timeout,
             f"{workdir}: checkpoint {step}")


def read_metrics(workdir, split="train"):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [r for r in map(json.loads, f) if r["split"] == split]


def train_through_loop(tmp_path, model, steps=4, **overrides):
  """`model` (a config.model, at width 8) trained `steps` steps on the tiny synthetic data by train_and_evaluate,
  evaluated once; returns (eval metrics, the train rows of metrics.jsonl)."""
  from segjax.train.loop import train_and_evaluate  # pylint: disable=g-import-not-at-top
  config = tiny_config(tmp_path / "data", total_steps=steps, eval_every_steps=steps, **overrides)
  config.model = model
  config.model.width = 8
  metrics = train_and_evaluate(config, str(tmp_path / "workdir"))
  return metrics, read_metrics(tmp_path / "workdir")


def fit_semantic(module, loss_fn, images, labels, steps, learning_rate=3e-3):
  """Adam on one fixed batch through one jitted step; returns (losses, number of traces, final variables)."""
  import jax  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  variables = module.init(jax.random.key(0), images[:1], train=False)
  optimizer = optax.adam(learning_rate)
  traces = []

  @jax.jit
  def step(params, batch_stats, opt_state, batch, key):
    traces.append(1)

    def objective(params):
      outputs, updates = module.apply({"params": params, "batch_stats": batch_stats}, batch["image"], train=True,
                                      mutable=["batch_stats"], rngs={"dropout": key})
      return loss_fn(outputs, batch)[0], updates

    (value, updates), grads = jax.value_and_grad(objective, has_aux=True)(params)
    deltas, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, deltas), updates["batch_stats"], opt_state, value

  params, batch_stats, opt_state = variables["params"], variables["batch_stats"], optimizer.init(variables["params"])
  losses = []
  for i in range(steps):  # a fresh batch dict (same shapes) each step, as a data pipeline gives
    batch = {"image": jax.numpy.asarray(images), "semantic": jax.numpy.asarray(labels)}
    params, batch_stats, opt_state, value = step(params, batch_stats, opt_state, batch, jax.random.key(i))
    losses.append(float(value))
  return losses, len(traces), {"params": params, "batch_stats": batch_stats}


def fit_on_batches(model_lib, config, batches, steps, seed, learning_rate=3e-3, rng_name=None):
  """Adam on `batches` in turn through one jitted step of `model_lib.loss` (a model without batch statistics; the
  batch entries segjax.models.input_keys names go to the forward pass);
  `rng_name` names the rng stream the model draws from in training (a fresh key each step). Returns (params,
  module, per-step aux as floats, {"train": number of traces})."""
  import jax  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from segjax.models import input_keys  # pylint: disable=g-import-not-at-top
  module = model_lib.build(config, None)
  params = jax.jit(module.init)(jax.random.key(seed), batches[0]["image"])["params"]
  optimizer = optax.adam(learning_rate)
  inputs = input_keys(model_lib, config)  # what the forward pass reads besides the image (UCN's depth)

  @counting_jit
  def step(params, opt_state, batch, key):
    rngs = {rng_name: key} if rng_name else {}
    (_, aux), grads = jax.value_and_grad(
        lambda p: model_lib.loss(module.apply({"params": p}, batch["image"], train=True, rngs=rngs,
                                              **{k: batch[k] for k in inputs}), batch, config),
        has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, aux

  opt_state = optimizer.init(params)
  history = []
  for i in range(steps):
    params, opt_state, aux = step(params, opt_state, batches[i % len(batches)], jax.random.key(i))
    history.append({k: float(v) for k, v in aux.items()})
  return params, module, history, {"train": step.traces}


def blocky_batch(num_classes, blocks=6, block=8, batch=2, seed=0):
  """Images whose colour tells the class of each block x block square (some rows ignored: 255)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  labels = np.kron(rng.integers(0, num_classes, size=(batch, blocks, blocks)), np.ones((block, block), np.int32))
  size = blocks * block
  images = (np.eye(3)[labels % 3] * 0.6 + rng.uniform(0, 0.4, size=(batch, size, size, 3))).astype(np.float32)
  labels[:, :4] = 255
  return images, labels


def majority_pixel_share(data_root, split="val2017"):
  """The share of labelled eval pixels in the most frequent class: the pixel accuracy of predicting that class
  everywhere, the chance level a trained model must beat."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from segjax.constants import IGNORE_LABEL  # pylint: disable=g-import-not-at-top
  folder = os.path.join(str(data_root), f"semantic_{split}")
  labels = np.concatenate([np.asarray(Image.open(os.path.join(folder, name))).ravel()
                           for name in sorted(os.listdir(folder))])
  counts = np.bincount(labels[labels != IGNORE_LABEL])
  return counts.max() / counts.sum()


def concatenated_batches(make_batch, counts, seed):
  """make_batch(n, seed=...) for each instance count n of `counts` (seeds seed, seed + 1, ...), concatenated
  along the batch: e.g. four two-image batches -> the 8 images of an 8-device step, each device its own counts."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  parts = [make_batch(n, seed=seed + i) for i, n in enumerate(counts)]
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def losses_on_one_and_eight_devices(module, model_lib, config, variables, batches, keys, learning_rate=0.01):
  """Trains from `variables` through `batches` (8 images each) with SGD (momentum 0.9) in the training loop's
  step (segjax.train.steps.make_train_step), on one device and data-parallel on the 8 forced host devices, and
  returns {1: [[metrics[k] for k in keys] per step], 8: [...]}, for tests that the sharded run equals the single one."""
  import jax  # pylint: disable=g-import-not-at-top  (this module also serves tests that run no JAX)
  import optax  # pylint: disable=g-import-not-at-top
  from segjax.train import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from segjax.train.state import TrainState  # pylint: disable=g-import-not-at-top
  from segjax.train.steps import make_train_step  # pylint: disable=g-import-not-at-top
  assert jax.device_count() == 8
  optimizer, schedule = optax.sgd(learning_rate, momentum=0.9), optax.constant_schedule(learning_rate)
  losses = {}
  for devices in (jax.devices()[:1], jax.devices()):
    mesh = mesh_lib.make_mesh(devices)
    state = jax.device_put(TrainState.create(variables, optimizer), mesh_lib.replicated(mesh))
    shardings = jax.tree.map(lambda _: mesh_lib.replicated(mesh), state)
    step = make_train_step(module, model_lib, config, optimizer, schedule, mesh, shardings)
    losses[len(devices)] = []
    for i, batch in enumerate(batches):
      state, metrics = step(state, jax.device_put(batch, mesh_lib.batch_sharding(mesh)), jax.random.key(i))
      losses[len(devices)].append([float(metrics[k]) for k in keys])
  return losses


class counting_jit:  # pylint: disable=invalid-name  (used as jax.jit is)
  """jax.jit(fn, **kwargs) whose `traces` counts the traces of fn, one per compile: the tests' "compiles once for
  every instance count" check, independent of jit's C++ dispatch cache (whose `_cache_size()` a CI worker has
  reported as 0 after calls). Use as jax.jit: `counting_jit(fn, static_argnums=...)` or `@counting_jit`."""

  def __init__(self, fn, **kwargs):
    import functools  # pylint: disable=g-import-not-at-top
    import jax  # pylint: disable=g-import-not-at-top
    self.traces = 0

    @functools.wraps(fn)
    def counted(*args, **kw):
      self.traces += 1
      return fn(*args, **kw)

    self._jitted = jax.jit(counted, **kwargs)

  def __call__(self, *args, **kwargs):
    return self._jitted(*args, **kwargs)

  def __getattr__(self, name):  # trace, lower, ...: the jitted function's
    return getattr(self._jitted, name)
