"""Models by name. Each model module defines:

  TASK: "semantic" (more tasks come with the instance and panoptic models);
  BATCH_KEYS: the batch entries the model's forward pass and loss read (only these go to the devices);
  build(model_config, info) -> flax.linen.Module, called as module(images, train=...) -> outputs dict;
  loss(outputs, batch, model_config) -> (scalar loss, dict of scalar metrics);
  predict(outputs) -> dict of predictions (for "semantic": "labels" [B,H,W]).
"""
import importlib
import types

_MODELS = {
    "fcn": "segjax.models.fcn",
    "unet": "segjax.models.unet",
}


def get_model(name: str) -> types.ModuleType:
  if name not in _MODELS:
    raise ValueError(f"config.model.name: unknown model {name!r}; known: {sorted(_MODELS)}")
  return importlib.import_module(_MODELS[name])
