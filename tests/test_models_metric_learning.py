"""The metric-learning model (Fathi et al. 2017): its loss is the pairwise, seediness and foreground losses of ops on
the points it samples, predict recovers instances from ideal embeddings, training compiles once for any instance
counts and beats the best pair-blind similarity, 8 devices train as 1, and the configs build."""
import importlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from test_models_embedding import H, M, W, _batch  # rectangles of random colours, padded to M instances
from train_util import counting_jit, fit_on_batches, losses_on_one_and_eight_devices, train_through_loop

from segjax.models import get_model, metric_learning
from segjax.ops import embedding_losses

CONFIG = {"name": "metric_learning", "width": 4, "embedding_dim": 4, "dtype": "float32", "points_per_instance": 8}


def _binary_entropy(f):
  f = np.clip(f, 1e-12, 1 - 1e-12)
  return float(-f * np.log(f) - (1 - f) * np.log(1 - f))


def test_loss_is_the_ops_losses_on_the_sampled_points():
  rng = np.random.default_rng(0)
  batch = _batch(rng, [3, 0])
  batch["is_crowd"][0, 2] = True  # a crowd: in no group of the pairwise loss, ignored by the foreground loss
  outputs = {"embeddings": jnp.asarray(rng.normal(0, 1, (2, H, W, 4)), jnp.float32),
             "seediness_logits": jnp.asarray(rng.normal(0, 2, (2, H, W)), jnp.float32),
             "foreground_logits": jnp.asarray(rng.normal(0, 2, (2, H, W)), jnp.float32),
             "sampling_key": jax.random.key(5)}
  config = ml_collections.ConfigDict({**CONFIG, "seediness_weight": 0.5, "foreground_weight": 2.0})
  value, aux = metric_learning.loss(outputs, batch, config)
  keys = jax.random.split(jax.random.key(5), 2)
  pairwise, seediness = [], []
  for i in range(2):
    masks = batch["masks"][i] > 0
    valid = batch["instance_valid"][i] & ~batch["is_crowd"][i]
    background = ~(masks & batch["instance_valid"][i][:, None, None]).any(0)  # the crowd is not background
    groups = np.concatenate([masks, background[None]])
    group_valid = np.concatenate([valid, [True]])
    points, point_valid = embedding_losses.sample_instance_pixels(keys[i], groups, group_valid, 8)
    flat = groups.reshape(M + 1, -1)
    assert all(flat[k, np.asarray(points[k])].all() for k in range(M + 1) if group_valid[k])
    pairwise.append(embedding_losses.pairwise_embedding_loss(outputs["embeddings"][i], groups, group_valid, points,
                                                             point_valid))
    objects = np.asarray(point_valid) & (np.arange(M + 1) < M)[:, None]
    targets = embedding_losses.seediness_targets(outputs["embeddings"][i], groups, group_valid, points, objects)
    seediness.append(embedding_losses.seediness_loss(outputs["seediness_logits"][i], points, objects, targets))
  foreground = embedding_losses.foreground_loss(outputs["foreground_logits"], batch["masks"], batch["instance_valid"],
                                                batch["is_crowd"])
  np.testing.assert_allclose(aux["loss_pairwise"], np.mean(pairwise), rtol=1e-5)
  np.testing.assert_allclose(aux["loss_seediness"], np.mean(seediness), rtol=1e-5)
  np.testing.assert_allclose(aux["loss_foreground"], foreground, rtol=1e-5)
  np.testing.assert_allclose(value, np.mean(pairwise) + 0.5 * np.mean(seediness) + 2.0 * foreground, rtol=1e-5)


def test_predict_recovers_instances_from_ideal_embeddings():
  """Instances 3 units apart (similarity 2 / (1 + e^9) < 0.5), a uniform seediness: each object is found once, with
  exactly its pixels, and the background (foreground logit -8) in none."""
  rng = np.random.default_rng(1)
  batch = _batch(rng, [5, 1])
  centres = 3.0 * np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [1, 1, 1, 1.0]])
  emb = np.zeros((2, H, W, 4), np.float32)
  fg = np.full((2, H, W), -8.0, np.float32)
  truth = [[], []]
  for i in range(2):
    for k in range(M):
      if batch["instance_valid"][i, k]:
        m = batch["masks"][i, k] > 0
        emb[i][m] = centres[k] + rng.normal(0, 0.05, (m.sum(), 4))
        fg[i][m] = 8.0
        truth[i].append(m)
  config = ml_collections.ConfigDict({**CONFIG, "num_seeds": 8})
  outputs = {"embeddings": emb, "seediness_logits": np.zeros((2, H, W), np.float32), "foreground_logits": fg}
  out = jax.jit(lambda o: metric_learning.predict(o, config))(outputs)
  assert out["masks"].shape == (2, 8, H, W) and out["boxes"].shape == (2, 8, 4)
  for i in range(2):
    valid = np.asarray(out["valid"][i])
    predicted = [np.asarray(out["masks"][i, k]) > 0.5 for k in range(8) if valid[k]]
    assert sorted(m.tobytes() for m in predicted) == sorted(m.tobytes() for m in truth[i])
    assert np.all(np.asarray(out["labels"][i])[valid] == 1)
    np.testing.assert_allclose(np.asarray(out["scores"][i])[valid], 0.5)  # the seeds' seediness sigmoid(0)
    assert not np.asarray(out["masks"][i])[~valid].any()


