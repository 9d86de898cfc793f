"""Detection and segmentation losses: sigmoid focal, Dice (SOLOv2, Panoptic FCN's weighted one), smooth L1,
cross-entropy with ignore.

Values and gradients follow torchvision.ops.sigmoid_focal_loss and torch.nn.functional (smooth_l1_loss,
cross_entropy); the Dice losses follow the official implementations (WXinlong/SOLO, dvlab-research/PanopticFCN).
"""
import jax
import jax.numpy as jnp

from segjax.constants import IGNORE_LABEL

REDUCTIONS = ("none", "mean", "sum")


def _reduce(loss, reduction):
  if reduction == "none":
    return loss
  if reduction == "mean":
    return jnp.mean(loss)
  if reduction == "sum":
    return jnp.sum(loss)
  raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _check_same_shape(x, y, x_name, y_name):
  if jnp.shape(x) != jnp.shape(y):
    raise ValueError(f"{y_name} must have the shape of {x_name} {jnp.shape(x)}, got {jnp.shape(y)}")


def sigmoid_focal_loss(logits, targets, alpha=0.25, gamma=2.0, reduction="none"):
  """Focal loss (Lin et al. 2017, RetinaNet, Eqn. 5): -alpha_t (1 - p_t)^gamma log(p_t), elementwise.

  Args:
    logits: [...] float.
    targets: [...] float in {0, 1} (or soft), same shape.
    alpha: weight of positives in [0, 1], or -1 for no weighting.
    gamma: focusing exponent.
    reduction: "none", "mean" or "sum".
  """
  _check_same_shape(logits, targets, "logits", "targets")
  if not (0 <= alpha <= 1 or alpha == -1):
    raise ValueError(f"alpha must be in [0, 1] or -1, got {alpha}")
  p = jax.nn.sigmoid(logits)
  ce = (1 - targets) * logits - jax.nn.log_sigmoid(logits)  # binary_cross_entropy_with_logits
  p_t = p * targets + (1 - p) * (1 - targets)
  # An integer gamma uses integer_pow, whose gradient at 1 - p_t = 0 is finite as torch's pow.
  loss = ce * (1 - p_t) ** (int(gamma) if float(gamma).is_integer() else gamma)
  if alpha >= 0:
    loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
  return _reduce(loss, reduction)


def dice_loss(mask_logits, targets, valid=None, eps=1e-3):
  """SOLOv2 Dice loss (Wang et al. 2020, Eqn. 2-3): mean over valid instances of
  1 - 2 sum(p q) / ((sum p^2 + eps) + (sum q^2 + eps)), p = sigmoid(mask_logits).

  Args:
    mask_logits: [K, ...] mask logits, one instance per row.
    targets: [K, ...] binary target masks.
    valid: optional [K] bool; padded instances are left out. None: all valid.
    eps: added to each sum of squares (SOLOv2 uses 0.001).

  Returns:
    scalar loss; 0 when no instance is valid.
  """
  _check_same_shape(mask_logits, targets, "mask_logits", "targets")
  num = jnp.shape(mask_logits)[0]
  if valid is not None and jnp.shape(valid) != (num,):
    raise ValueError(f"valid must have shape ({num},), got {jnp.shape(valid)}")
  p = jax.nn.sigmoid(mask_logits).reshape(num, -1)
  q = targets.reshape(num, -1).astype(p.dtype)
  a = jnp.sum(p * q, axis=1)
  b = jnp.sum(p * p, axis=1) + eps
  c = jnp.sum(q * q, axis=1) + eps
  loss = 1 - 2 * a / (b + c)
  weight = jnp.ones(num, p.dtype) if valid is None else valid.astype(p.dtype)
  return jnp.sum(loss * weight) / jnp.maximum(jnp.sum(weight), 1)


def smooth_l1_loss(inputs, targets, beta=1.0, reduction="mean"):
  """Smooth L1 (Girshick 2015, Fast R-CNN, Eqn. 3, with transition point beta) as F.smooth_l1_loss:
  0.5 d^2 / beta where |d| < beta, else |d| - 0.5 beta; beta = 0 gives L1."""
  _check_same_shape(inputs, targets, "inputs", "targets")
  if beta < 0:
    raise ValueError(f"beta must be >= 0, got {beta}")
  delta = inputs - targets
  diff = delta * jnp.sign(delta)  # |delta| with torch's gradient sign(delta), which is 0 at 0
  if beta == 0:
    loss = diff
  else:
    loss = jnp.where(diff < beta, 0.5 * diff**2 / beta, diff - 0.5 * beta)
  return _reduce(loss, reduction)


