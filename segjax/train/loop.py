"""The main job: train, evaluate, checkpoint, write metrics and pictures."""
import json
import signal

from absl import logging
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np

from segjax import paths, visualize
from segjax.data import compact
from segjax.data import pipeline
from segjax.evaluation import tta
from segjax.evaluation.instance import InstanceEvaluator
from segjax.evaluation.panoptic_evaluator import PanopticEvaluator
from segjax.evaluation.semantic import SemanticEvaluator
from segjax.evaluation.voc import VOCEvaluator
from segjax.models import config_defaults, get_model, inference_keys
from segjax.ops import platform
from segjax.train import mesh as mesh_lib
from segjax.train import multihost
from segjax.train import pretrained
from segjax.train.checkpoint import Checkpointer
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


def _state_init(module, optimizer, config):
  """A function of no arguments that makes the initial train state."""
  height, width = config.dataset.image_size
  images = jnp.zeros((1, height, width, 3), jnp.float32)
  return lambda: TrainState.create(module.init(jax.random.key(config.seed), images, train=False), optimizer)


def _initial_state(module, optimizer, config, mesh):
  """The initial state, placed replicated or FSDP-sharded per `config.fsdp`; returns (state, shardings)."""
  init = _state_init(module, optimizer, config)
  shardings = mesh_lib.state_shardings(jax.eval_shape(init), mesh, config.fsdp)
  return jax.jit(init, out_shardings=shardings)(), shardings


def _evaluator(model_lib, info, workdir, config):
  return make_evaluator(model_lib.TASK, info, workdir, getattr(model_lib, "CLASS_AGNOSTIC", False),
                        getattr(model_lib, "THINGS_PANOPTIC", False), config.eval.get("boundary_ap", True))


_PICTURE_KEYS = {"semantic": ("labels",), "instance": ("masks", "scores", "valid"), "panoptic": ("panoptic",),
                 "detection": ("boxes", "scores", "labels", "valid")}


def make_evaluator(task, info, workdir, class_agnostic=False, things_panoptic=False, boundary_ap=True):
  """The evaluator of a model TASK; a class-agnostic instance model (CLASS_AGNOSTIC) is also scored by the unseen-
  object overlap F-measure (segjax.evaluation.overlap), an instance model with a things-only panoptic map
  (THINGS_PANOPTIC) by PQ over the things where the eval split has a panoptic JSON; `boundary_ap`
  (config.eval.boundary_ap): instance and panoptic models' detections also get Boundary AP."""
  if task == "semantic":
    return SemanticEvaluator(info.num_semantic_classes)
  if task == "instance" and things_panoptic and info.eval_panoptic_json is not None:
    return PanopticEvaluator(info, workdir, things_only=True, boundary_ap=boundary_ap)
  if task == "instance":
    return InstanceEvaluator(info, workdir, overlap_metrics=class_agnostic, boundary_ap=boundary_ap)
  if task == "panoptic":
    return PanopticEvaluator(info, workdir, boundary_ap=boundary_ap)
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


def host_keys(keys):
  """The compact host batch's keys that carry the model batch's `keys` (compact.COMPACT_KEYS)."""
  return {compact.COMPACT_KEYS.get(k, k) for k in keys}


def evaluate(eval_step, variables, config, evaluator, mesh, keys, task, picture_path=None):
  """One pass over the eval split; returns the evaluator's metrics and writes pictures of the first batch."""
  evaluator.reset()
  width = config.dataset.image_size[1]
  inputs = host_keys(keys)
  for index, local_batch in enumerate(pipeline.make_eval_iterator(
      config, process_index=jax.process_index(), process_count=jax.process_count())):
    predictions, stats = eval_step(variables, mesh_lib.global_batch(
        {k: v for k, v in local_batch.items() if k in inputs}, mesh))
    picture = bool(index == 0 and picture_path)
    wanted = set(evaluator.PREDICTION_KEYS) | (set(_PICTURE_KEYS[task]) if picture else set())
    local_predictions = {k: local_rows(predictions[k]) for k in wanted if k in predictions}
    if "masks" in local_predictions:
      local_predictions["masks"] = compact.unpack_masks(local_predictions["masks"], width)
    evaluator.update(jax.device_get(stats), local_predictions, local_batch)
    if picture:
      first = {k: v[:config.num_pictures] for k, v in local_batch.items()}
      save_pictures(task, picture_path, compact.expand(first), local_predictions, config.num_pictures)
  return evaluator.result()