def test_training_and_predict_compile_once_for_any_instance_counts():
  rng = np.random.default_rng(4)
  config = ml_collections.ConfigDict(CONFIG)
  batches = [_batch(rng, c) for c in ([3, 1], [0, 5], [2, 4], [6, 0])]
  params, module, history, traces = fit_on_batches(metric_learning, config, batches, 4, 0, rng_name="sampling")

  @counting_jit
  def predict(params, images):
    return metric_learning.predict(module.apply({"params": params}, images), config)

  for b in batches:
    assert predict(params, b["image"])["masks"].shape == (2, 32, H, W)
  assert traces["train"] == 1 and predict.traces == 1
  assert all(np.isfinite(h["loss_pairwise"]) for h in history)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tiny_model_beats_the_pair_blind_similarity(seed):
  """On four fixed batches the pairwise loss falls below half the best pair-blind predictor's: the binary entropy
  H(f) of the fraction f = (P - 1) / (G P - 1) of same-group pairs among G groups of P points (a similarity that
  cannot tell pairs apart is best at sigma = f), averaged over the images as the loss is."""
  rng = np.random.default_rng(seed)
  config = ml_collections.ConfigDict({**CONFIG, "width": 8})
  batches = [_batch(rng, c) for c in ([3, 1], [0, 5], [2, 4], [4, 2])]
  _, _, history, _ = fit_on_batches(metric_learning, config, batches, 150, seed, rng_name="sampling")
  p = CONFIG["points_per_instance"]
  groups = [[n + 1 for n in b["instance_valid"].sum(1)] for b in batches]  # the instances and the background
  blind = np.mean([np.mean([_binary_entropy((p - 1) / (g * p - 1)) for g in gs]) for gs in groups])
  trained = np.mean([h["loss_pairwise"] for h in history[-8:]])
  assert trained < 0.5 * blind, (trained, blind)


def test_eight_device_training_gives_the_losses_of_one_device():
  config = ml_collections.ConfigDict(CONFIG)
  module = metric_learning.build(config, None)
  rng = np.random.default_rng(3)
  batches = [_batch(rng, [3, 0, 6, 1, 2, 5, 4, 6]), _batch(rng, [1, 1, 0, 2, 6, 3, 3, 4])]
  variables = jax.device_get(jax.jit(module.init)(jax.random.key(0), batches[0]["image"]))
  keys = ("loss", "loss_pairwise", "loss_seediness", "loss_foreground")
  losses = losses_on_one_and_eight_devices(module, metric_learning, config, variables, batches * 2, keys)
  assert np.all(np.array(losses[1])[:, 1:3] > 0)
  np.testing.assert_allclose(losses[8], losses[1], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["demo_metric_learning", "metric_learning_cityscapes"])
def test_experiment_configs_build(name):
  config = importlib.import_module(f"experiments.{name}").get_config()
  model_lib = get_model(config.model.name)
  assert model_lib is metric_learning
  module = model_lib.build(config.model, None)
  x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
  shapes = jax.eval_shape(lambda x: module.init(jax.random.key(0), x), x)
  out = jax.eval_shape(lambda v, x: module.apply(v, x), shapes, x)
  assert out["embeddings"].shape == (1, 64, 64, config.model.embedding_dim)


@pytest.mark.slow
def test_runs_through_the_training_loop(tmp_path):
  """The loop trains the model (drawing points with its sampling rng) and evaluates it as a class-agnostic model:
  mask_AP_agnostic and the overlap F-measure in the eval metrics."""
  model = ml_collections.ConfigDict({**CONFIG, "num_seeds": 8})
  metrics, train_rows = train_through_loop(tmp_path, model, steps=2)
  assert {"mask_AP_agnostic", "overlap_F", "overlap_precision", "overlap_recall", "objects_detected_075",
          "boundary_F"} <= set(metrics)
  assert {"loss_pairwise", "loss_seediness", "loss_foreground"} <= set(train_rows[-1])
