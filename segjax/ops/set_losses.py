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
  return iou, hungarian_match(-iou, target_valid, num_candidates)


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


def hungarian_match(cost, target_valid, num_candidates=None):
  """The assignment of the valid targets (columns of cost [T, N]) to distinct rows of least summed cost, held
  fixed in the gradient; with `num_candidates`, only the first num_candidates rows may take a valid target.
  Returns match bool [T, N]."""
  cost = jax.lax.stop_gradient(cost)
  if num_candidates is not None:
    cost = jnp.where(jnp.arange(cost.shape[0])[:, None] < num_candidates, cost, jnp.inf)
  # Padded targets cost nothing anywhere.
  cost = jnp.where(target_valid[None, :], cost, 0.0)
  rows, cols, _ = linear_sum_assignment(cost)
  return jnp.zeros(cost.shape, bool).at[rows, cols].set(True) & target_valid[None, :]


def monotonic_score_bce(score_logits, labels):
  """The monotonic score loss of Recurrent Attention (Ren & Zemel, CVPR 2017, Sec. 3.6) per step:
  -s*_t log(min_{t' <= t} s_t') - (1 - s*_t) log(1 - max_{t' >= t} s_t'), so a step is only confident if every
  earlier step is, and only unconfident if every later step is. s = sigmoid(score_logits [T]); labels [T] in {0, 1}.
  The sigmoid is monotonic, so the running min / max are taken over the logits."""
  running_min = jax.lax.cummin(score_logits, axis=0)
  running_max = jax.lax.cummax(score_logits, axis=0, reverse=True)
  return -(labels * jax.nn.log_sigmoid(running_min) + (1 - labels) * jax.nn.log_sigmoid(-running_max))


def recurrent_attention_loss(mask_probs, box_probs, box_params, score_logits, target_masks, target_boxes,
                             target_box_params, target_valid, box_weight=1.0, coord_weight=1.0, score_weight=1.0,
                             assignment=None):
  """Eq. 21 of Ren & Zemel (CVPR 2017) for one image: L = L_y + lambda_b L_b + lambda_s L_s.

    L_y = -1/N max_delta sum_{t, j} delta_{t, j} f_IoU(y_t, y*_j)       (Hungarian matching on the mask IoU)
    L_b = 1/N min_delta' sum_{t, j} delta'_{t, j} (-f_IoU(b_t, b*_j) + coord_weight |theta_t - theta*_j|^2)
    L_s = 1/T sum_t monotonic BCE(s_t, s*_t),  s*_t = [t < n]

  with f_IoU the relaxed IoU (`soft_iou`), N = max(n, 1) for n valid targets, b_t the step's soft box mask and
  theta its normalised box coordinates (centre and log extent). The box matching minimises the box loss itself.
  Both matchings assign the n targets to the first n steps, as the authors' code does (renmengye/rec-attend-public
  modellib.py f_segm_match multiplies the IoU and the matching by the ground-truth score sequence s* on the steps'
  axis as well as the targets'): every step before the n-th is matched, so s*_t, the steps that are matched, is
  [t < n], and an early step cannot be left unmatched with a later one taking its instance. `assignment` [T, N]
  (bool, step t to target j; the authors' fixed_order) replaces both matchings where given.

  Args:
    mask_probs, box_probs: [T, P] the steps' masks and box masks (probabilities), flattened.
    box_params: [T, 4]; score_logits: [T].
    target_masks, target_boxes: [N, P] ground-truth masks and filled boxes in [0, 1] (padded), T >= N.
    target_box_params: [N, 4]; target_valid: [N] bool.

  Returns:
    (loss, {"mask_iou", "box_iou", "box_coord", "score"}): the terms before weighting (mask_iou and box_iou are
    the negated mean matched IoUs).
  """
  count = target_valid.sum()
  n = jnp.maximum(count, 1).astype(mask_probs.dtype)
  mask_iou = soft_iou(mask_probs, target_masks)
  box_iou = soft_iou(box_probs, target_boxes)
  coord = jnp.sum(jnp.square(box_params[:, None, :] - target_box_params[None, :, :]), axis=-1)
  if assignment is None:
    mask_match = hungarian_match(-mask_iou, target_valid, count)
    box_match = hungarian_match(-box_iou + coord_weight * coord, target_valid, count)
  else:
    mask_match = box_match = assignment & target_valid[None, :]
  mask_term = -jnp.sum(jnp.where(mask_match, mask_iou, 0.0)) / n
  box_iou_term = -jnp.sum(jnp.where(box_match, box_iou, 0.0)) / n
  coord_term = jnp.sum(jnp.where(box_match, coord, 0.0)) / n
  labels = (jnp.arange(score_logits.shape[0]) < count).astype(score_logits.dtype)
  score_term = monotonic_score_bce(score_logits, labels).mean()
  total = mask_term + box_weight * (box_iou_term + coord_weight * coord_term) + score_weight * score_term
  return total, {"mask_iou": mask_term, "box_iou": box_iou_term, "box_coord": coord_term, "score": score_term}