def softmax_cross_entropy(logits, labels, ignore_index=IGNORE_LABEL, reduction="mean", weights=None):
  """Softmax cross-entropy over the last axis, as F.cross_entropy(ignore_index=..., weight=...).

  Args:
    logits: [..., L] float.
    labels: [...] int in [0, L) or ignore_index.
    ignore_index: label value that contributes nothing.
    reduction: "none" (0 at ignored entries), "sum", or "mean" = sum of weighted losses over the sum of
      the weights of non-ignored entries; when every entry is ignored the mean is 0 (torch gives NaN).
    weights: optional [L] per-class weights.
  """
  if jnp.shape(labels) != jnp.shape(logits)[:-1]:
    raise ValueError(f"labels must have shape {jnp.shape(logits)[:-1]} (logits {jnp.shape(logits)} without "
                     f"the class axis), got {jnp.shape(labels)}")
  num_classes = jnp.shape(logits)[-1]
  if weights is not None and jnp.shape(weights) != (num_classes,):
    raise ValueError(f"weights must have shape ({num_classes},), got {jnp.shape(weights)}")
  if reduction not in REDUCTIONS:
    raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
  valid = labels != ignore_index
  safe_labels = jnp.where(valid, labels, 0)
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  nll = -jnp.take_along_axis(log_probs, safe_labels[..., None], axis=-1)[..., 0]
  weight = valid.astype(nll.dtype)
  if weights is not None:
    weight = weight * jnp.asarray(weights, nll.dtype)[safe_labels]
  loss = nll * weight
  if reduction == "mean":
    total = jnp.sum(weight)
    return jnp.sum(loss) / jnp.where(total > 0, total, 1)
  return _reduce(loss, reduction)


def pixel_weighted_cross_entropy(logits, labels, pixel_weights, ignore_index=IGNORE_LABEL):
  """U-Net's energy (Ronneberger et al. 2015, Eq. 1), E = sum_x w(x) (-log p_l(x)(x)), over the labelled pixels,
  divided by their number (0 when none): the mean cross entropy when w is 1, and with the weight map of Eq. 2 (mean
  1 over an image, segjax/data/unet_weights.py) on that scale.

  Args:
    logits: [..., L] float.
    labels: [...] int in [0, L) or ignore_index.
    pixel_weights: [...] float, w(x).
    ignore_index: label value that contributes nothing.
  """
  if jnp.shape(pixel_weights) != jnp.shape(labels):
    raise ValueError(f"pixel_weights must have the shape of labels {jnp.shape(labels)}, got {jnp.shape(pixel_weights)}")
  nll = softmax_cross_entropy(logits, labels, ignore_index=ignore_index, reduction="none")
  count = jnp.sum(labels != ignore_index)
  return jnp.sum(nll * pixel_weights.astype(nll.dtype)) / jnp.maximum(count, 1).astype(nll.dtype)


def weighted_dice_loss(mask_logits, targets, weights, eps=1e-8):
  """Panoptic FCN's weighted Dice (Li et al. CVPR 2021, Eq. 6-7): the sum over rows of
  weight * (1 - 2 sum(p q) / max(sum p^2 + sum q^2, eps)), p = sigmoid(mask_logits), as the official loss.py.

  Args:
    mask_logits: [..., P] mask logits, one mask per row.
    targets: [..., P] soft or binary target masks.
    weights: [...] per-row weights (the caller normalises a thing's k weights to sum 1; 0 leaves a row out).
    eps: floor of the denominator (the official 1e-8).
  """
  _check_same_shape(mask_logits, targets, "mask_logits", "targets")
  if jnp.shape(weights) != jnp.shape(mask_logits)[:-1]:
    raise ValueError(f"weights must have shape {jnp.shape(mask_logits)[:-1]}, got {jnp.shape(weights)}")
  p = jax.nn.sigmoid(mask_logits)
  q = targets.astype(p.dtype)
  dice = 1 - 2 * jnp.sum(p * q, -1) / jnp.maximum(jnp.sum(p * p, -1) + jnp.sum(q * q, -1), eps)
  return jnp.sum(dice * weights)