def eval_options(config, task):
  """(scales, flip) of `config.eval` (multi-scale and flipped inputs; semantic models only)."""
  options = config.get("eval") or {}
  return tta.check_options(options.get("scales", (1.0,)), options.get("flip", False), task)


def _prepare_data(config):
  """The data set's info; with several processes, process 0 writes and builds the data set and the others wait."""
  if jax.process_count() > 1:
    if jax.process_index() == 0:
      pipeline.prepare(config)
    multihost.barrier("data_prepared")
  return pipeline.dataset_info(config)


def _checkpointer(config, info, workdir, create=True):
  """The workdir's checkpoints; the model's inference-only keys may differ from those it was trained with."""
  identity = {"model": config.model.to_dict(), "num_semantic_classes": info.num_semantic_classes}
  ignore = [f"model.{k}" for k in inference_keys(config.model)]
  defaults = {"model": config_defaults(config.model)}
  return Checkpointer(paths.resolve(workdir) / "checkpoints", identity, ignore=ignore, create=create,
                      every_steps=config.checkpoint_every_steps, keep=config.keep_checkpoints, defaults=defaults)


def _init_from(state, shardings, config):
  """`state` with the weights of config.init_from (a converted checkpoint) written into its variables."""
  variables = pretrained.merge_pretrained(state.variables, pretrained.load_variables(config.init_from))
  return jax.device_put(state.replace(params=variables["params"], batch_stats=variables.get("batch_stats", {})),
                        shardings)


def _last_eval(workdir, step):
  """The eval metrics metrics.jsonl holds for `step`, or None."""
  path = paths.resolve(workdir) / "metrics.jsonl"
  if not path.exists():
    return None
  rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
  rows = [r for r in rows if r["split"] == "eval" and r["step"] == step]
  return {k: v for k, v in rows[-1].items() if k not in ("step", "split")} if rows else None


def train_and_evaluate(config, workdir, devices=None) -> dict:
  """Runs the job described by `config` in `workdir` (a local path or a gs:// URL) on `devices` (default all);
  returns the last eval metrics (those of total_steps where the workdir had already reached it)."""
  with _kernels(config, devices):  # read when the steps are traced, inside the block
    return _train_and_evaluate(config, paths.resolve(workdir), devices)


def _kernels(config, devices):
  """The block in which the steps are traced: config.kernels, "auto" resolved by the devices' platform."""
  return platform.kernels(platform.for_devices(config.get("kernels", "auto"), devices or jax.devices()))


def _job(config, devices):
  """What training and evaluation both start from: (data set info, model module, its module, eval scales and flip,
  the device mesh)."""
  info = _prepare_data(config)
  model_lib = get_model(config.model.name)
  module = model_lib.build(config.model, info)
  scales, flip = eval_options(config, model_lib.TASK)
  mesh = mesh_lib.make_mesh(devices)
  mesh_lib.check_batch_size(config.batch_size, mesh)
  return info, model_lib, module, scales, flip, mesh


