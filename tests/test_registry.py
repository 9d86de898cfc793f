"""Models and weight converters added from outside segjax: segjax.models.register and segjax.weights.register."""
import types

import ml_collections
import pytest

from segjax import models
from segjax import weights
import per_class_instance_model


@pytest.fixture
def restore_registries(monkeypatch):
  monkeypatch.setattr(models, "_MODELS", dict(models._MODELS))  # pylint: disable=protected-access
  monkeypatch.setattr(weights.torchvision, "CONVERTERS", dict(weights.CONVERTERS))


def test_register_a_model_module_and_a_model_path(restore_registries):  # pylint: disable=unused-argument
  models.register("my_masks", per_class_instance_model)
  assert models.get_model("my_masks") is per_class_instance_model
  models.register("my_masks_by_path", "per_class_instance_model")
  assert models.get_model("my_masks_by_path") is per_class_instance_model
  # config.model.name may also be the import path of a module that follows the contract.
  assert models.get_model("segjax.models.fcn") is models.get_model("fcn")


def test_register_refuses_a_taken_name_and_a_module_off_the_contract(restore_registries):  # pylint: disable=unused-argument
  with pytest.raises(ValueError, match="'fcn' is already registered"):
    models.register("fcn", per_class_instance_model)
  half = types.ModuleType("half_model")
  half.TASK, half.build = "semantic", lambda config, info: None
  with pytest.raises(ValueError, match="half_model lacks BATCH_KEYS, loss, predict"):
    models.register("half", half)
  with pytest.raises(ValueError, match="unknown model 'nope'"):
    models.get_model("nope")
  with pytest.raises(ValueError, match="neither a registered model nor an importable module"):
    models.get_model("my_project.nope")


def test_register_a_weight_converter(restore_registries):  # pylint: disable=unused-argument
  def convert_mine(state_dict):
    return ml_collections.ConfigDict({"name": "mine"}), {"params": {"w": state_dict["w"]}, "batch_stats": {}}

  weights.register("mine", convert_mine)
  config, variables = weights.convert("mine", {"w": 3})
  assert config.name == "mine" and variables["params"]["w"] == 3
  with pytest.raises(ValueError, match="'mine' is already registered"):
    weights.register("mine", convert_mine)
  # The decorator form, as segjax's own converters use it.
  assert weights.register("mine2")(convert_mine) is convert_mine
  assert "mine2" in weights.torchvision.CONVERTERS
