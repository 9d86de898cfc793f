"""Every registered model: declares its inference-only keys, checks its config in `build` (an unknown key or a value
of the wrong kind is an error naming it), and faster_rcnn is Mask R-CNN without the mask branch."""
import types

import jax
import jax.numpy as jnp
import ml_collections
import pytest

from segjax import models
from segjax.models import validation

INFO = types.SimpleNamespace(num_semantic_classes=4, num_thing_classes=3,
                             categories=[types.SimpleNamespace(isthing=1)] * 3 + [types.SimpleNamespace(isthing=0)] * 2)
WRAPPED = {"crf_rnn", "dense_crf"}  # their `base` is another model's config
TINY_BASE = {"name": "fcn", "depth": 18, "width": 8, "output_stride": 8, "skips": (), "dtype": "float32"}


def _config(name):
  """The model's defaults, with a base model where it wraps one."""
  config = models.get_model(name).model_config()
  config.name = name
  if name == "faster_rcnn":  # the module is mask_rcnn's, whose defaults have the mask branch
    config.mask = False
  if name in WRAPPED:
    config.base = TINY_BASE
  return config


@pytest.mark.parametrize("name", sorted(models._MODELS))  # pylint: disable=protected-access
def test_defaults_build_and_declare_inference_keys(name):
  model_lib = models.get_model(name)
  config = _config(name)
  model_lib.build(config, INFO)
  assert isinstance(model_lib.INFERENCE_KEYS, frozenset)
  top_level = {k.split(".")[0] for k in model_lib.INFERENCE_KEYS}
  assert top_level <= set(config), top_level - set(config)


@pytest.mark.parametrize("name", sorted(models._MODELS))  # pylint: disable=protected-access
def test_unknown_key_is_an_error_naming_it(name):
  config = _config(name)
  config.widht = 8
  with pytest.raises(ValueError, match=r"unknown key\(s\) \['config.model.widht'\]"):
    models.get_model(name).build(config, INFO)


@pytest.mark.parametrize("name", sorted(models._MODELS))  # pylint: disable=protected-access
def test_value_of_the_wrong_kind_is_an_error_naming_it(name):
  config = _config(name)
  key = next(k for k in ("width", "crf", "grid_size", "num_steps") if k in config)
  config = ml_collections.ConfigDict({**config.to_dict(), key: "wide"})  # as from a dict or config.json
  with pytest.raises(ValueError, match=rf"config.model.{key}: must be .*; got 'wide'"):
    models.get_model(name).build(config, INFO)


def test_sub_configs_and_notebook_configs_are_checked():
  """A notebook's plain ConfigDict, without the defaults it leaves out, is checked the same way; sub-configs by key."""
  config = ml_collections.ConfigDict({"name": "dense_crf", "base": {**TINY_BASE, "depht": 18},
                                      "crf": {"num_iterations": 5}})
  with pytest.raises(ValueError, match=r"\['config.model.depht'\]"):
    models.get_model("dense_crf").build(config, INFO)
  config = ml_collections.ConfigDict({"name": "dense_crf", "base": TINY_BASE, "crf": {"num_iterations": 2.5}})
  with pytest.raises(ValueError, match=r"config.model.crf.num_iterations: must be an integer .*; got 2.5"):
    models.get_model("dense_crf").build(config, INFO)
  config.crf = {"num_iteration": 5}
  with pytest.raises(ValueError, match=r"\['config.model.crf.num_iteration'\]"):
    models.get_model("dense_crf").build(config, INFO)
  with pytest.raises(ValueError, match=r"config.model.aux: must be True or False .*; got 1"):
    models.get_model("deeplab_v3").build(ml_collections.ConfigDict({"name": "deeplab_v3", "aux": 1}), INFO)


def test_check_accepts_lists_for_tuples_ints_for_floats_and_anything_for_none():
  defaults = {"sizes": (1, 2), "weight": 0.5, "optional": None, "on": True}
  merged = validation.check({"sizes": [3], "weight": 1, "optional": "x"}, defaults)
  assert merged == {"sizes": [3], "weight": 1, "optional": "x", "on": True}


def test_faster_rcnn_has_no_mask_branch():
  config = models.get_model("faster_rcnn").model_config(name="faster_rcnn")
  config.update({"depth": 18, "width": 8, "fpn_channels": 16, "representation_size": 32,
                 "rpn_pre_nms_top_n_test": 50, "rpn_post_nms_top_n_test": 20, "detections_per_image": 5,
                 "detection_candidates": 64, "rpn_pre_nms_top_n_train": 50, "rpn_post_nms_top_n_train": 20,
                 "roi_batch_size_per_image": 16, "rpn_batch_size_per_image": 32})
  model_lib = models.get_model("faster_rcnn")
  module = model_lib.build(ml_collections.ConfigDict({"name": "faster_rcnn", **config.to_dict()}), INFO)
  images = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)  # traced only: shapes and structure, no arithmetic
  variables = jax.eval_shape(module.init, jax.random.key(0), images)
  assert "mask_head" not in variables["params"] and "box_head" in variables["params"]
  targets = {"boxes": jnp.asarray([[[8.0, 8.0, 40.0, 40.0]]]), "classes": jnp.ones((1, 1), jnp.int32),
             "masks": jnp.ones((1, 1, 64, 64), jnp.uint8), "is_crowd": jnp.zeros((1, 1), bool),
             "instance_valid": jnp.ones((1, 1), bool)}

  def train_metrics(variables, images):
    outputs = module.apply(variables, images, train=True, targets=targets,
                           rngs={"sampling": jax.random.key(1), "dropout": jax.random.key(2)})
    return model_lib.loss(outputs, targets, config)[1]

  metrics = jax.eval_shape(train_metrics, variables, images)
  assert "loss_mask" not in metrics and "loss_classifier" in metrics
  predictions = jax.eval_shape(lambda v, x: model_lib.predict(module.apply(v, x), config), variables, images)
  assert predictions["boxes"].shape == (1, 5, 4)
  with pytest.raises(ValueError, match="config.model.mask: faster_rcnn has no mask branch"):
    model_lib.build(ml_collections.ConfigDict({"name": "faster_rcnn", "mask": True}), INFO)


def test_config_defaults_follow_the_keys_that_choose_them():
  """`config_defaults` is what `build` fills in: Mask R-CNN's C4 defaults for a C4 config, the wrapped model's under
  "base", and a model's newest option at its default."""
  c4 = models.config_defaults(ml_collections.ConfigDict({"name": "mask_rcnn", "backbone": "c4"}))
  assert c4 == models.get_model("mask_rcnn").model_config("c4").to_dict()
  assert c4 != models.get_model("mask_rcnn").model_config("fpn").to_dict()
  wrapped = models.config_defaults(ml_collections.ConfigDict({"name": "crf_rnn", "base": TINY_BASE}))
  assert wrapped["base"]["output_stride"] == models.get_model("fcn").model_config().output_stride
  assert models.config_defaults(ml_collections.ConfigDict({"name": "recurrent_attention"}))["disable_overwrite"] is False