def _train_and_evaluate(config, workdir, devices):
  primary = jax.process_index() == 0
  info, model_lib, module, scales, flip, mesh = _job(config, devices)
  optimizer = make_optimizer(config)
  schedule = learning_rate_schedule(config)

  checkpointer = _checkpointer(config, info, workdir)
  state, shardings = _initial_state(module, optimizer, config, mesh)
  state, start_step = checkpointer.restore(state)
  if primary and start_step:
    print(f"Restored step {start_step} from {workdir / 'checkpoints'}", flush=True)
  if start_step == 0 and config.get("init_from"):
    state = _init_from(state, shardings, config)
  if primary:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))

  writer = MetricWriter(workdir, primary=primary, resume_step=start_step)
  progress = Progress(config.total_steps, start_step, primary=primary)
  train_step = multihost.CompiledOnce(
      make_train_step(module, model_lib, config.model, optimizer, schedule, mesh, shardings), "train_step")
  evaluator = _evaluator(model_lib, info, workdir, config)
  eval_step = multihost.CompiledOnce(make_eval_step(module, model_lib, config.model, evaluator, mesh,
                                                    shardings.variables, scales, flip), "eval_step")
  keys = set(model_lib.BATCH_KEYS)
  train_iter = pipeline.make_train_iterator(config, start_step=start_step, process_index=jax.process_index(),
                                            process_count=jax.process_count(), keys=keys)
  train_batches = mesh_lib.prefetch_to_device(
      ({k: v for k, v in b.items() if k in host_keys(keys)} for b in train_iter), mesh)
  base_key = jax.random.key(config.seed)
  preemption = _Preemption()
  pending, eval_metrics = [], {}
  try:
    if start_step >= config.total_steps:  # finished before: its final evaluation, from metrics.jsonl if it is there
      eval_metrics = (_last_eval(workdir, start_step) if primary else None) or {}
      if not multihost_utils.broadcast_one_to_all(np.asarray(bool(eval_metrics))):
        eval_metrics = evaluate(eval_step, state.variables, config, evaluator, mesh, keys | {"valid_image"},
                                model_lib.TASK)
        writer.write(start_step, "eval", eval_metrics)
    for step in range(start_step + 1, config.total_steps + 1):
      state, metrics = train_step(state, next(train_batches), jax.random.fold_in(base_key, step))
      pending.append(metrics)
      if step % config.log_every_steps == 0 or step == config.total_steps:
        means = jax.tree.map(lambda *x: np.mean(x), *jax.device_get(pending))
        pending = []
        means["steps_per_second"] = progress.update(step, means["loss"])
        writer.write(step, "train", means)
      if step % config.eval_every_steps == 0 or step == config.total_steps:
        pictures = (workdir / "pictures" / f"eval_step{step:06d}.png"
                    if primary and config.num_pictures else None)  # num_pictures = 0: no pictures
        eval_metrics = evaluate(eval_step, state.variables, config, evaluator, mesh,
                                keys | {"valid_image"}, model_lib.TASK, pictures)
        writer.write(step, "eval", eval_metrics)
        if primary:
          print(f"eval at step {step}: " + "  ".join(f"{k} {v:.4f}" for k, v in eval_metrics.items()), flush=True)
      stop = preemption.should_stop(step, config.log_every_steps)
      checkpointer.maybe_save(step, state, force=stop or step == config.total_steps)
      if stop:
        logging.warning("Saved step %d after SIGTERM; exiting", step)
        break
  finally:
    checkpointer.wait()
    checkpointer.close()
    preemption.restore()
    writer.close()
  return eval_metrics


def evaluate_checkpoint(config, workdir, step=None, devices=None) -> dict:
  """Evaluates checkpoint `step` (default the latest) of `workdir`, or, where it has none, the weights of
  config.init_from, on dataset.eval_split with `config.eval`'s options, without training. Appends the metrics to
  workdir/metrics.jsonl (split "eval", the checkpoint's step), draws pictures/evaluate_stepN.png and returns the
  metrics (on process 0; {} elsewhere)."""
  with _kernels(config, devices):
    return _evaluate_checkpoint(config, paths.resolve(workdir), step, devices)


def _evaluate_checkpoint(config, workdir, step, devices):
  primary = jax.process_index() == 0
  info, model_lib, module, scales, flip, mesh = _job(config, devices)
  checkpointer = _checkpointer(config, info, workdir, create=False)
  try:
    if checkpointer.latest_step() is not None or step is not None:
      abstract = jax.eval_shape(_state_init(module, make_optimizer(config), config))
      shardings = mesh_lib.state_shardings(abstract, mesh, config.fsdp).variables
      variables, step = checkpointer.restore_variables(step, shardings)
    elif config.get("init_from"):
      state, state_shardings = _initial_state(module, make_optimizer(config), config, mesh)
      variables, shardings, step = _init_from(state, state_shardings, config).variables, state_shardings.variables, 0
    else:
      raise FileNotFoundError(f"--mode=evaluate: {workdir} has no checkpoints and config.init_from is not set: "
                              "nothing to evaluate")
  finally:
    checkpointer.close()
  evaluator = _evaluator(model_lib, info, workdir, config)
  eval_step = multihost.CompiledOnce(make_eval_step(module, model_lib, config.model, evaluator, mesh, shardings,
                                                    scales, flip), "eval_step")
  pictures = (workdir / "pictures" / f"evaluate_step{step:06d}.png"
              if primary and config.num_pictures else None)
  metrics = evaluate(eval_step, variables, config, evaluator, mesh, set(model_lib.BATCH_KEYS) | {"valid_image"},
                     model_lib.TASK, pictures)
  writer = MetricWriter(workdir, primary=primary, resume_step=None)
  writer.write(step, "eval", metrics)
  writer.close()
  if primary:
    logging.info("eval of step %d: %s", step, json.dumps(metrics))
  return metrics
