"""The Deep Watershed Transform model: its loss is the paper's losses on the ops' targets (checked against the SciPy
references of test_ops_watershed), predict recovers instances from ideal outputs, training compiles once for any
instance counts, 8 devices train as 1, the configs build, and a short loop learns the energy."""
import importlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from segjax.models import deep_watershed, get_model
from segjax.ops import watershed
from test_ops_watershed import _reference_losses, _reference_targets

H = W = 32
M = 6
CONFIG = {"name": "deep_watershed", "width": 4, "head_width": 4, "dtype": "float32"}


def _batch(rng, counts):
  """Images whose separated rectangles (at least 7 x 7, a different colour each) are the instances, padded to M."""
  b = len(counts)
  image = np.full((b, H, W, 3), 0.1, np.float32)
  masks = np.zeros((b, M, H, W), np.uint8)
  valid = np.zeros((b, M), bool)
  for i, n in enumerate(counts):
    for k in range(n):
      y, x = 1 + 10 * (k // 3), 1 + 10 * (k % 3)
      masks[i, k, y:y + rng.integers(7, 10), x:x + rng.integers(7, 10)] = 1
      image[i][masks[i, k] > 0] = rng.uniform(0.3, 1, 3)
      valid[i, k] = True
  return {"image": image, "masks": masks, "is_crowd": np.zeros((b, M), bool), "instance_valid": valid}


def test_loss_is_the_papers_losses_plus_foreground():
  rng = np.random.default_rng(0)
  batch = _batch(rng, [4, 0])
  batch["is_crowd"][0, 3] = True
  outputs = {"foreground_logits": jnp.asarray(rng.normal(0, 2, (2, H, W)), jnp.float32),
             "direction": jnp.asarray(rng.normal(size=(2, H, W, 2)), jnp.float32),
             "energy_logits": jnp.asarray(rng.normal(0, 2, (2, H, W, 16)), jnp.float32)}
  value, aux = deep_watershed.loss(outputs, batch, ml_collections.ConfigDict(CONFIG))
  l_dir = l_ws = count = weight = 0.0
  for i in range(2):
    ref = _reference_targets(batch["masks"][i] > 0, batch["instance_valid"][i], batch["is_crowd"][i])
    d, e = _reference_losses(np.asarray(outputs["direction"][i], np.float64),
                             np.asarray(outputs["energy_logits"][i], np.float64), ref)
    l_dir, l_ws = l_dir + d, l_ws + e
    count, weight = count + ref["object"].sum(), weight + ref["weight"].sum()
  fg = (batch["masks"] * (batch["instance_valid"] & ~batch["is_crowd"])[..., None, None]).any(1)
  keep = ~((batch["masks"][:, 3] > 0) & ~fg)
  z = np.asarray(outputs["foreground_logits"], np.float64)
  ce = np.logaddexp(0, z) - z * fg
  np.testing.assert_allclose(aux["loss_direction"], l_dir / (count + 1), rtol=1e-5)
  np.testing.assert_allclose(aux["loss_energy"], l_ws / (weight + 1), rtol=1e-5)
  np.testing.assert_allclose(aux["loss_foreground"], ce[keep].mean(), rtol=1e-5)
  np.testing.assert_allclose(value, l_dir / (count + 1) + l_ws / (weight + 1) + ce[keep].mean(), rtol=1e-5)


@pytest.mark.parametrize("cut_level", [0, 1, 2])
def test_predict_recovers_instances_from_ideal_outputs(cut_level):
  rng = np.random.default_rng(1)
  batch = _batch(rng, [5, 1])
  t = jax.vmap(watershed.targets)(batch["masks"], batch["instance_valid"], batch["is_crowd"])
  outputs = {"foreground_logits": jnp.where(t["object"], 8.0, -8.0),
             "energy_logits": 8.0 * jax.nn.one_hot(t["level"], 16), "direction": t["direction"]}
  # min_area 1: above level 2 a 7 x 7 square keeps its centre pixel only
  config = ml_collections.ConfigDict({**CONFIG, "cut_level": cut_level, "max_detections": 8, "min_area": 1})
  out = jax.jit(lambda o: deep_watershed.predict(o, config))(outputs)
  for i in range(2):
    truth = [batch["masks"][i, k] > 0 for k in range(M) if batch["instance_valid"][i, k]]
    predicted = [np.asarray(out["masks"][i, k]) > 0.5 for k in range(8) if out["valid"][i, k]]
    assert sorted(m.tobytes() for m in predicted) == sorted(m.tobytes() for m in truth)
    assert set(np.asarray(out["labels"][i])[np.asarray(out["valid"][i])].tolist()) == {1}
    assert np.all(np.asarray(out["scores"][i])[np.asarray(out["valid"][i])] > 0.99)


@pytest.mark.slow
def test_trains_without_recompiling_and_lowers_the_loss():
  rng = np.random.default_rng(2)
  config = ml_collections.ConfigDict(CONFIG)
  module = deep_watershed.build(config, None)
  batches = [_batch(rng, c) for c in ([3, 1], [0, 6], [2, 5], [4, 4])]
  params = jax.jit(module.init)(jax.random.key(0), batches[0]["image"])["params"]
  optimizer = optax.adam(3e-3)
  traces = {"train": 0, "predict": 0}

  @jax.jit
  def step(params, opt_state, batch):
    traces["train"] += 1
    value, grads = jax.value_and_grad(lambda p: deep_watershed.loss(module.apply({"params": p}, batch["image"]),
                                                                    batch, config)[0])(params)
    updates, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, value

  @jax.jit
  def predict(params, images):
    traces["predict"] += 1
    return deep_watershed.predict(module.apply({"params": params}, images), config)

  opt_state = optimizer.init(params)
  losses = []
  for i in range(40):
    params, opt_state, value = step(params, opt_state, batches[i % 4])
    losses.append(float(value))
  for b in batches[:2]:
    assert predict(params, b["image"])["masks"].shape == (2, 32, H, W)
  assert traces == {"train": 1, "predict": 1}
  assert np.mean(losses[-4:]) < 0.9 * np.mean(losses[:4])


@pytest.mark.slow
def test_eight_device_training_gives_the_losses_of_one_device():
  from train_util import losses_on_one_and_eight_devices  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict(CONFIG)
  module = deep_watershed.build(config, None)
  rng = np.random.default_rng(3)
  batches = [_batch(rng, [3, 0, 6, 1, 2, 5, 4, 6]), _batch(rng, [1, 1, 0, 2, 6, 3, 3, 4])]
  variables = jax.device_get(jax.jit(module.init)(jax.random.key(0), batches[0]["image"]))
  keys = ("loss", "loss_direction", "loss_energy", "loss_foreground")
  losses = losses_on_one_and_eight_devices(module, deep_watershed, config, variables, batches * 2, keys)
  assert np.all(np.array(losses[1])[:, 1:3] > 0)
  np.testing.assert_allclose(losses[8], losses[1], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["demo_watershed", "deep_watershed_cityscapes"])
def test_experiment_configs_build(name):
  config = importlib.import_module(f"experiments.{name}").get_config()
  model_lib = get_model(config.model.name)
  assert model_lib is deep_watershed
  module = model_lib.build(config.model, None)
  shapes = jax.eval_shape(lambda x: module.init(jax.random.key(0), x), jax.ShapeDtypeStruct((1, 64, 64, 3),
                                                                                            jnp.float32))
  out = jax.eval_shape(lambda v, x: module.apply(v, x), shapes, jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))
  assert out["energy_logits"].shape == (1, 64, 64, 16) and out["direction"].shape == (1, 64, 64, 2)


