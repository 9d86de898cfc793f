"""R-CNN's class-specific bounding-box regression (Girshick et al. 2014, Appendix C), in closed form.

For a proposal P and its ground-truth box G (rcnn: proposals with IoU > 0.6), the targets are
t_x = (G_x - P_x) / P_w, t_y = (G_y - P_y) / P_h, t_w = log(G_w / P_w), t_h = log(G_h / P_h) (centres and sizes;
segjax.ops.boxes.encode_boxes with unit weights). Per class and per target, ridge regression on the features
(pool5 in the paper) with lambda = 1000: rcnn's rcnn_train_bbox_regressor.m appends a column of ones (the bias,
regularised with the weights), centres the targets on their mean mu and solves (A^T A + lambda I) beta = A^T (t - mu)
by Cholesky. Its whitening of the targets (T, T^-1) leaves the predictions unchanged (ridge is linear in the
targets), so it is left out. Predictions: A beta + mu.
"""
import numpy as np

from segjax.ops.boxes import encode_boxes


def fit_ridge(features, targets, lam=1000.0):
  """features [N, D], targets [N, T] -> (beta [D + 1, T], mu [T]) in float64: the ridge solution above."""
  a = np.concatenate([np.asarray(features, np.float64), np.ones((len(features), 1))], 1)
  targets = np.asarray(targets, np.float64)
  mu = targets.mean(0)
  gram = a.T @ a + lam * np.eye(a.shape[1])
  chol = np.linalg.cholesky(gram)
  beta = np.linalg.solve(chol.T, np.linalg.solve(chol, a.T @ (targets - mu)))
  return beta, mu


def predict_ridge(features, beta, mu):
  """features [N, D] -> targets [N, T] of fit_ridge's (beta, mu)."""
  return np.asarray(features, np.float64) @ beta[:-1] + beta[-1] + mu


def fit_class_box_regressors(features, proposals, gt_boxes, classes, num_classes, lam=1000.0):
  """One ridge regressor per class 1..K-1 from the rows of that class: features [N, D], proposals and their matched
  gt_boxes [N, 4] (x1, y1, x2, y2), classes [N]. Returns {class: (beta [D + 1, 4], mu [4])}, classes without rows
  left out."""
  targets = np.asarray(encode_boxes(np.asarray(gt_boxes, np.float32), np.asarray(proposals, np.float32)),
                       np.float64)
  classes = np.asarray(classes)
  return {k: fit_ridge(np.asarray(features)[classes == k], targets[classes == k], lam)
          for k in range(1, num_classes) if (classes == k).any()}
