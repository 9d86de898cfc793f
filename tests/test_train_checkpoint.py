"""The checkpoint's identity: another model's checkpoint is refused, naming the field; a field that one side lacks
stands for its default, so a checkpoint saved before a model gained an option is still that model's."""
import jax.numpy as jnp
import pytest

from segjax.train.checkpoint import Checkpointer, CheckpointMismatchError

SAVED = {"model": {"name": "tiny", "width": 8}}
DEFAULTS = {"model": {"name": "tiny", "width": 16, "new_option": False}}


@pytest.fixture(name="directory")
def _directory(tmp_path):
  checkpointer = Checkpointer(tmp_path / "checkpoints", SAVED)
  checkpointer.maybe_save(1, {"params": {"w": jnp.ones(2)}}, force=True)
  checkpointer.wait()
  checkpointer.close()
  return tmp_path / "checkpoints"


def test_a_field_the_checkpoint_lacks_is_its_default(directory):
  config = {"model": {"name": "tiny", "width": 8, "new_option": False}}
  Checkpointer(directory, config, defaults=DEFAULTS).check_identity(1)
  Checkpointer(directory, {"model": {"name": "tiny", "width": 8}}, defaults=DEFAULTS).check_identity(1)


def test_another_value_of_the_new_field_is_another_model(directory):
  config = {"model": {"name": "tiny", "width": 8, "new_option": True}}
  with pytest.raises(CheckpointMismatchError, match=r"model.new_option: saved False, config True"):
    Checkpointer(directory, config, defaults=DEFAULTS).check_identity(1)


def test_without_defaults_a_missing_field_differs(directory):
  config = {"model": {"name": "tiny", "width": 8, "new_option": False}}
  with pytest.raises(CheckpointMismatchError, match=r"model.new_option: saved None, config False"):
    Checkpointer(directory, config).check_identity(1)


def test_a_field_the_config_leaves_out_is_its_default_too(directory):
  # The checkpoint says width 8; a config without width means the default, 16: another model.
  with pytest.raises(CheckpointMismatchError, match=r"model.width: saved 8, config 16"):
    Checkpointer(directory, {"model": {"name": "tiny"}}, defaults=DEFAULTS).check_identity(1)
