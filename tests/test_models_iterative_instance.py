"""Iterative Instance Segmentation: Algorithm 2 (M applications of f from 1/2) and Algorithm 1's union of stages
against explicit compositions of one step, the configs, and a tiny model that trains in one program and predicts
Mask R-CNN's contract."""
import importlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from segjax.models import get_model, iterative_instance
from test_models_boundary_aware import _batch

INFO = ml_collections.ConfigDict({"num_thing_classes": 2})


def tiny_config(**overrides):
  config = iterative_instance.model_config()
  config.update({"depth": 18, "width": 8, "norm": "batch", "fpn_channels": 16, "representation_size": 64,
                 "mask_head_channels": 16, "anchor_sizes": ((8,), (16,), (32,), (64,), (128,)),
                 "rpn_pre_nms_top_n_train": 200, "rpn_post_nms_top_n_train": 100, "rpn_pre_nms_top_n_test": 100,
                 "rpn_post_nms_top_n_test": 50, "roi_batch_size_per_image": 32, "detections_per_image": 6,
                 **overrides})
  return config


def test_registered_with_mask_rcnns_contract_and_bad_keys_named():
  model = get_model("iterative_instance")
  assert model is iterative_instance and "test_iterations" in model.INFERENCE_KEYS
  for key, value in [("train_stages", 0), ("test_iterations", 0), ("backbone", "c4"), ("test_iteratoins", 2)]:
    with pytest.raises(ValueError, match=key):
      iterative_instance.build(tiny_config(**{key: value}), INFO)


class _Probe(iterative_instance.IterativeInstance):
  """The model whose compact method runs fn(model), so that the model's methods create its submodules as in
  its own forward pass (same parameter names)."""
  fn: object = None

  @nn.compact
  def __call__(self):  # pylint: disable=arguments-differ
    return self.fn(self)


def _run(module, fn, params=None):
  probe = _Probe(num_classes=module.num_classes, config=module.config, label_map=module.label_map, fn=fn)
  if params is None:
    return probe.init(jax.random.key(0))["params"]
  return probe.apply({"params": params})


