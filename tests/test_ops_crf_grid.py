"""Grid (4-connected Potts) CRF inference against exact marginals and MAP by enumerating every labelling of
tiny grids."""
import itertools

import jax
import numpy as np

from segjax.ops.crf.grid import grid_gibbs, grid_loopy_bp, grid_mean_field


def _energy(labels, unary, weight):
  e = unary[np.arange(unary.shape[0])[:, None], np.arange(unary.shape[1])[None, :], labels].sum()
  e += weight * ((labels[1:] != labels[:-1]).sum() + (labels[:, 1:] != labels[:, :-1]).sum())
  return e


def _exact(unary, weight):
  """(marginals [H, W, L], MAP labels) of P ∝ exp(-E) by enumeration, in float64."""
  h, w, num_labels = unary.shape
  configs = np.array(list(itertools.product(range(num_labels), repeat=h * w))).reshape(-1, h, w)
  energies = np.array([_energy(c, unary, weight) for c in configs])
  p = np.exp(-(energies - energies.min()))
  p /= p.sum()
  marginals = np.zeros(unary.shape)
  for c, pc in zip(configs, p):
    marginals[np.arange(h)[:, None], np.arange(w)[None, :], c] += pc
  return marginals, configs[np.argmin(energies)]


def test_belief_propagation_is_exact_on_a_chain():
  rng = np.random.default_rng(0)
  unary = rng.normal(size=(1, 6, 3))
  marginals, map_labels = _exact(unary, 0.8)
  np.testing.assert_allclose(np.asarray(grid_loopy_bp(unary, 0.8, 10, "sum")), marginals, atol=1e-5)
  max_beliefs = np.asarray(grid_loopy_bp(unary, 0.8, 10, "max"))
  np.testing.assert_array_equal(max_beliefs.argmax(-1), map_labels)


def test_loopy_inference_approximates_the_exact_marginals_on_a_loopy_grid():
  rng = np.random.default_rng(1)
  unary = rng.normal(size=(3, 3, 2)) * 1.5
  marginals, map_labels = _exact(unary, 0.5)
  bp = np.asarray(grid_loopy_bp(unary, 0.5, 30, "sum"))
  mf = np.asarray(grid_mean_field(unary, 0.5, 30))
  # Loopy BP overcounts around the 4-cycles, mean field ignores correlations: both stay close at this weak
  # coupling, BP closer (Weiss 2000; the decks' comparison). Zero coupling makes both exact.
  assert np.abs(bp - marginals).max() < 0.05
  assert np.abs(mf - marginals).max() < 0.15
  assert np.abs(bp - marginals).mean() <= np.abs(mf - marginals).mean()
  np.testing.assert_array_equal(np.asarray(grid_loopy_bp(unary, 0.5, 30, "max")).argmax(-1), map_labels)
  independent = np.exp(-unary) / np.exp(-unary).sum(-1, keepdims=True)
  np.testing.assert_allclose(np.asarray(grid_mean_field(unary, 0.0, 3)), independent, atol=1e-6)


def test_gibbs_sampling_converges_to_the_exact_marginals():
  rng = np.random.default_rng(2)
  unary = rng.normal(size=(2, 3, 3))
  marginals, _ = _exact(unary, 1.0)
  estimate, sample = grid_gibbs(jax.random.key(0), unary, 1.0, num_sweeps=4000, burn_in=200)
  # 3800 correlated samples: Monte Carlo error of a frequency is well under 0.03 here.
  assert np.abs(np.asarray(estimate) - marginals).max() < 0.04
  assert sample.shape == (2, 3)
