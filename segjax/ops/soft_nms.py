"""Soft-NMS (Bodla et al., ICCV 2017, Algorithm 1): sequential decay of the scores that overlap a picked detection.

Repeatedly pick the highest remaining score M and multiply every remaining score by f(iou(M, b_i)):
  linear:   f = 1 - iou where iou >= N_t, else 1 (Eq. 2)
  gaussian: f = exp(-iou^2 / sigma)               (Eq. 3)
Hard NMS is the linear rule with f = 0 above N_t. The loop runs over all N candidates with static shapes;
overlaps come precomputed, so the same function serves boxes (box IoU) and masks (mask IoU, the SOLOv2 ablation
against Matrix NMS). Only pairs of the same label interact when labels are given (per-class NMS).
"""
import jax
import jax.numpy as jnp

from segjax.ops.boxes import box_iou
from segjax.ops.masks import mask_iou

METHODS = ("linear", "gaussian", "hard")


def soft_nms(iou, scores, labels=None, method="gaussian", sigma=0.5, iou_threshold=0.3):
  """Returns (decayed scores [N] as each was when picked, pick order [N] int32).

  Args:
    iou: [N, N] pairwise overlaps.
    scores: [N]; labels: optional [N] ints.
    method: "linear", "gaussian" or "hard".
  """
  if method not in METHODS:
    raise ValueError(f"soft_nms: method must be one of {METHODS}; got {method!r}")
  n = scores.shape[0]
  if iou.shape != (n, n):
    raise ValueError(f"soft_nms: iou must be [{n}, {n}] for {n} scores; got {iou.shape}")
  if labels is not None:
    iou = jnp.where(labels[:, None] == labels[None, :], iou, 0.0)

  def decay(overlap):
    if method == "gaussian":
      return jnp.exp(-jnp.square(overlap) / sigma)
    if method == "linear":
      return jnp.where(overlap >= iou_threshold, 1 - overlap, 1.0)
    return jnp.where(overlap >= iou_threshold, 0.0, 1.0)

  def step(carry, t):
    current, picked, order = carry
    m = jnp.argmax(jnp.where(picked, -jnp.inf, current))
    picked = picked.at[m].set(True)
    current = jnp.where(picked, current, current * decay(iou[m]))
    return (current, picked, order.at[t].set(m)), None

  init = (scores.astype(jnp.float32), jnp.zeros((n,), bool), jnp.zeros((n,), jnp.int32))
  (current, _, order), _ = jax.lax.scan(step, init, jnp.arange(n))
  return current, order


def soft_nms_boxes(boxes, scores, labels=None, method="gaussian", sigma=0.5, iou_threshold=0.3):
  """`soft_nms` on box IoU; boxes [N, 4] (x1, y1, x2, y2)."""
  return soft_nms(box_iou(boxes, boxes), scores, labels, method, sigma, iou_threshold)


def soft_nms_masks(masks, scores, labels=None, method="gaussian", sigma=0.5, iou_threshold=0.3):
  """`soft_nms` on mask IoU; masks [N, H, W] binary."""
  flat = masks.reshape(masks.shape[0], -1).astype(jnp.float32)
  return soft_nms(mask_iou(flat), scores, labels, method, sigma, iou_threshold)