def _levels_and_boxes():
  rng = np.random.default_rng(0)
  levels = [jnp.asarray(rng.normal(size=(2, 64 // 2**k, 64 // 2**k, 16)), jnp.float32) for k in range(2, 7)]
  xy = rng.uniform(0, 30, (2, 5, 2))
  boxes = jnp.asarray(np.concatenate([xy, xy + rng.uniform(8, 30, (2, 5, 2))], -1), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 3, (2, 5)), jnp.int32)
  return levels, boxes, labels


def _step_logits(module, params, levels, boxes, labels, labelling):
  """One application of f, written out: mask logits [N * 5, 28, 28] of each box's class."""
  def step(mdl):
    columns = mdl._hypercolumns(5, levels, boxes)  # pylint: disable=protected-access
    return mdl._labelling_step(mdl._head(), columns, labelling, labels.reshape(-1))  # pylint: disable=protected-access
  return _run(module, step, params)


def test_algorithm_2_applies_the_step_m_times_from_one_half():
  levels, boxes, labels = _levels_and_boxes()
  module = iterative_instance.build(tiny_config(test_iterations=3), INFO)
  call = lambda mdl: mdl._mask_logits(5, levels, boxes, labels, None)  # pylint: disable=protected-access
  params = _run(module, call)
  assert params["mask_head"]["mask_fcn1"]["kernel"].shape[-2] == 4 * 16 + 1  # hypercolumn P2..P5 + labelling
  ours = _run(module, call, params)
  labelling = jnp.full((10, 14, 14, 1), 0.5)
  for _ in range(3):
    logits = _step_logits(module, params, levels, boxes, labels, labelling)
    labelling = jax.nn.sigmoid(logits).reshape(10, 14, 2, 14, 2).mean((2, 4))[..., None]
  np.testing.assert_allclose(ours.reshape(10, 28, 28), logits, rtol=1e-5, atol=1e-5)
  one = _run(iterative_instance.build(tiny_config(test_iterations=1), INFO), call, params)
  assert not np.allclose(one, ours, atol=1e-3)  # the iterations change the prediction


def test_training_sees_the_union_of_the_stages_labellings():
  """Algorithm 1's last training set: each RoI's logits are f(x, p^(i)) for its drawn i in 0..N-1, p^(i) i steps of
  f from 1/2; with N = 3 every stage is drawn for some of 10 RoIs."""
  levels, boxes, labels = _levels_and_boxes()
  module = iterative_instance.build(tiny_config(train_stages=3), INFO)
  stages = jnp.asarray([[0, 1, 2, 0, 1], [2, 2, 1, 0, 0]])
  call = lambda mdl: mdl._stage_logits(5, levels, boxes, labels, None, stages)  # pylint: disable=protected-access
  params = _run(module, call)
  ours = np.asarray(_run(module, call, params)).reshape(10, 28, 28)
  labelling, expected = jnp.full((10, 14, 14, 1), 0.5), []
  for _ in range(3):
    logits = _step_logits(module, params, levels, boxes, labels, labelling)
    expected.append(np.asarray(logits))
    labelling = jax.nn.sigmoid(logits).reshape(10, 14, 2, 14, 2).mean((2, 4))[..., None]
  for r, i in enumerate(np.asarray(stages).reshape(-1)):
    np.testing.assert_allclose(ours[r], expected[i][r], rtol=1e-5, atol=1e-5)


@pytest.mark.slow  # the detector's train step and predict compile
def test_tiny_model_trains_without_recompiling_and_predicts_the_instance_contract():
  config = tiny_config()
  module = iterative_instance.build(config, INFO)
  batch = _batch(3)
  variables = module.init(jax.random.key(0), batch["image"], train=False)
  optimizer = optax.adam(2e-3)
  state = (variables["params"], variables["batch_stats"], optimizer.init(variables["params"]))
  traces = []

  @jax.jit
  def step(state, batch, key):
    traces.append(1)
    params, batch_stats, opt_state = state

    def loss_fn(params):
      outputs, updates = module.apply(
          {"params": params, "batch_stats": batch_stats}, batch["image"], train=True, mutable=["batch_stats"],
          rngs={"sampling": key}, targets={k: batch[k] for k in iterative_instance.FORWARD_KEYS})
      total, metrics = iterative_instance.loss(outputs, batch, config)
      return total, (updates, metrics, outputs)

    (_, (updates, metrics, outputs)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    deltas, opt_state = optimizer.update(grads, opt_state)
    return (optax.apply_updates(params, deltas), updates["batch_stats"], opt_state), metrics, outputs

  mask_losses, blind = [], []
  for i in range(30):
    state, metrics, outputs = step(state, batch, jax.random.key(i))
    mask_losses.append(float(metrics["loss_mask"]))
    # The best constant predictor of each positive's target grid: its foreground share everywhere, whose cross
    # entropy is the share's entropy.
    targets = np.asarray(outputs["mask_targets"])[np.asarray(outputs["mask_valid"])]
    share = np.clip(targets.mean((1, 2)), 1e-6, 1 - 1e-6)
    blind.append(float(np.mean(-share * np.log(share) - (1 - share) * np.log(1 - share))))
  stages = np.asarray(outputs["mask_stage"])[np.asarray(outputs["mask_valid"])]
  assert set(stages) == {0, 1, 2}
  assert np.mean(mask_losses[-5:]) < 0.8 * np.mean(blind[-5:]), (mask_losses, blind)
  for count in (0, 4):  # no instances, and max_instances: the same program
    state, metrics, _ = step(state, _batch(count, seed=count), jax.random.key(100 + count))
    assert np.isfinite(float(metrics["loss_mask"]))
  assert len(traces) == 1

  predict = jax.jit(lambda v, x: iterative_instance.predict(module.apply(v, x, train=False), config))
  outputs = predict({"params": state[0], "batch_stats": state[1]}, batch["image"])
  assert {k: v.shape for k, v in outputs.items()} == {
      "boxes": (2, 6, 4), "scores": (2, 6), "labels": (2, 6), "masks": (2, 6, 64, 64), "valid": (2, 6),
      "mask_probabilities": (2, 6, 28, 28)}
  assert np.asarray(outputs["valid"]).any() and np.isfinite(outputs["masks"]).all()


@pytest.mark.parametrize("name", ["iterative_instance_voc", "demo_iterative_instance"])
def test_experiment_configs_build(name):
  from segjax.train.optim import make_optimizer  # pylint: disable=g-import-not-at-top
  config = importlib.import_module(f"experiments.{name}").get_config()
  module = iterative_instance.build(config.model, ml_collections.ConfigDict({"num_thing_classes": 3}))
  shapes = jax.eval_shape(lambda x: module.init(jax.random.key(0), x), jax.ShapeDtypeStruct((1, 64, 64, 3),
                                                                                            jnp.float32))
  jax.eval_shape(make_optimizer(config).init, shapes["params"])
