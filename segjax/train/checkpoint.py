"""Orbax checkpoints of the train state, with the model's identity stored beside it."""
import json

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


class Checkpointer:
  """Saves every `every_steps` (and on demand), keeps the last `keep`, refuses another model's checkpoints.

  `identity` (a JSON-able dict: the model config and the dataset's label space) is saved with each step and
  compared on restore, so a workdir is never silently reused by a different model.
  """

  def __init__(self, directory, identity: dict, *, every_steps: int, keep: int):
    self.identity = _flatten(json.loads(json.dumps(identity)))
    self.every_steps = every_steps
    self._manager = ocp.CheckpointManager(
        directory, item_names=("state", "identity"),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

  def restore(self, state):
    """Returns (state, step) from the latest checkpoint, or (state, 0) where there is none."""
    step = self._manager.latest_step()
    if step is None:
      return state, 0
    saved = self._manager.restore(step, args=ocp.args.Composite(identity=ocp.args.JsonRestore()))["identity"]
    if saved != self.identity:
      differences = sorted(k for k in set(saved) | set(self.identity) if saved.get(k) != self.identity.get(k))
      raise CheckpointMismatchError(
          f"{self._manager.directory} holds a checkpoint (step {step}) of another model: "
          + "; ".join(f"{k}: saved {saved.get(k)!r}, config {self.identity.get(k)!r}" for k in differences)
          + ". Use another --workdir, or delete the old checkpoints.")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    restored = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
    logging.info("Restored step %d from %s", step, self._manager.directory)
    return restored["state"], step

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
