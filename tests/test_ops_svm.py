"""R-CNN's SVM stage (segjax.ops.svm): the hinge-loss linear SVM against scikit-learn's liblinear, and hard negative
mining on a separable toy set."""
import numpy as np
import pytest

from segjax.ops import svm


def _objective(w, b, x, y, C, positive_weight, bias_multiplier):
  """liblinear's primal with the bias as a feature of value bias_multiplier: 1/2 |(w, b/B)|^2 + sum C_i hinge_i."""
  margins = y * (x @ w + b)
  weights = np.where(y > 0, C * positive_weight, C)
  return 0.5 * (w @ w + (b / bias_multiplier) ** 2) + np.sum(weights * np.maximum(0, 1 - margins))


def test_linear_svm_reaches_liblinears_optimum():
  """The same problem through scikit-learn's LinearSVC (liblinear's dual solver, loss="hinge", intercept_scaling as
  the bias feature, class_weight as the positive weight): the objectives agree, and so do the weights."""
  svm_module = pytest.importorskip("sklearn.svm")
  rng = np.random.default_rng(0)
  x = np.concatenate([rng.normal(0.7, 1.0, (60, 5)), rng.normal(-0.7, 1.0, (140, 5))])  # overlapping classes
  y = np.concatenate([np.ones(60), -np.ones(140)])
  kwargs = dict(C=0.5, positive_weight=2.0, bias_multiplier=10.0)
  w, b = svm.train_linear_svm(x, y, tol=1e-8, max_epochs=20_000, **kwargs)
  reference = svm_module.LinearSVC(loss="hinge", dual=True, C=0.5, class_weight={1: 2.0, -1: 1.0},
                                   intercept_scaling=10.0, tol=1e-10, max_iter=200_000).fit(x, y)
  w_ref, b_ref = reference.coef_[0], reference.intercept_[0]
  ours, theirs = _objective(w, b, x, y, **kwargs), _objective(w_ref, b_ref, x, y, **kwargs)
  assert ours <= theirs * (1 + 1e-6)
  np.testing.assert_allclose(ours, theirs, rtol=1e-5)
  np.testing.assert_allclose(np.append(w, b), np.append(w_ref, b_ref), atol=1e-3)


def test_hard_negative_mining_converges_on_a_separable_set():
  """Positives around +mu, many negatives around -mu, separable with a wide gap: after mining, every training point
  is classified with margin (y f(x) >= 1, up to the solver's tolerance), the cache keeps a fraction of the
  negatives, and the SVM equals the one trained on all negatives (those left out lie beyond the margin)."""
  rng = np.random.default_rng(1)
  mu = np.array([3.0, 1.0, -2.0, 0.5])
  positives = mu + rng.normal(0, 0.5, (40, 4))
  negatives = -mu + rng.normal(0, 0.5, (3000, 4))
  kwargs = dict(C=10.0, positive_weight=2.0, bias_multiplier=1.0, tol=1e-6)
  w, b, kept = svm.hard_negative_mining(positives, negatives, chunk_size=300, retrain_limit=50, **kwargs)
  assert ((positives @ w + b) >= 1 - 1e-3).all()
  assert ((negatives @ w + b) <= -1 + 1e-3).all()
  assert 0 < len(kept) < len(negatives) // 10
  x = np.concatenate([positives, negatives])
  y = np.concatenate([np.ones(40), -np.ones(3000)])
  w_all, b_all = svm.train_linear_svm(x, y, **kwargs)
  np.testing.assert_allclose(np.append(w, b), np.append(w_all, b_all), atol=1e-3)


def test_class_svms_take_each_classs_rows_as_positives():
  rng = np.random.default_rng(2)
  centres = np.array([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]])
  labels = np.repeat([0, 1, 2], 50)
  features = centres[labels] + rng.normal(0, 0.5, (150, 2))
  weights, biases = svm.train_class_svms(features, labels, 3, C=1.0, chunk_size=40)
  scores = features @ weights.T + biases
  assert (weights[0] == 0).all()
  for k in (1, 2):
    assert ((scores[:, k] > 0) == (labels == k)).all()


def test_class_negatives_follow_the_definition_row_by_row():
  """Row r is a negative of class k iff no valid class-k object overlaps it at `threshold` or more (checked by a loop
  over rows, classes and objects); invalid objects, and classes absent from the image, exclude nothing."""
  rng = np.random.default_rng(3)
  overlaps = rng.uniform(0, 0.6, (6, 40))
  classes = np.array([1, 1, 2, 3, 2, 1])
  valid = np.array([True, True, True, False, True, False])
  ours = svm.class_negatives(overlaps, classes, valid, 5, 0.3)
  for r, k in np.ndindex(40, 5):
    blocking = [m for m in range(6) if valid[m] and classes[m] == k and overlaps[m, r] >= 0.3]
    assert ours[r, k] == (not blocking), (r, k)
  assert ours[:, 3].all() and ours[:, 4].all() and not ours[:, 1].all()


def test_feature_scale_brings_the_mean_norm_to_twenty():
  x = np.random.default_rng(4).normal(0, 3, (50, 7))
  assert np.isclose(np.mean(np.linalg.norm(x * svm.feature_scale(x), axis=1)), 20.0)
