"""Anchor / proposal to ground-truth matching and balanced sampling, as torchvision.models.detection._utils.

Static shapes: ground truth is padded to a fixed count with a validity mask; sampling returns masks.
"""
import jax
import jax.numpy as jnp

BELOW_LOW_THRESHOLD = -1
BETWEEN_THRESHOLDS = -2


def match_boxes(iou, gt_valid, high_threshold, low_threshold, allow_low_quality_matches):
  """Assigns each prediction its best ground truth, as torchvision's Matcher.

  Args:
    iou: [M_gt, N] match quality (e.g. box_iou(gt_boxes, anchors)).
    gt_valid: [M_gt] bool; padded ground truth (False) never matches.
    high_threshold: quality >= this is a match.
    low_threshold: quality in [low, high) gives BETWEEN_THRESHOLDS (-2), below low BELOW_LOW_THRESHOLD (-1).
    allow_low_quality_matches: also match every prediction that is the best (ties included) for some
      ground truth to its own best ground truth (Ren et al. 2015, Faster R-CNN Sec. 3.1.2).

  Returns:
    int32[N]: index of the matched ground truth, or -1 / -2.
  """
  if jnp.ndim(iou) != 2:
    raise ValueError(f"iou must have shape [M_gt, N], got {jnp.shape(iou)}")
  if jnp.shape(gt_valid) != iou.shape[:1]:
    raise ValueError(f"gt_valid must have shape ({iou.shape[0]},) to match iou {iou.shape}, "
                     f"got {jnp.shape(gt_valid)}")
  if low_threshold > high_threshold:
    raise ValueError(f"low_threshold ({low_threshold}) must be <= high_threshold ({high_threshold})")
  quality = jnp.where(gt_valid[:, None], iou, -jnp.inf)
  matched_vals = jnp.max(quality, axis=0)
  best_gt = jnp.argmax(quality, axis=0).astype(jnp.int32)
  matches = jnp.where(matched_vals < low_threshold, BELOW_LOW_THRESHOLD,
                      jnp.where(matched_vals < high_threshold, BETWEEN_THRESHOLDS, best_gt))
  if allow_low_quality_matches:
    best_for_gt = jnp.max(quality, axis=1, keepdims=True)
    is_best_for_some_gt = jnp.any((quality == best_for_gt) & gt_valid[:, None], axis=0)
    matches = jnp.where(is_best_for_some_gt, best_gt, matches)
  return matches


def _random_subset(key, eligible, count, max_count):
  """Bool mask of `count` (traced, <= max_count static) entries drawn uniformly without replacement."""
  priority = jnp.where(eligible, jax.random.uniform(key, eligible.shape), -1.0)
  _, top = jax.lax.top_k(priority, min(max_count, eligible.shape[0]))
  chosen = jnp.arange(top.shape[0]) < count
  return jnp.zeros(eligible.shape, bool).at[top].set(chosen)


def sample_balanced(key, labels, num_samples, positive_fraction):
  """Draws a fixed-size minibatch of positives and negatives (torchvision's BalancedPositiveNegativeSampler).

  At most int(num_samples * positive_fraction) positives are drawn, and negatives fill the rest up to
  num_samples; each group is drawn uniformly without replacement.

  Args:
    key: PRNG key.
    labels: [N] int, >= 1 positive, 0 negative, -1 ignored.
    num_samples: static int, the minibatch size.
    positive_fraction: static float in [0, 1].

  Returns:
    (pos_mask, neg_mask): bool [N] each.
  """
  if jnp.ndim(labels) != 1:
    raise ValueError(f"labels must have shape [N], got {jnp.shape(labels)}")
  if not 0.0 <= positive_fraction <= 1.0:
    raise ValueError(f"positive_fraction must be in [0, 1], got {positive_fraction}")
  if num_samples < 0:
    raise ValueError(f"num_samples must be >= 0, got {num_samples}")
  positive = labels >= 1
  negative = labels == 0
  max_pos = int(num_samples * positive_fraction)
  num_pos = jnp.minimum(jnp.sum(positive), max_pos)
  num_neg = jnp.minimum(jnp.sum(negative), num_samples - num_pos)
  key_pos, key_neg = jax.random.split(key)
  pos_mask = _random_subset(key_pos, positive, num_pos, max_pos)
  neg_mask = _random_subset(key_neg, negative, num_neg, num_samples)
  return pos_mask, neg_mask


def hardest(losses, valid, count):
  """Online hard example mining (Shrivastava et al. 2016; R-FCN Sec. 2, "Training"): the `count` valid entries of
  highest loss, as a bool mask [N] (ties: the earlier entry first, as a stable descending sort). Fewer when fewer are
  valid. The selection is a static-size top-k: no shape depends on the data.

  Args:
    losses: [N] float, the per-example loss (its gradient is not used: callers pass a stop-gradient value).
    valid: [N] bool; invalid entries are never chosen.
    count: static int, the number to choose (R-FCN: B = 128 of the image's RoIs).
  """
  if jnp.ndim(losses) != 1 or jnp.shape(valid) != jnp.shape(losses):
    raise ValueError(f"losses and valid must both have shape [N]; got {jnp.shape(losses)} and {jnp.shape(valid)}")
  n = losses.shape[0]
  _, top = jax.lax.top_k(jnp.where(valid, losses, -jnp.inf), min(count, n))
  return jnp.zeros(n, bool).at[top].set(valid[top])
