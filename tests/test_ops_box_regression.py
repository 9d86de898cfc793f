"""R-CNN's class-specific box regression (segjax.ops.box_regression) against numpy.linalg.solve in float64."""
import numpy as np

from segjax.ops import box_regression


def test_ridge_equals_the_normal_equations_solved_by_numpy():
  """beta = (A^T A + lambda I)^-1 A^T (t - mean t), A = [X, 1], lambda 1000 (rcnn_train_bbox_regressor.m)."""
  rng = np.random.default_rng(0)
  x = rng.normal(0, 3.0, (200, 30))
  t = x[:, :4] * 0.1 + rng.normal(0, 0.05, (200, 4)) + np.array([0.1, -0.2, 0.3, 0.0])
  beta, mu = box_regression.fit_ridge(x, t, lam=1000.0)
  a = np.concatenate([x, np.ones((200, 1))], 1)
  expected = np.linalg.solve(a.T @ a + 1000.0 * np.eye(31), a.T @ (t - t.mean(0)))
  np.testing.assert_allclose(beta, expected, rtol=1e-10, atol=1e-12)
  np.testing.assert_allclose(mu, t.mean(0))
  np.testing.assert_allclose(box_regression.predict_ridge(x, beta, mu), a @ expected + t.mean(0), rtol=1e-10)


def test_class_regressors_fit_each_classs_targets():
  """Per class, the R-CNN targets of its rows; a proposal shifted by a known offset is moved back towards its box."""
  rng = np.random.default_rng(1)
  n = 300
  gt = np.concatenate([rng.uniform(0, 100, (n, 2)), np.zeros((n, 2))], 1)
  gt[:, 2:] = gt[:, :2] + rng.uniform(20, 60, (n, 2))
  shift = rng.normal(0, 0.1, (n, 2))
  size = gt[:, 2:] - gt[:, :2]
  proposals = gt - np.concatenate([shift * size, shift * size], 1)  # the same box moved by shift of its size
  classes = rng.integers(1, 3, n)
  features = np.concatenate([shift * 100, rng.normal(size=(n, 3))], 1)  # the offset is in the features
  regressors = box_regression.fit_class_box_regressors(features, proposals, gt, classes, 3, lam=1000.0)
  assert set(regressors) == {1, 2}
  for k, (beta, mu) in regressors.items():
    rows = classes == k
    a = np.concatenate([features[rows], np.ones((rows.sum(), 1))], 1)
    targets = np.stack([shift[rows, 0], shift[rows, 1], np.zeros(rows.sum()), np.zeros(rows.sum())], 1)
    expected = np.linalg.solve(a.T @ a + 1000.0 * np.eye(a.shape[1]), a.T @ (targets - targets.mean(0)))
    np.testing.assert_allclose(beta, expected, rtol=1e-4, atol=1e-6)
    predicted = box_regression.predict_ridge(features[rows], beta, mu)
    assert np.corrcoef(predicted[:, 0], shift[rows, 0])[0, 1] > 0.99
