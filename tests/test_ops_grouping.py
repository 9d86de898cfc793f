"""segjax.ops.grouping against its references: a NumPy port of Fathi et al. 2017's seed rule, scikit-learn's
MeanShift (flat kernel, the same bandwidth and seeds, compared in float64), NumPy versions of the Gaussian and
von Mises-Fisher mean-shift updates, and scipy.ndimage.label; one compilation for any number of instances."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from segjax.ops import grouping
from train_util import counting_jit


def blobs(seed, num_clusters, n=120, dim=2, spread=0.25):
  rng = np.random.default_rng(seed)
  centers = rng.uniform(-3, 3, (max(num_clusters, 1), dim))
  x = centers[rng.integers(0, max(num_clusters, 1), n)] + rng.normal(0, spread, (n, dim))
  return x


def seeds_reference(e, s, valid, num_seeds, alpha):
  """Fathi et al. 2017: p_1 = argmax log S_p; p_t = argmax_{p not taken} log S_p + alpha log min_q ||e_p - e_q||^2."""
  taken, out = [], []
  for _ in range(num_seeds):
    best, best_score = None, -np.inf
    for p in range(len(e)):
      if not valid[p] or p in taken:
        continue
      score = np.log(max(s[p], 1e-30))
      if taken:
        score += alpha * np.log(max(min(np.sum((e[p] - e[q]) ** 2) for q in taken), 1e-30))
      if score > best_score:
        best, best_score = p, score
    if best is None:
      break
    taken.append(best)
    out.append(best)
  return out


@pytest.mark.parametrize("alpha", [0.5, 1.0, 3.0])
def test_sequential_seeds_match_numpy_port(alpha):
  rng = np.random.default_rng(int(alpha * 10))
  e = blobs(1, 4, n=60)
  s = rng.uniform(0.05, 1, 60)
  valid = rng.uniform(size=60) > 0.3
  fn = counting_jit(lambda *a: grouping.sequential_seeds(*a[:3], 8, a[3]))
  idx, ok = fn(jnp.asarray(e, jnp.float32), jnp.asarray(s, jnp.float32), valid, alpha)
  ref = seeds_reference(e, s, valid, 8, alpha)
  assert np.asarray(idx)[np.asarray(ok)].tolist() == ref
  # Fewer valid pixels than seeds: the rest are marked invalid.
  few = np.zeros(60, bool)
  few[[3, 17, 40]] = True
  idx, ok = fn(jnp.asarray(e, jnp.float32), jnp.asarray(s, jnp.float32), few, alpha)
  assert np.asarray(ok).sum() == 3 and sorted(np.asarray(idx)[np.asarray(ok)].tolist()) == [3, 17, 40]
  assert fn.traces == 1


@pytest.mark.parametrize("num_clusters,bandwidth", [(1, 1.0), (3, 0.8), (5, 1.2)])
def test_flat_mean_shift_matches_sklearn(num_clusters, bandwidth):
  from sklearn.cluster import MeanShift
  x = blobs(num_clusters, num_clusters)
  rng = np.random.default_rng(7)
  seeds = x[rng.choice(len(x), 12, replace=False)] + rng.normal(0, 0.3, (12, 2))
  seeds[0] = [40.0, 40.0]  # sees no point: dropped
  max_iter = 50
  ref = MeanShift(bandwidth=bandwidth, seeds=seeds, max_iter=max_iter).fit(x)
  with jax.enable_x64(True):
    modes, counts = grouping.mean_shift(jnp.asarray(x), jnp.ones(len(x), bool), jnp.asarray(seeds), bandwidth,
                                        max_iter + 1)
    centers, keep = grouping.merge_modes(modes, counts, bandwidth)
    labels = grouping.nearest_mode(jnp.asarray(x), centers, keep)
  centers, keep = np.asarray(centers), np.asarray(keep)
  assert keep.sum() == len(ref.cluster_centers_)
  np.testing.assert_allclose(centers[keep], ref.cluster_centers_, rtol=1e-12, atol=1e-12)
  np.testing.assert_array_equal(np.asarray(labels), ref.labels_)


def mean_shift_reference(x, seeds, h, iterations, kernel, kappa=None):
  """The weighted-mean update of each seed (Comaniciu & Meer 2002) with a Gaussian or von Mises-Fisher kernel."""
  out = []
  for m in seeds:
    for _ in range(iterations):
      if kernel == "gaussian":
        w = np.exp(-np.sum((x - m) ** 2, 1) / (2 * h * h))
      else:
        w = np.exp(kappa * x @ m)
      new = w @ x / w.sum()
      if kernel == "vmf":
        new /= np.linalg.norm(new)
      shift = np.linalg.norm(new - m)
      m = new
      if shift <= 1e-3 * h:
        break
    out.append(m)
  return np.array(out)


@pytest.mark.parametrize("kernel", ["gaussian", "vmf"])
def test_kernel_mean_shift_matches_numpy(kernel):
  x = blobs(2, 3, n=80, dim=3)
  if kernel == "vmf":
    x /= np.linalg.norm(x, axis=1, keepdims=True)
  seeds = x[:6]
  ref = mean_shift_reference(x, seeds, 0.5, 30, kernel, kappa=10.0)
  with jax.enable_x64(True):
    modes, _ = grouping.mean_shift(jnp.asarray(x), jnp.ones(len(x), bool), jnp.asarray(seeds), 0.5, 30, kernel,
                                   kappa=10.0)
  np.testing.assert_allclose(np.asarray(modes), ref, rtol=1e-10, atol=1e-10)
  # Invalid points take no part: the same modes as without them.
  extra = np.concatenate([x, np.full((5, 3), 0.577)])
  with jax.enable_x64(True):
    masked, _ = grouping.mean_shift(jnp.asarray(extra), jnp.arange(len(extra)) < len(x), jnp.asarray(seeds), 0.5,
                                    30, kernel, kappa=10.0)
  np.testing.assert_allclose(np.asarray(masked), ref, rtol=1e-10, atol=1e-10)


def test_mean_shift_compiles_once_for_any_number_of_clusters():
  fn = counting_jit(lambda x, s: grouping.merge_modes(*grouping.mean_shift(x, jnp.ones(len(x), bool), s, 1.0, 20), 1.0))
  found = []
  for k in (1, 3, 6):
    x = blobs(10 + k, k).astype(np.float32)
    _, keep = fn(x, x[:16])
    found.append(int(np.asarray(keep).sum()))
  assert fn.traces == 1
  assert found[0] == 1 and found[2] > found[1] > 1


@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize("seed,density", [(0, 0.45), (1, 0.6), (2, 0.0), (3, 1.0)])
def test_connected_components_match_scipy(connectivity, seed, density):
  mask = np.random.default_rng(seed).uniform(size=(17, 23)) < density
  structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
  ref, n = ndimage.label(mask, structure)
  fn = counting_jit(grouping.connected_components, static_argnums=1)
  ours, count = fn(mask, connectivity)
  np.testing.assert_array_equal(np.asarray(ours), ref)
  assert int(count) == n


def test_connected_components_long_snake_and_no_recompile():
  mask = np.zeros((15, 15), bool)
  mask[::2] = True
  mask[1::4, -1] = True
  mask[3::4, 0] = True  # one 4-connected path through every row
  fn = counting_jit(lambda m: grouping.connected_components(m))
  labels, count = fn(mask)
  assert int(count) == 1 and np.asarray(labels)[mask].min() == 1
  labels, count = fn(np.random.default_rng(0).uniform(size=(15, 15)) < 0.5)
  assert int(count) > 1 and fn.traces == 1


@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize("seed", [0, 1])
def test_connected_components_within_regions_match_scipy_per_region(connectivity, seed):
  """Neighbours join only inside one region: scipy.ndimage.label of each region's mask, the components of all
  regions numbered together in raster order of their first pixel."""
  rng = np.random.default_rng(seed)
  regions = rng.integers(0, 3, (17, 23))
  mask = rng.uniform(size=(17, 23)) < 0.8
  structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
  first, parts = [], []
  for r in range(3):
    lab, n = ndimage.label(mask & (regions == r), structure)
    for k in range(1, n + 1):
      part = lab == k
      first.append(np.flatnonzero(part)[0])
      parts.append(part)
  ref = np.zeros(mask.shape, np.int32)
  for number, k in enumerate(np.argsort(first)):
    ref[parts[k]] = number + 1
  ours, count = jax.jit(grouping.connected_components, static_argnums=1)(mask, connectivity, regions)
  np.testing.assert_array_equal(np.asarray(ours), ref)
  assert int(count) == len(parts) > 3
