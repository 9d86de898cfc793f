"""The main job: train, evaluate, checkpoint, write metrics and pictures."""
import json
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from segjax import visualize
from segjax.data import pipeline
from segjax.evaluation.instance import InstanceEvaluator
from segjax.evaluation.panoptic_evaluator import PanopticEvaluator
from segjax.evaluation.semantic import SemanticEvaluator
from segjax.evaluation.voc import VOCEvaluator
from segjax.models import get_model
from segjax.train import mesh as mesh_lib
from segjax.train.checkpoint import Checkpointer
from segjax.train import pretrained
from segjax.train.optim import learning_rate_schedule, make_optimizer
from segjax.train.state import TrainState
from segjax.train.steps import make_eval_step, make_train_step
from segjax.train.writers import MetricWriter, Progress


class _Preemption:
  """Turns SIGTERM into a flag that the loop checks between steps (save, then exit cleanly)."""

  def __init__(self):
    self.requested = False
    self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning("SIGTERM received: saving a checkpoint at the end of this step")
    self.requested = True

  def should_stop(self, step: int, log_every_steps: int) -> bool:
    """True once any process got SIGTERM. Processes agree at log steps, so all save the same step."""
    if jax.process_count() == 1:
      return self.requested
    if step % log_every_steps:
      return False
    return bool(multihost_utils.process_allgather(np.array(self.requested)).any())

  def restore(self):
    signal.signal(signal.SIGTERM, self._previous)


def local_rows(array) -> np.ndarray:
  """The rows of a batch-sharded global array that live on this process, in order."""
  shards = sorted(array.addressable_shards, key=lambda s: s.index[0].start or 0)
  rows, seen = [], set()
  for shard in shards:
    start = shard.index[0].start or 0
    if start not in seen:
      seen.add(start)
      rows.append(np.asarray(shard.data))
  return np.concatenate(rows)


def _initial_state(module, optimizer, config, mesh):
  """The initial state, placed replicated or FSDP-sharded per `config.fsdp`; returns (state, shardings)."""
  height, width = config.dataset.image_size
  images = jnp.zeros((1, height, width, 3), jnp.float32)

  def init():
    return TrainState.create(module.init(jax.random.key(config.seed), images, train=False), optimizer)

  shardings = mesh_lib.state_shardings(jax.eval_shape(init), mesh, config.fsdp)
  return jax.jit(init, out_shardings=shardings)(), shardings


_PICTURE_KEYS = {"semantic": ("labels",), "instance": ("masks", "scores", "valid"), "panoptic": ("panoptic",),
                 "detection": ("boxes", "scores", "labels", "valid")}


def make_evaluator(task, info, workdir):
  if task == "semantic":
    return SemanticEvaluator(info.num_semantic_classes)
  if task == "instance":
    return InstanceEvaluator(info, workdir)
  if task == "panoptic":
    return PanopticEvaluator(info, workdir)
  if task == "detection":
    return VOCEvaluator(info, workdir)
  raise ValueError(f"model TASK {task!r} has no evaluator; expected 'semantic', 'instance', 'panoptic' or "
                   "'detection'")


def save_pictures(task, path, local_batch, predictions, count):
  """input | ground truth | prediction for the first `count` images of a batch."""
  batch = {k: v[:count] for k, v in local_batch.items()}
  predictions = {k: v[:count] for k, v in predictions.items()}
  if task == "semantic":
    visualize.save_semantic_pictures(path, batch["image"], batch["semantic"], predictions["labels"])
  elif task == "detection":
    visualize.save_detection_pictures(path, batch["image"], batch["boxes"], batch["classes"], batch["instance_valid"],
                                      predictions["boxes"], predictions["labels"], predictions["scores"],
                                      predictions["valid"])
  elif task == "panoptic":
    visualize.save_panoptic_pictures(path, batch["image"], batch["semantic"], batch["masks"], batch["instance_valid"],
                                     predictions["panoptic"])
  else:
    visualize.save_instance_pictures(path, batch["image"], batch["masks"], batch["instance_valid"],
                                     predictions["masks"], predictions["scores"], predictions["valid"])


