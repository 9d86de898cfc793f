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


def _sigmoid(z):
  return 1.0 / (1.0 + np.exp(-np.asarray(z, np.float64)))


def _reference_instances(emb, seed_logits, fg_logits, num_seeds, alpha, threshold, fg_threshold, min_area, recentre):
  """NumPy float64 predict of one image, written from the module docstring: Fathi et al. 2017's sequential seeds,
  masks {q foreground: sigma > threshold}, seeds inside an earlier kept mask dropped; with `recentre`, each mask
  grown again from its mean embedding and scored seediness x IoU(first mask, second mask). Returns [(score, mask)]."""
  x = emb.reshape(-1, emb.shape[-1]).astype(np.float64)
  s = _sigmoid(seed_logits).reshape(-1)
  fg = _sigmoid(fg_logits).reshape(-1) > fg_threshold
  sigma = lambda c: 2.0 / (1.0 + np.exp(np.sum((x - c) ** 2, -1)))
  seeds, min_dist, taken = [], np.full(len(x), np.inf), np.zeros(len(x), bool)
  for t in range(num_seeds):
    score = np.log(s) + (alpha * np.log(np.maximum(min_dist, 1e-30)) if t else 0.0)
    score = np.where(fg & ~taken, score, -np.inf)
    p = int(np.argmax(score))
    if not np.isfinite(score[p]):
      break
    seeds.append(p)
    taken[p] = True
    min_dist = np.minimum(min_dist, np.sum((x - x[p]) ** 2, -1))
  kept, out = [], []
  for p in seeds:
    mask = (sigma(x[p]) > threshold) & fg
    score = s[p]
    if recentre:
      first = mask
      mask = (sigma(first.astype(np.float64) @ x / first.sum()) > threshold) & fg
      score = score * (first & mask).sum() / (first | mask).sum()
    if any(k[p] for k in kept):
      continue
    kept.append(mask)
    if mask.sum() >= min_area:
      out.append((score, mask))
  return out


def _predicted_instances(out, i, h, w):
  valid = np.asarray(out["valid"][i])
  return [(float(out["scores"][i][k]), np.asarray(out["masks"][i][k]).reshape(h * w) > 0.5)
          for k in range(valid.shape[0]) if valid[k]]


def _assert_same_instances(predicted, reference):
  predicted = sorted(predicted, key=lambda r: -r[0])
  reference = sorted(reference, key=lambda r: -r[0])
  assert len(predicted) == len(reference)
  for (ps, pm), (rs, rm) in zip(predicted, reference):
    np.testing.assert_allclose(ps, rs, rtol=1e-5)
    np.testing.assert_array_equal(pm, rm)


def test_recentred_masks_grow_from_the_mask_mean_and_score_by_the_iou_of_the_two_masks():
  """An object whose embeddings lie along a line at 0, 0.5, 1, 1.5, 2 (4 pixels each): the first seed (at 0, highest
  seediness) grows the pixels within squared distance log 3 (0, 0.5, 1: 12 pixels), their mean 0.5 grows 0, ..., 1.5
  (16 pixels), so the instance is those 16 pixels scored sigmoid(3) x 12 / 16. A compact object scores its seed's
  seediness. Everything else matches the float64 reference."""
  h, w, e = 4, 10, 4
  emb = np.zeros((h, w, e), np.float32)
  seed_logits = np.zeros((h, w), np.float32)
  fg_logits = np.full((h, w), -8.0, np.float32)
  emb[:, :5, 0] = np.array([0.0, 0.5, 1.0, 1.5, 2.0])[None, :]  # columns 0-4: the elongated object
  emb[:, 5:8, 1] = 10.0  # columns 5-7: a compact object; columns 8-9: background
  fg_logits[:, :8] = 8.0
  seed_logits[0, 0] = 3.0
  seed_logits[:, 5:8] = 1.0
  config = ml_collections.ConfigDict({**CONFIG, "num_seeds": 8, "min_area": 1, "recentre_masks": True})
  outputs = {"embeddings": emb[None], "seediness_logits": seed_logits[None], "foreground_logits": fg_logits[None]}
  out = jax.jit(lambda o: metric_learning.predict(o, config))(outputs)
  predicted = _predicted_instances(out, 0, h, w)
  first = [r for r in predicted if r[1].reshape(h, w)[0, 0]]  # the first seed's instance
  assert len(first) == 1
  top_score, top_mask = first[0]
  expected = np.zeros((h, w), bool)
  expected[:, :4] = True
  np.testing.assert_array_equal(top_mask.reshape(h, w), expected)
  np.testing.assert_allclose(top_score, _sigmoid(3.0) * 12 / 16, rtol=1e-6)
  compact = [r for r in predicted if r[1].reshape(h, w)[:, 5:8].all()]
  assert len(compact) == 1 and not compact[0][1].reshape(h, w)[:, :5].any()
  np.testing.assert_allclose(compact[0][0], _sigmoid(1.0), rtol=1e-6)
  _assert_same_instances(predicted, _reference_instances(emb, seed_logits, fg_logits, 8, 1.0, 0.5, 0.5, 1, True))


@pytest.mark.parametrize("recentre", [False, True])
def test_predict_matches_the_float64_reference_on_random_outputs(recentre):
  rng = np.random.default_rng(7)
  b, h, w, e = 2, 12, 12, 3
  emb = rng.normal(0, 1.2, (b, h, w, e)).astype(np.float32)
  seed_logits = rng.normal(0, 2, (b, h, w)).astype(np.float32)
  fg_logits = rng.normal(1, 2, (b, h, w)).astype(np.float32)
  config = ml_collections.ConfigDict({**CONFIG, "num_seeds": 12, "min_area": 3, "recentre_masks": recentre})
  outputs = {"embeddings": emb, "seediness_logits": seed_logits, "foreground_logits": fg_logits}
  out = jax.jit(lambda o: metric_learning.predict(o, config))(outputs)
  for i in range(b):
    reference = _reference_instances(emb[i], seed_logits[i], fg_logits[i], 12, 1.0, 0.5, 0.5, 3, recentre)
    assert len(reference) > 2
    _assert_same_instances(_predicted_instances(out, i, h, w), reference)
