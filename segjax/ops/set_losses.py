"""Losses between a sequence of predicted instance masks and an unordered set of ground-truth instances.

Recurrent Instance Segmentation (Romera-Paredes & Torr, ECCV 2016, Eq. 3):

  l(Y_hat, s, Y) = min_delta  - sum_{t_hat, t} f_IoU(Y_hat_{t_hat}, Y_t) delta_{t_hat, t}
                              + lambda sum_{t_hat <= n_hat} f_BCE([t_hat <= n], s_{t_hat})

with the relaxed IoU f_IoU(y_hat, y) = <y_hat, y> / (|y_hat|_1 + |y|_1 - <y_hat, y>) (Eq. 2), delta an
assignment of the n ground-truth instances to distinct predictions, and n_hat = n + 2 predictions scored in
training. The assignment is the Hungarian one (`linear_sum_assignment`) on the negated IoU and is held fixed
in the gradient; ground truth is padded with a validity mask so shapes stay static.
"""
import jax
import jax.numpy as jnp

from segjax.ops.assignment import linear_sum_assignment


def soft_iou(predictions, targets, eps=1e-6):
  """Relaxed IoU [T, N] between mask probabilities predictions [T, P] and targets [N, P] (values in [0, 1])."""
  intersection = predictions @ targets.T
  union = predictions.sum(-1)[:, None] + targets.sum(-1)[None, :] - intersection
  return intersection / jnp.maximum(union, eps)


def matched_soft_iou(predictions, targets, target_valid, num_candidates):
  """The assignment of valid targets to distinct predictions among the first `num_candidates` that maximises
  the summed relaxed IoU. Returns (iou [T, N], match bool [T, N])."""
  num_predictions, num_targets = predictions.shape[0], targets.shape[0]
  if num_predictions < num_targets:
    raise ValueError(f"matched_soft_iou: {num_predictions} predictions cannot cover {num_targets} target slots")
  iou = soft_iou(predictions, targets)
  candidate = jnp.arange(num_predictions)[:, None] < num_candidates
  # Padded targets cost nothing anywhere; valid ones may only take one of the candidates.
  cost = jnp.where(target_valid[None, :], jnp.where(candidate, -jax.lax.stop_gradient(iou), jnp.inf), 0.0)
  rows, cols, _ = linear_sum_assignment(cost)
  match = jnp.zeros(iou.shape, bool).at[rows, cols].set(True) & target_valid[None, :]
  return iou, match


def recurrent_instance_loss(mask_probs, score_logits, target_masks, target_valid, bce_weight=1.0, extra_steps=2):
  """Eq. 3 of Romera-Paredes & Torr (2016) for one image.

  Args:
    mask_probs: [T, P] predicted masks (probabilities) in step order, flattened.
    score_logits: [T] logits of the confidence s_t.
    target_masks: [N, P] ground-truth masks in [0, 1] (padded), T >= N.
    target_valid: [N] bool.
    bce_weight: lambda.
    extra_steps: n_hat = n + extra_steps predictions are scored (2 in the paper).

  Returns:
    (loss, {"iou": matched IoU term, "score": BCE term}).
  """
  n = target_valid.sum()
  iou, match = matched_soft_iou(mask_probs, target_masks, target_valid, n + extra_steps)
  iou_term = -jnp.sum(jnp.where(match, iou, 0.0))
  steps = jnp.arange(score_logits.shape[0])
  labels = (steps < n).astype(score_logits.dtype)
  bce = jnp.maximum(score_logits, 0) - score_logits * labels + jnp.log1p(jnp.exp(-jnp.abs(score_logits)))
  score_term = jnp.sum(jnp.where(steps < n + extra_steps, bce, 0.0))
  return iou_term + bce_weight * score_term, {"iou": iou_term, "score": score_term}
