"""Orbax checkpoints of the train state, with the model's identity stored beside it."""
import json
import os

import jax
import orbax.checkpoint as ocp
from absl import logging


class CheckpointMismatchError(ValueError):
  """The workdir holds a checkpoint of another model."""


def _flatten(tree, prefix=""):
  """{"model": {"width": 8}} -> {"model.width": 8}, so a mismatch names the field."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def _ignored(key, ignore):
  return any(key == prefix or key.startswith(prefix + ".") for prefix in ignore)


class Checkpointer:
  """Saves every `every_steps` (and on demand), keeps the last `keep`, refuses another model's checkpoints.

  `identity` (a JSON-able dict: the model config and the dataset's label space) is saved with each step and
  compared on restore, so a workdir is never silently reused by a different model (identity None: not compared, to
  read a workdir whose config.json is the config). Fields named in `ignore`
  (dotted, e.g. "model.score_threshold", or a prefix such as "model.crf") may differ: the model's inference-only
  keys, which change no variable. `defaults` (a dict shaped as identity: the model's default config) stands in
  for a field that the saved identity or the config lacks, so that a checkpoint saved before a model gained an
  option (whose default keeps the earlier behaviour) is still that model's.
  """

  def __init__(self, directory, identity: dict, *, every_steps: int = 1, keep: int = 1, ignore=(), create=True,
               defaults: dict = None):
    self.identity = None if identity is None else _flatten(json.loads(json.dumps(identity)))
    self.defaults = _flatten(json.loads(json.dumps(defaults or {})))
    self.ignore = tuple(ignore)
    self.every_steps = every_steps
    self._manager = ocp.CheckpointManager(
        directory, item_names=("state", "identity"),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=create))

  def latest_step(self):
    return self._manager.latest_step()

  def check_identity(self, step: int):
    """Raises CheckpointMismatchError, naming the fields, where checkpoint `step` is of another model."""
    saved = self._manager.restore(step, args=ocp.args.Composite(identity=ocp.args.JsonRestore()))["identity"]
    saved, current = {**self.defaults, **saved}, {**self.defaults, **self.identity}
    differences = sorted(k for k in set(saved) | set(current)
                         if saved.get(k) != current.get(k) and not _ignored(k, self.ignore))
    if differences:
      raise CheckpointMismatchError(
          f"{self._manager.directory} holds a checkpoint (step {step}) of another model: "
          + "; ".join(f"{k}: saved {saved.get(k)!r}, config {current.get(k)!r}" for k in differences)
          + ". Use another --workdir, or delete the old checkpoints.")

  def restore(self, state):
    """Returns (state, step) from the latest checkpoint, or (state, 0) where there is none."""
    step = self._manager.latest_step()
    if step is None:
      return state, 0
    self.check_identity(step)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    restored = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
    logging.info("Restored step %d from %s", step, self._manager.directory)
    return restored["state"], step

  def restore_variables(self, step=None, shardings=None):
    """(the model variables {"params", "batch_stats"} of checkpoint `step` (default the latest), step), without the
    optimizer state; each array placed by `shardings` (a tree of those variables' shardings), else on the first
    device. The model's identity is checked first (where there is one)."""
    if step is None and self._manager.latest_step() is None:
      raise FileNotFoundError(f"{self._manager.directory}: no checkpoint")
    step = self._manager.latest_step() if step is None else step
    if step not in self._manager.all_steps():
      raise FileNotFoundError(f"{self._manager.directory}: no checkpoint of step {step}; saved steps "
                              f"{sorted(self._manager.all_steps())}")
    if self.identity is not None:
      self.check_identity(step)
    metadata = ocp.StandardCheckpointer().metadata(os.path.join(self._manager.directory, str(step), "state"))
    tree = metadata.item_metadata
    abstract = {c: jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), tree[c])
                for c in ("params", "batch_stats") if tree.get(c)}
    if shardings is None:
      device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
      shardings = jax.tree.map(lambda _: device, abstract)
    shardings = {c: shardings[c] for c in abstract}
    restore_args = jax.tree.map(lambda s: ocp.ArrayRestoreArgs(sharding=s), shardings)
    restored = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        item=abstract, restore_args=restore_args, partial_restore=True)))
    logging.info("Restored the variables of step %d from %s", step, self._manager.directory)
    return dict(restored["state"]), step

  def maybe_save(self, step: int, state, *, force: bool = False):
    if force or step % self.every_steps == 0:
      if step == self._manager.latest_step():
        return
      self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                       identity=ocp.args.JsonSave(self.identity)), force=True)

  def wait(self):
    self._manager.wait_until_finished()

  def close(self):
    self._manager.close()
