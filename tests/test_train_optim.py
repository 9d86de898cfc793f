"""Optimizers and schedules against torch.optim and the schedules' formulas."""
import ml_collections
import numpy as np
import optax
import pytest

from segjax.train.optim import learning_rate_schedule, make_optimizer


def _config(**optimizer):
  config = ml_collections.ConfigDict({"total_steps": 100, "optimizer": {
      "name": "sgd", "learning_rate": 0.1, "momentum": 0.9, "weight_decay": 1e-2, "schedule": "constant",
      "warmup_steps": 0, **optimizer}})
  return config


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


def test_sgd_equals_torch_sgd_with_weight_decay():
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(0)
  w0 = rng.normal(size=(5,)).astype(np.float32)
  grads = [rng.normal(size=(5,)).astype(np.float32) for _ in range(4)]
  optimizer = make_optimizer(_config())
  params = {"w": w0}
  state = optimizer.init(params)
  for g in grads:
    updates, state = optimizer.update({"w": g}, state, params)
    params = optax.apply_updates(params, updates)
  w = torch.nn.Parameter(torch.from_numpy(w0.copy()))
  reference = torch.optim.SGD([w], lr=0.1, momentum=0.9, weight_decay=1e-2)
  for g in grads:
    w.grad = torch.from_numpy(g)
    reference.step()
  np.testing.assert_allclose(np.asarray(params["w"]), w.detach().numpy(), rtol=1e-5)


def test_unknown_names_are_clear_errors():
  with pytest.raises(ValueError, match="config.optimizer.schedule"):
    learning_rate_schedule(_config(schedule="linear"))
  with pytest.raises(ValueError, match="config.optimizer.name"):
    make_optimizer(_config(name="lamb"))
