"""Deformable R-FCN (Dai et al. 2017): with its zero-initialised offsets (res5's offset convs and the PS RoI pooling
offset maps), the deformable R-FCN computes the plain R-FCN with the same pooler and the same parameters; moved
offsets change its scores; the paper config builds."""
import importlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from segjax.models import rfcn

_OFFSETS = ("conv2_offset", "rfcn_cls_offset_t", "rfcn_bbox_offset_t")


def _config(deformable):
  config = rfcn.model_config()
  config.update({"depth": 50, "width": 8, "norm": "frozen", "head_channels": 16, "ps_size": 3, "ps_pooler": "sampled",
                 "sampling_ratio": 4, "anchor_sizes": ((16, 32, 64),), "rpn_pre_nms_top_n_train": 100,
                 "rpn_post_nms_top_n_train": 30, "rpn_pre_nms_top_n_test": 100, "rpn_post_nms_top_n_test": 30,
                 "ohem_rois": 8, "detections_per_image": 10,
                 "deformable_psroi": deformable, "deformable_stages": (5,) if deformable else ()})
  return config


def _module(config):
  return rfcn.build(config, ml_collections.ConfigDict({"num_thing_classes": 2}))


def _without_offsets(tree):
  return {k: _without_offsets(v) if isinstance(v, dict) else v for k, v in tree.items() if k not in _OFFSETS}


def _offsets(tree):
  for k, v in tree.items():
    if k in _OFFSETS:
      yield from jax.tree.leaves(v)
    elif isinstance(v, dict):
      yield from _offsets(v)


def _apply(module, variables, images, targets):
  train, _ = module.apply(variables, images, train=True, targets=targets, rngs={"sampling": jax.random.key(3)},
                          mutable=["batch_stats"])
  return train, module.apply(variables, images, train=False)


@pytest.mark.slow  # compiles the training and inference programs of two ResNet-50 models
def test_zero_offsets_compute_the_plain_rfcn():
  """ResNet-50 (three deformable res5 blocks) on 2 images of 64 x 64 with 2 boxes: the training outputs (RoIs,
  class logits, box deltas) and the detections of the deformable model equal those of the plain one, given the same
  parameters without the offset layers; with the class offset conv's bias set to 1 (every bin moved by gamma = 0.1
  of the RoI), the class logits change."""
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.uniform(size=(2, 64, 64, 3)), jnp.float32)
  targets = {"boxes": jnp.asarray([[[4, 4, 40, 36], [20, 16, 60, 60]]] * 2, jnp.float32),
             "classes": jnp.asarray([[1, 2]] * 2, jnp.int32), "instance_valid": jnp.ones((2, 2), bool)}
  deformable, plain = _module(_config(True)), _module(_config(False))
  variables = jax.jit(deformable.init)(jax.random.key(0), images)
  assert all(not np.any(np.asarray(x)) for x in _offsets(variables["params"]))
  plain_variables = dict(variables, params=_without_offsets(variables["params"]))
  assert jax.tree.structure(plain_variables) == jax.tree.structure(jax.eval_shape(plain.init, jax.random.key(0), images))
  ours_train, ours = jax.jit(lambda v: _apply(deformable, v, images, targets))(variables)
  ref_train, ref = jax.jit(lambda v: _apply(plain, v, images, targets))(plain_variables)
  np.testing.assert_array_equal(ours_train["rois"], ref_train["rois"])
  for key in ("class_logits", "box_deltas"):
    np.testing.assert_allclose(ours_train[key], ref_train[key], rtol=1e-5, atol=1e-5)
  for key in ("boxes", "scores"):
    np.testing.assert_allclose(ours[key], ref[key], rtol=1e-5, atol=1e-4)
  np.testing.assert_array_equal(ours["labels"], ref["labels"])

  params = jax.tree.map(lambda x: x, variables["params"])
  params["ps_head"]["rfcn_cls_offset_t"]["bias"] = jnp.ones_like(params["ps_head"]["rfcn_cls_offset_t"]["bias"])
  moved_train, _ = jax.jit(lambda v: _apply(deformable, v, images, targets))(dict(variables, params=params))
  assert np.abs(np.asarray(moved_train["class_logits"] - ours_train["class_logits"])).max() > 1e-4


def test_deformable_psroi_needs_the_sampled_pooler():
  config = _config(True)
  config.ps_pooler = "pool"
  with pytest.raises(ValueError, match="deformable_psroi"):
    _module(config)


def test_experiment_config_builds():
  """The paper's deformable R-FCN: ResNet-101 with deformable res5 and deformable PS RoI pooling, the offset maps of
  2 k^2 (C + 1) and 2 k^2 channels; the optimizer initialises."""
  from segjax.models import get_model  # pylint: disable=g-import-not-at-top
  from segjax.train.optim import make_optimizer  # pylint: disable=g-import-not-at-top
  experiment = importlib.import_module("experiments.rfcn_dcn_r101_coco")
  config = experiment.get_config()
  assert config.model.name == "rfcn_coco" and "Needs" in experiment.__doc__
  assert "--config=experiments/rfcn_dcn_r101_coco.py" in experiment.__doc__
  module = get_model("rfcn_coco").build(config.model, ml_collections.ConfigDict({"num_thing_classes": 80}))
  shapes = jax.eval_shape(lambda x: module.init(jax.random.key(0), x), jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))
  head = shapes["params"]["ps_head"]
  assert head["rfcn_cls_offset_t"]["kernel"].shape == (1, 1, 1024, 2 * 49 * 81)
  assert head["rfcn_bbox_offset_t"]["kernel"].shape == (1, 1, 1024, 2 * 49)
  assert [k for k, v in shapes["params"]["backbone"].items() if "conv2_offset" in v] == ["layer4_0", "layer4_1",
                                                                                         "layer4_2"]
  jax.eval_shape(make_optimizer(config).init, shapes["params"])
