"""segjax.ops.embedding_losses against float64 NumPy versions written from the papers' equations (loops over
instances and pixels), on random embeddings and instance maps, with empty images and a single instance; gradients
by finite differences in float64; no recompilation for another number of instances."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from segjax.ops import embedding_losses as el
from train_util import counting_jit

H, W, E, K = 6, 7, 3, 5


def random_case(seed, num_instances, spherical=False):
  """embeddings [H, W, E] float64, a random label map with `num_instances` instances (0 = background), its masks
  padded to K and validity."""
  rng = np.random.default_rng(seed)
  emb = rng.normal(0, 1.0, (H, W, E))
  if spherical:
    emb /= np.linalg.norm(emb, axis=-1, keepdims=True)
  labels = rng.integers(0, num_instances + 1, (H, W))
  labels.flat[rng.choice(H * W, num_instances, replace=False)] = np.arange(1, num_instances + 1)  # none empty
  present = [i for i in range(1, num_instances + 1) if (labels == i).any()]
  masks = np.zeros((K, H, W), bool)
  valid = np.zeros(K, bool)
  for slot, i in enumerate(present):
    masks[slot] = labels == i
    valid[slot] = True
  masks[K - 1] |= rng.uniform(size=(H, W)) > 0.5  # a padded slot with pixels: must be ignored
  return emb, masks, valid


def instances(emb, masks, valid):
  return [emb[masks[k]] for k in range(K) if valid[k] and masks[k].any()]


def discriminative_reference(emb, masks, valid, dv=0.5, dd=1.5, a=1.0, b=1.0, g=0.001):
  """De Brabandere et al. 2017, Eqs. 1-4, term by term."""
  groups = instances(emb, masks, valid)
  c = len(groups)
  if c == 0:
    return 0.0
  mus = [grp.mean(0) for grp in groups]
  l_var = sum(sum(max(np.linalg.norm(mu - xi) - dv, 0) ** 2 for xi in grp) / len(grp)
              for mu, grp in zip(mus, groups)) / c
  l_dist = 0.0
  if c > 1:
    l_dist = sum(max(2 * dd - np.linalg.norm(mus[i] - mus[j]), 0) ** 2
                 for i in range(c) for j in range(c) if i != j) / (c * (c - 1))
  l_reg = sum(np.linalg.norm(mu) for mu in mus) / c
  return a * l_var + b * l_dist + g * l_reg


def ucn_reference(emb, masks, valid, alpha, delta):
  """Xiang et al. 2020 (the deck's l_intra and l_inter), term by term."""
  groups = instances(emb, masks, valid)
  c = len(groups)
  mus = [grp.sum(0) / np.linalg.norm(grp.sum(0)) for grp in groups]
  d = lambda mu, x: 0.5 * (1 - mu @ x)
  intra = 0.0
  for mu, grp in zip(mus, groups):
    hard = [d(mu, xi) for xi in grp if d(mu, xi) - alpha >= 0]
    intra += sum(v * v for v in hard) / len(hard) if hard else 0.0
  intra = intra / c if c else 0.0
  inter = 0.0
  if c > 1:
    inter = 2 / (c * (c - 1)) * sum(max(delta - d(mus[i], mus[j]), 0) ** 2
                                    for i in range(c) for j in range(i + 1, c))
  return intra, inter


def pairwise_reference(emb, masks, valid, points, point_valid):
  """Fathi et al. 2017, Eq. 2 over all ordered pairs of distinct sampled points."""
  flat = emb.reshape(-1, E)
  pts = [(flat[points[k, j]], k) for k in range(K) for j in range(points.shape[1]) if valid[k] and point_valid[k, j]]
  total, count = 0.0, 0
  for (i, (ep, yp)), (j, (eq, yq)) in itertools.product(enumerate(pts), repeat=2):
    if i == j:
      continue
    s = 2 / (1 + np.exp(np.sum((ep - eq) ** 2)))
    total += -(np.log(s) if yp == yq else np.log(1 - s))
    count += 1
  return total / max(count, 1)


@pytest.mark.parametrize("num_instances", [0, 1, 3, 4])
@pytest.mark.parametrize("seed", [0, 1])
def test_discriminative_loss_matches_equations(num_instances, seed):
  emb, masks, valid = random_case(seed, num_instances)
  emb *= 2.0  # spread so that all three hinges are active somewhere
  ours, terms = jax.jit(el.discriminative_loss)(emb.astype(np.float32), masks, valid)
  np.testing.assert_allclose(ours, discriminative_reference(emb, masks, valid), rtol=2e-5, atol=1e-6)
  assert set(terms) == {"loss_var", "loss_dist", "loss_reg"}
  if num_instances == 0:
    assert float(ours) == 0.0


@pytest.mark.parametrize("num_instances", [0, 1, 4])
def test_ucn_losses_match_equations(num_instances):
  emb, masks, valid = random_case(3, num_instances, spherical=True)
  alpha, delta = 0.3, 0.6  # margins where some pixels and pairs pass and others do not
  intra = jax.jit(el.intra_cluster_loss, static_argnums=3)(emb.astype(np.float32), masks, valid, alpha)
  inter = jax.jit(el.inter_cluster_loss, static_argnums=3)(emb.astype(np.float32), masks, valid, delta)
  ref_intra, ref_inter = ucn_reference(emb, masks, valid, alpha, delta)
  np.testing.assert_allclose([intra, inter], [ref_intra, ref_inter], rtol=2e-5, atol=1e-7)
  if num_instances == 4:
    assert ref_intra > 0 and ref_inter > 0


def test_sampled_pixels_are_uniform_over_their_instance():
  """20000 draws from a 10-pixel instance: each pixel's count is Binomial(20000, 1/10), within 5 standard deviations
  (about 212) of 2000; none fall outside the instance; an absent instance's points are invalid."""
  masks = np.zeros((2, 8, 8), bool)
  masks[0, 1, 2:7] = masks[0, 5, 0:5] = True
  points, point_valid = el.sample_instance_pixels(jax.random.key(3), masks, np.array([True, True]), 20000)
  points, point_valid = np.asarray(points), np.asarray(point_valid)
  pixels = np.flatnonzero(masks[0].reshape(-1))
  counts = np.bincount(points[0], minlength=64)
  assert counts.sum() == counts[pixels].sum()
  sd = np.sqrt(20000 * 0.1 * 0.9)
  assert np.all(np.abs(counts[pixels] - 2000) < 5 * sd)
  assert point_valid[0].all() and not point_valid[1].any()


@pytest.mark.parametrize("num_instances", [0, 1, 3])
def test_pairwise_loss_matches_equation(num_instances):
  emb, masks, valid = random_case(4, num_instances)
  points, point_valid = el.sample_instance_pixels(jax.random.key(0), masks, valid, 4)
  points, point_valid = np.asarray(points), np.asarray(point_valid)
  flat = masks.reshape(K, -1)
  for k in range(K):  # drawn from their instance only
    if point_valid[k].any():
      assert flat[k, points[k]].all()
  assert point_valid.sum() == 4 * num_instances
  ours = jax.jit(el.pairwise_embedding_loss)(emb.astype(np.float32), masks, valid, points, point_valid)
  np.testing.assert_allclose(ours, pairwise_reference(emb, masks, valid, points, point_valid), rtol=2e-5, atol=1e-6)


def test_seediness_targets_and_loss_match_definition():
  emb, masks, valid = random_case(5, 3)
  emb *= 0.7
  points, point_valid = (np.asarray(a) for a in el.sample_instance_pixels(jax.random.key(1), masks, valid, 3))
  targets = np.asarray(el.seediness_targets(emb.astype(np.float32), masks, valid, points, point_valid))
  flat = emb.reshape(-1, E)
  logits = np.random.default_rng(0).normal(0, 2, (H, W))
  ce, n = 0.0, 0
  for k in range(K):
    for j in range(points.shape[1]):
      if not (valid[k] and point_valid[k, j]):
        assert targets[k, j] == 0
        continue
      grown = 2 / (1 + np.exp(np.sum((flat - flat[points[k, j]]) ** 2, -1))) >= 0.5
      truth = masks[k].reshape(-1)
      iou = (grown & truth).sum() / (grown | truth).sum()
      np.testing.assert_allclose(targets[k, j], iou, rtol=1e-6)
      s = 1 / (1 + np.exp(-logits.flat[points[k, j]]))
      ce += -(iou * np.log(s) + (1 - iou) * np.log(1 - s))
      n += 1
  assert 0 < targets.max() <= 1
  ours = el.seediness_loss(logits.astype(np.float32), points, point_valid & valid[:, None], targets)
  np.testing.assert_allclose(ours, ce / n, rtol=1e-5)


def test_gradients_by_finite_differences():
  emb, masks, valid = random_case(6, 3)
  sph, _, _ = random_case(6, 3, spherical=True)
  points, point_valid = el.sample_instance_pixels(jax.random.key(2), masks, valid, 3)
  with jax.enable_x64(True):
    emb, sph = jnp.asarray(emb * 1.5, jnp.float64), jnp.asarray(sph, jnp.float64)
    check_grads(lambda x: el.discriminative_loss(x, masks, valid)[0], (emb,), order=1, modes=("rev",),
                eps=1e-6, atol=1e-5, rtol=1e-5)
    check_grads(lambda x: el.pairwise_embedding_loss(x, masks, valid, points, point_valid), (emb,), order=1,
                modes=("rev",), eps=1e-6, atol=1e-5, rtol=1e-5)
    check_grads(lambda x: el.intra_cluster_loss(x, masks, valid, 0.2), (sph,), order=1, modes=("rev",),
                eps=1e-7, atol=1e-5, rtol=1e-5)
    check_grads(lambda x: el.inter_cluster_loss(x, masks, valid, 0.9), (sph,), order=1, modes=("rev",),
                eps=1e-7, atol=1e-5, rtol=1e-5)


def test_other_instance_counts_do_not_recompile():
  fn = counting_jit(lambda e, m, v: el.batched(el.discriminative_loss, e, m, v)[0])
  for n in (0, 2, 4):
    emb, masks, valid = random_case(n, n)
    out = fn(emb[None].astype(np.float32), masks[None], valid[None])
    np.testing.assert_allclose(out, discriminative_reference(emb, masks, valid), rtol=2e-5, atol=1e-6)
  assert fn.traces == 1
