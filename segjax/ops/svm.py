"""R-CNN's classifier stage (Girshick et al. 2014, Sec. 2.3 and Appendix B): per-class linear SVMs with hinge loss,
trained with hard negative mining on fixed features, in float64 NumPy (an offline stage, as rcnn's liblinear calls).

`train_linear_svm` solves liblinear's L1-loss (hinge) SVM, min_w 1/2 |w|^2 + sum_i C_i max(0, 1 - y_i w.x_i), with
the bias as an extra feature of value `bias_multiplier` (regularised, as liblinear's -B; rcnn: 10), C_i = C times
`positive_weight` for positives (rcnn: 2), by dual coordinate descent (Hsieh et al. 2008, Algorithm 1, L1-loss):
each dual variable in turn moved to the minimum of its coordinate and clipped to [0, C_i], until the projected
gradient's spread is below `tol` (liblinear's defaults, which rcnn used: 0.1, at most 1000 passes).
`hard_negative_mining` follows rcnn_train.m: the cache starts with the positives and the first chunk of negatives;
each chunk's negatives scoring above `hard_threshold` (-1.0001: inside the margin) join the cache, the SVM is
retrained on the cache whenever `retrain_limit` have joined, and cached negatives scoring below `evict_threshold`
(-1.2) leave it. Passes over the chunks repeat until one adds no hard negative: then every negative outside the cache
lies beyond the margin, so the cache's SVM is the SVM of all the data (those negatives' dual variables are 0).
"""
import numpy as np


def train_linear_svm(x, y, *, C=1e-3, positive_weight=1.0, bias_multiplier=10.0, tol=0.1, max_epochs=1000, seed=0):
  """x [N, D], y [N] in {+1, -1} -> (w [D], b): the hinge-loss SVM (see the module docstring)."""
  x = np.asarray(x, np.float64)
  y = np.where(np.asarray(y) > 0, 1.0, -1.0)
  xa = np.concatenate([x, np.full((len(x), 1), bias_multiplier)], 1)
  upper = np.where(y > 0, C * positive_weight, C)
  diagonal = np.sum(xa * xa, 1)
  alpha = np.zeros(len(x))
  w = np.zeros(xa.shape[1])
  rng = np.random.default_rng(seed)
  for _ in range(max_epochs):
    largest, smallest = -np.inf, np.inf
    for i in rng.permutation(len(x)):
      gradient = y[i] * (w @ xa[i]) - 1.0
      a = alpha[i]
      projected = gradient if 0 < a < upper[i] else (min(gradient, 0.0) if a == 0 else max(gradient, 0.0))
      largest, smallest = max(largest, projected), min(smallest, projected)
      if projected != 0:
        alpha[i] = min(max(a - gradient / diagonal[i], 0.0), upper[i])
        w += (alpha[i] - a) * y[i] * xa[i]
    if largest - smallest < tol:
      break
  return w[:-1], w[-1] * bias_multiplier


def hard_negative_mining(positives, negatives, *, chunk_size=500, hard_threshold=-1.0001, evict_threshold=-1.2,
                         retrain_limit=2000, max_passes=10, **svm_kwargs):
  """positives [P, D], negatives [N, D] -> (w [D], b, kept: indices of the negatives in the final cache).

  Chunks of `chunk_size` negatives stand for rcnn's images; see the module docstring."""
  positives, negatives = np.asarray(positives, np.float64), np.asarray(negatives, np.float64)
  starts = range(0, len(negatives), chunk_size)
  cache = np.zeros(len(negatives), bool)
  cache[:chunk_size] = True

  def train():
    x = np.concatenate([positives, negatives[cache]])
    y = np.concatenate([np.ones(len(positives)), -np.ones(int(cache.sum()))])
    return train_linear_svm(x, y, **svm_kwargs)

  w, b = train()
  for _ in range(max_passes):
    added = since_retrain = 0
    for start in starts:
      chunk = slice(start, start + chunk_size)
      hard = (negatives[chunk] @ w + b > hard_threshold) & ~cache[chunk]
      cache[chunk] |= hard
      added += int(hard.sum())
      since_retrain += int(hard.sum())
      if since_retrain > retrain_limit:
        w, b = train()
        cache &= ~((negatives @ w + b < evict_threshold) & cache)
        since_retrain = 0
    w, b = train()
    cache &= ~(negatives @ w + b < evict_threshold)
    if added == 0:
      break
  return w, b, np.flatnonzero(cache)


def class_negatives(overlaps, classes, valid, num_classes, threshold):
  """negative_mask [R, K] for `train_class_svms`: row r is a negative of class k when its overlap with every valid
  class-k object stays below `threshold` (R-CNN: box IoU 0.3, rcnn_train.m; SDS: region IoU 0.2, train_svms.m).
  overlaps [M, R] of the image's M objects with its R rows, classes [M], valid [M]; a class without objects in the
  image leaves every row a negative."""
  overlaps, classes, valid = np.asarray(overlaps), np.asarray(classes), np.asarray(valid, bool)
  best = np.zeros((overlaps.shape[1], num_classes))
  for k in range(num_classes):
    of_k = valid & (classes == k)
    if of_k.any():
      best[:, k] = overlaps[of_k].max(0)
  return best < threshold


def feature_scale(features, mean_norm=20.0):
  """The factor that brings the features' mean L2 norm to `mean_norm` (rcnn's feat_norm_mean: 20), computed on the
  training set and applied to every feature the SVMs score."""
  return mean_norm / np.mean(np.linalg.norm(np.asarray(features, np.float64), axis=1))


def train_class_svms(features, labels, num_classes, negative_mask=None, **kwargs):
  """R-CNN's per-class SVMs: features [N, D], labels [N] in 0..K-1 (0 background); for class k the rows labelled k
  are positives and the others negatives, except where negative_mask [N, K] is False (rcnn: a region overlapping a
  class-k box by IoU >= 0.3 is no negative of class k). Returns weights [K, D] and biases [K] (row 0 unused: 0)."""
  features, labels = np.asarray(features, np.float64), np.asarray(labels)
  weights, biases = np.zeros((num_classes, features.shape[1])), np.zeros(num_classes)
  for k in range(1, num_classes):
    negative = labels != k
    if negative_mask is not None:
      negative &= np.asarray(negative_mask)[:, k]
    weights[k], biases[k], _ = hard_negative_mining(features[labels == k], features[negative], **kwargs)
  return weights, biases