def evaluate(eval_step, variables, config, evaluator, mesh, keys, task, picture_path=None):
  """One pass over the eval split; returns the evaluator's metrics and writes pictures of the first batch."""
  evaluator.reset()
  for index, local_batch in enumerate(pipeline.make_eval_iterator(
      config, process_index=jax.process_index(), process_count=jax.process_count())):
    inputs = {k: v for k, v in local_batch.items() if k in keys}
    predictions, stats = eval_step(variables, mesh_lib.global_batch(inputs, mesh))
    picture = bool(index == 0 and picture_path)
    wanted = set(evaluator.PREDICTION_KEYS) | (set(_PICTURE_KEYS[task]) if picture else set())
    local_predictions = {k: local_rows(predictions[k]) for k in wanted}
    evaluator.update(jax.device_get(stats), local_predictions, local_batch)
    if picture:
      save_pictures(task, picture_path, local_batch, local_predictions, config.num_pictures)
  return evaluator.result()


def train_and_evaluate(config, workdir: str, devices=None) -> dict:
  """Runs the job described by `config` in `workdir` on `devices` (default all); returns the last eval metrics."""
  primary = jax.process_index() == 0
  if jax.process_count() > 1:  # One process writes and builds the data set; the others then read it.
    if primary:
      pipeline.prepare(config)
    multihost_utils.sync_global_devices("segjax: data prepared")
  info = pipeline.dataset_info(config)
  model_lib = get_model(config.model.name)
  module = model_lib.build(config.model, info)
  mesh = mesh_lib.make_mesh(devices)
  mesh_lib.check_batch_size(config.batch_size, mesh)
  optimizer = make_optimizer(config)
  schedule = learning_rate_schedule(config)

  identity = {"model": config.model.to_dict(), "num_semantic_classes": info.num_semantic_classes}
  checkpointer = Checkpointer(os.path.join(os.path.abspath(workdir), "checkpoints"), identity,
                              every_steps=config.checkpoint_every_steps, keep=config.keep_checkpoints)
  state, shardings = _initial_state(module, optimizer, config, mesh)
  state, start_step = checkpointer.restore(state)
  if start_step == 0 and config.get("init_from"):
    variables = pretrained.merge_pretrained(state.variables, pretrained.load_variables(config.init_from))
    state = jax.device_put(state.replace(params=variables["params"],
                                         batch_stats=variables.get("batch_stats", {})), shardings)
  if primary:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))

  writer = MetricWriter(workdir, primary=primary, resume_step=start_step)
  progress = Progress(config.total_steps, start_step, primary=primary)
  train_step = make_train_step(module, model_lib, config.model, optimizer, schedule, mesh, shardings)
  evaluator = make_evaluator(model_lib.TASK, info, workdir)
  eval_step = make_eval_step(module, model_lib, evaluator, mesh, shardings.variables, config.model)
  train_iter = pipeline.make_train_iterator(config, start_step=start_step, process_index=jax.process_index(),
                                            process_count=jax.process_count())
  keys = set(model_lib.BATCH_KEYS)
  base_key = jax.random.key(config.seed)
  preemption = _Preemption()
  pending, eval_metrics = [], {}
  try:
    for step in range(start_step + 1, config.total_steps + 1):
      local_batch = {k: v for k, v in next(train_iter).items() if k in keys}
      state, metrics = train_step(state, mesh_lib.global_batch(local_batch, mesh),
                                  jax.random.fold_in(base_key, step))
      pending.append(metrics)
      if step % config.log_every_steps == 0 or step == config.total_steps:
        means = jax.tree.map(lambda *x: np.mean(x), *jax.device_get(pending))
        pending = []
        means["steps_per_second"] = progress.update(step, means["loss"])
        writer.write(step, "train", means)
      if step % config.eval_every_steps == 0 or step == config.total_steps:
        pictures = (os.path.join(workdir, "pictures", f"eval_step{step:06d}.png")
                    if primary and config.num_pictures else None)  # num_pictures = 0: no pictures
        eval_metrics = evaluate(eval_step, state.variables, config, evaluator, mesh,
                                keys | {"valid_image"}, model_lib.TASK, pictures)
        writer.write(step, "eval", eval_metrics)
        if primary:
          logging.info("eval at step %d: %s", step, json.dumps(eval_metrics))
      stop = preemption.should_stop(step, config.log_every_steps)
      checkpointer.maybe_save(step, state, force=stop or step == config.total_steps)
      if stop:
        logging.warning("Saved step %d after SIGTERM; exiting", step)
        break
  finally:
    checkpointer.wait()
    checkpointer.close()
    preemption.restore()
    progress.close()
    writer.close()
  return eval_metrics
