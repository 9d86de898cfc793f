"""Optimizers and schedules against torch.optim and the schedules' formulas."""
import jax
import ml_collections
import numpy as np
import optax
import pytest

from segjax.train.optim import learning_rate_schedule, make_optimizer
from references import requires_torch, torch


def _config(**optimizer):
  config = ml_collections.ConfigDict({"total_steps": 100, "optimizer": {
      "name": "sgd", "learning_rate": 0.1, "momentum": 0.9, "weight_decay": 1e-2, "schedule": "constant",
      "warmup_steps": 0, **optimizer}})
  return config


def _steps(optimizer, w0, grads):
  """{"w": w0} after one optimizer step per gradient of `grads`."""
  params = {"w": w0}
  state = optimizer.init(params)
  for g in grads:
    updates, state = optimizer.update({"w": g}, state, params)
    params = optax.apply_updates(params, updates)
  return params


def test_poly_schedule_is_deeplab_formula():
  schedule = learning_rate_schedule(_config(schedule="poly", power=0.9))
  for step in (0, 10, 57, 99):
    assert float(schedule(step)) == pytest.approx(0.1 * (1 - step / 100) ** 0.9, rel=1e-5)


def test_step_schedule_with_linear_warmup():
  schedule = learning_rate_schedule(_config(schedule="step", decay_steps=(60, 80), decay_factor=0.1,
                                            warmup_steps=10, warmup_factor=0.001))
  assert float(schedule(0)) == pytest.approx(1e-4, rel=1e-4)
  assert float(schedule(5)) == pytest.approx(1e-4 + (0.1 - 1e-4) * 0.5, rel=1e-5)
  assert float(schedule(59)) == pytest.approx(0.1, rel=1e-6)
  assert float(schedule(60)) == pytest.approx(0.01, rel=1e-6)
  assert float(schedule(85)) == pytest.approx(0.001, rel=1e-6)


@requires_torch
def test_sgd_equals_torch_sgd_with_weight_decay():
  rng = np.random.default_rng(0)
  w0 = rng.normal(size=(5,)).astype(np.float32)
  grads = [rng.normal(size=(5,)).astype(np.float32) for _ in range(4)]
  params = _steps(make_optimizer(_config()), w0, grads)
  w = torch.nn.Parameter(torch.from_numpy(w0.copy()))
  reference = torch.optim.SGD([w], lr=0.1, momentum=0.9, weight_decay=1e-2)
  for g in grads:
    w.grad = torch.from_numpy(g)
    reference.step()
  np.testing.assert_allclose(np.asarray(params["w"]), w.detach().numpy(), rtol=1e-5)


@requires_torch
def test_clip_value_equals_torch_clip_grad_value_then_adamw():
  rng = np.random.default_rng(1)
  w0 = rng.normal(size=(6,)).astype(np.float32)
  grads = [rng.normal(scale=3.0, size=(6,)).astype(np.float32) for _ in range(4)]
  params = _steps(make_optimizer(_config(name="adamw", learning_rate=0.01, clip_value=1.0)), w0, grads)
  w = torch.nn.Parameter(torch.from_numpy(w0.copy()))
  reference = torch.optim.AdamW([w], lr=0.01, weight_decay=1e-2, eps=1e-8)
  for g in grads:
    w.grad = torch.from_numpy(g.copy())
    torch.nn.utils.clip_grad_value_([w], 1.0)
    reference.step()
  np.testing.assert_allclose(np.asarray(params["w"]), w.detach().numpy(), rtol=1e-5, atol=1e-6)
  assert np.abs(np.concatenate(grads)).max() > 2  # the clipping is exercised
  with pytest.raises(ValueError, match="config.optimizer.clip_value"):
    make_optimizer(_config(clip_value=0.0))


def test_unknown_names_are_clear_errors():
  with pytest.raises(ValueError, match="config.optimizer.schedule"):
    learning_rate_schedule(_config(schedule="linear"))
  with pytest.raises(ValueError, match="config.optimizer.name"):
    make_optimizer(_config(name="lamb"))


def test_frozen_parameters_are_never_updated():
  """Frozen (by path regex) parameters keep their values under gradients and weight decay; the others match the
  optimizer without freezing; a pattern that matches nothing is an error naming the config field."""
  rng = np.random.default_rng(1)
  params = {"backbone": {"conv1": {"kernel": rng.normal(size=(3,))}, "layer1_0": {"w": rng.normal(size=(2,))},
                         "layer2_0": {"w": rng.normal(size=(2,))}}, "head": {"w": rng.normal(size=(4,))}}
  params = jax.tree.map(lambda x: x.astype(np.float32), params)
  grads = jax.tree.map(lambda x: np.ones_like(x), params)
  outputs = {}
  for frozen in ((), (r"backbone/(conv1|bn1|layer1_)",)):
    optimizer = make_optimizer(_config(frozen=frozen))
    state, p = optimizer.init(params), params
    for _ in range(3):
      updates, state = optimizer.update(grads, state, p)
      p = optax.apply_updates(p, updates)
    outputs[frozen] = p
  frozen, free = outputs[(r"backbone/(conv1|bn1|layer1_)",)], outputs[()]
  np.testing.assert_array_equal(frozen["backbone"]["conv1"]["kernel"], params["backbone"]["conv1"]["kernel"])
  np.testing.assert_array_equal(frozen["backbone"]["layer1_0"]["w"], params["backbone"]["layer1_0"]["w"])
  assert np.all(free["backbone"]["layer1_0"]["w"] != params["backbone"]["layer1_0"]["w"])
  np.testing.assert_allclose(frozen["backbone"]["layer2_0"]["w"], free["backbone"]["layer2_0"]["w"])
  np.testing.assert_allclose(frozen["head"]["w"], free["head"]["w"])
  with pytest.raises(ValueError, match=r"config.optimizer.frozen: \['backbone/stem'\] match no parameter"):
    make_optimizer(_config(frozen=("backbone/stem",))).init(params)