def _best_image_blind_energy_loss(batches):
  """The smallest mean over `batches` of the model's normalised energy loss that one constant 16-level prediction
  (the same logits at every pixel of every image) reaches: Adam on the 16 logits, the loss being convex in them
  up to the 1e-25 floors."""
  targets = [jax.vmap(watershed.targets)(b["masks"], b["instance_valid"], b["is_crowd"]) for b in batches]

  def mean_loss(z):
    return sum(watershed.watershed_loss(jnp.broadcast_to(z, t["level"].shape + (16,)), t["level"], t["weight"])
               / (jnp.sum(t["weight"]) + 1.0) for t in targets) / len(targets)

  z, optimizer = jnp.zeros(16), optax.adam(0.05)
  state, grad = optimizer.init(z), jax.jit(jax.value_and_grad(mean_loss))
  best = np.inf
  for _ in range(400):
    value, g = grad(z)
    best = min(best, float(value))
    updates, state = optimizer.update(g, state)
    z = optax.apply_updates(z, updates)
  return best


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0])
def test_loop_learns_the_energy_below_the_image_blind_bound(tmp_path, seed):
  """Through train_and_evaluate on the tiny synthetic data: the energy loss of the last 10 steps' batches falls
  below the best constant predictor's on those same batches (the train stream is a pure function of the seed, so
  they are read again), and the evaluator reports mask_AP_agnostic."""
  from segjax.data import compact, pipeline  # pylint: disable=g-import-not-at-top
  from train_util import tiny_config, train_through_loop  # pylint: disable=g-import-not-at-top
  steps, last = 150, 10
  overrides = {"seed": seed, "optimizer.name": "adamw", "optimizer.learning_rate": 3e-3,
               "optimizer.schedule": "constant", "optimizer.warmup_steps": 0}
  model = ml_collections.ConfigDict({**CONFIG, "head_width": 8})
  metrics, rows = train_through_loop(tmp_path, model, steps=steps, **overrides)
  assert "mask_AP_agnostic" in metrics
  trained_loss = np.mean([r["loss_energy"] for r in rows[-last:]])
  config = tiny_config(tmp_path / "data", total_steps=steps, eval_every_steps=steps, **overrides)
  stream = pipeline.make_train_iterator(config, start_step=steps - last)
  batches = [compact.expand(next(stream)) for _ in range(last)]
  blind_loss = _best_image_blind_energy_loss(batches)
  assert trained_loss < blind_loss, (trained_loss, blind_loss)
