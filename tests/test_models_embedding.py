"""The discriminative-embedding model: its loss is the discriminative loss of ops plus the foreground term, predict
recovers instances from ideal embeddings, training compiles once for any instance counts, 8 devices train as 1, and
the configs build."""
import importlib
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from segjax.models import embedding, get_model
from segjax.ops import embedding_losses

H = W = 32
M = 6
CONFIG = {"name": "discriminative_embedding", "width": 4, "embedding_dim": 4, "dtype": "float32"}


def _batch(rng, counts):
  """Images whose rectangles are the instances (a different colour each), padded to M."""
  b = len(counts)
  image = np.full((b, H, W, 3), 0.1, np.float32)
  masks = np.zeros((b, M, H, W), np.uint8)
  valid = np.zeros((b, M), bool)
  for i, n in enumerate(counts):
    for k in range(n):
      y, x = 2 + 10 * (k // 3), 2 + 10 * (k % 3)
      masks[i, k, y:y + rng.integers(4, 9), x:x + rng.integers(4, 9)] = 1
      image[i][masks[i, k] > 0] = rng.uniform(0.3, 1, 3)
      valid[i, k] = True
  return {"image": image, "masks": masks, "is_crowd": np.zeros((b, M), bool), "instance_valid": valid}


def test_loss_is_the_discriminative_loss_plus_foreground():
  rng = np.random.default_rng(0)
  batch = _batch(rng, [3, 0])
  batch["is_crowd"][0, 2] = True  # a crowd instance leaves the discriminative loss; its pixels the foreground's
  outputs = {"embeddings": jnp.asarray(rng.normal(0, 1, (2, H, W, 4)), jnp.float32),
             "foreground_logits": jnp.asarray(rng.normal(0, 2, (2, H, W)), jnp.float32)}
  value, aux = embedding.loss(outputs, batch, ml_collections.ConfigDict(CONFIG))
  valid = batch["instance_valid"] & ~batch["is_crowd"]
  disc = np.mean([embedding_losses.discriminative_loss(outputs["embeddings"][i], batch["masks"][i] > 0, valid[i])[0]
                  for i in range(2)])
  fg = (batch["masks"] * valid[..., None, None]).any(1)
  crowd = batch["masks"][0, 2] > 0
  z = np.asarray(outputs["foreground_logits"], np.float64)
  ce = np.logaddexp(0, z) - z * fg
  keep = np.ones_like(fg)
  keep[0][crowd & ~fg[0]] = False
  np.testing.assert_allclose(aux["loss_discriminative"], disc, rtol=1e-5)
  np.testing.assert_allclose(aux["loss_foreground"], ce[keep].mean(), rtol=1e-5)
  np.testing.assert_allclose(value, disc + ce[keep].mean(), rtol=1e-5)


@pytest.mark.parametrize("kernel", ["flat", "gaussian", "vmf"])
def test_predict_recovers_instances_from_ideal_embeddings(kernel):
  rng = np.random.default_rng(1)
  batch = _batch(rng, [5, 1])
  centres = np.eye(4)[[0, 1, 2, 3, 0]] * 3.0 + np.array([0, 0, 0, 0, 1.0])[:, None] * np.array([0, 3, 3, 0])
  emb = np.zeros((2, H, W, 4), np.float32)
  fg = np.full((2, H, W), -8.0, np.float32)
  truth = []
  for i in range(2):
    found = []
    for k in range(M):
      if batch["instance_valid"][i, k]:
        m = batch["masks"][i, k] > 0
        emb[i][m] = centres[k] + rng.normal(0, 0.05, (m.sum(), 4))
        fg[i][m] = 8.0
        found.append(m)
    truth.append(found)
  config = ml_collections.ConfigDict({**CONFIG, "kernel": kernel, "num_seeds": 8, "bandwidth": 0.8})
  out = jax.jit(lambda o: embedding.predict(o, config))({"embeddings": emb, "foreground_logits": fg})
  for i in range(2):
    predicted = [np.asarray(out["masks"][i, k]) > 0.5 for k in range(8) if out["valid"][i, k]]
    assert len(predicted) == len(truth[i])
    assert sorted(m.tobytes() for m in predicted) == sorted(m.tobytes() for m in truth[i])
    assert set(np.asarray(out["labels"][i])[np.asarray(out["valid"][i])].tolist()) == {1}
    assert np.all(np.asarray(out["scores"][i])[np.asarray(out["valid"][i])] > 0.99)


def test_score_is_the_foreground_probability_times_the_fraction_within_delta_v():
  """Object A's embeddings lie at its centre; object B's lie 3/4 at its centre c and 1/4 at c + 1.2 u. With the flat
  kernel of bandwidth 1.5 B's mode is their mean c + 0.3 u: its central pixels lie 0.3 from it (within delta_v 0.5),
  the others 0.9, so B scores 3/4 of A, both sigmoid(8) * that fraction, and A ranks first."""
  emb = np.zeros((1, H, W, 4), np.float32)
  fg = np.full((1, H, W), -8.0, np.float32)
  a = np.zeros((H, W), bool)
  a[2:10, 2:10] = True
  b = np.zeros((H, W), bool)
  b[14:22, 14:22] = True
  c, u = np.array([0, 3.0, 0, 0]), np.array([0, 0, 1.0, 0])
  emb[0][a] = np.array([3.0, 0, 0, 0])
  emb[0][b] = c
  emb[0, 14:16, 14:22] = c + 1.2 * u  # 16 of B's 64 pixels
  fg[0][a | b] = 8.0
  config = ml_collections.ConfigDict({**CONFIG, "num_seeds": 8, "bandwidth": 1.5, "min_area": 4})
  out = jax.jit(lambda o: embedding.predict(o, config))({"embeddings": emb, "foreground_logits": fg})
  valid = np.asarray(out["valid"][0])
  masks = np.asarray(out["masks"][0])[valid] > 0.5
  assert [m.tobytes() for m in masks] == [a.tobytes(), b.tobytes()]
  p = 1 / (1 + np.exp(-8.0))
  np.testing.assert_allclose(np.asarray(out["scores"][0])[valid], [p, 0.75 * p], rtol=1e-6)


def test_trains_without_recompiling_and_lowers_the_loss():
  rng = np.random.default_rng(2)
  config = ml_collections.ConfigDict(CONFIG)
  module = embedding.build(config, None)
  batches = [_batch(rng, c) for c in ([3, 1], [0, 6], [2, 5], [4, 4])]
  params = jax.jit(module.init)(jax.random.key(0), batches[0]["image"])["params"]
  optimizer = optax.adam(3e-3)
  traces = {"train": 0, "predict": 0}

  @jax.jit
  def step(params, opt_state, batch):
    traces["train"] += 1
    value, grads = jax.value_and_grad(lambda p: embedding.loss(module.apply({"params": p}, batch["image"]), batch,
                                                               config)[0])(params)
    updates, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, value

  @jax.jit
  def predict(params, images):
    traces["predict"] += 1
    return embedding.predict(module.apply({"params": params}, images), config)

  opt_state = optimizer.init(params)
  losses = []
  for i in range(40):
    params, opt_state, value = step(params, opt_state, batches[i % 4])
    losses.append(float(value))
  for b in batches[:2]:
    assert predict(params, b["image"])["masks"].shape == (2, 32, H, W)
  assert traces == {"train": 1, "predict": 1}
  assert np.mean(losses[-4:]) < 0.6 * np.mean(losses[:4])


def test_eight_device_training_gives_the_losses_of_one_device():
  from train_util import losses_on_one_and_eight_devices  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict(CONFIG)
  module = embedding.build(config, None)
  rng = np.random.default_rng(3)
  batches = [_batch(rng, [3, 0, 6, 1, 2, 5, 4, 6]), _batch(rng, [1, 1, 0, 2, 6, 3, 3, 4])]
  variables = jax.device_get(jax.jit(module.init)(jax.random.key(0), batches[0]["image"]))
  keys = ("loss", "loss_var", "loss_dist", "loss_foreground")
  losses = losses_on_one_and_eight_devices(module, embedding, config, variables, batches * 2, keys)
  assert np.all(np.array(losses[1])[:, 1:3] > 0)
  np.testing.assert_allclose(losses[8], losses[1], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["demo_discriminative_loss", "discriminative_loss_cvppp",
                                  "discriminative_loss_cityscapes"])
def test_experiment_configs_build(name):
  config = importlib.import_module(f"experiments.{name}").get_config()
  model_lib = get_model(config.model.name)
  assert model_lib is embedding
  module = model_lib.build(config.model, None)
  shapes = jax.eval_shape(lambda x: module.init(jax.random.key(0), x), jax.ShapeDtypeStruct((1, 64, 64, 3),
                                                                                            jnp.float32))
  out = jax.eval_shape(lambda v, x: module.apply(v, x), shapes, jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))
  assert out["embeddings"].shape == (1, 64, 64, config.model.embedding_dim)


@pytest.mark.slow
def test_runs_through_the_training_loop(tmp_path):
  """The loop trains the model and evaluates it with the instance evaluator: mask_AP_agnostic in metrics.jsonl."""
  from train_util import read_metrics, train_through_loop  # pylint: disable=g-import-not-at-top
  model = ml_collections.ConfigDict({**CONFIG, "num_seeds": 8})
  metrics, train_rows = train_through_loop(tmp_path, model, steps=2)
  assert {"mask_AP_agnostic", "mask_AP50_agnostic", "mask_AP", "box_AP"} <= set(metrics)
  assert {"loss_var", "loss_dist", "loss_reg", "loss_foreground"} <= set(train_rows[-1])
  (row,) = read_metrics(tmp_path / "workdir", "eval")
  assert row["mask_AP_agnostic"] == metrics["mask_AP_agnostic"]
  assert os.listdir(tmp_path / "workdir" / "pictures")
