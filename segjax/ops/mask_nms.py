"""Matrix NMS (Wang et al., SOLOv2, NeurIPS 2020, Sec. 3.3.2 and Alg. 1): parallel soft suppression of masks.

Follows the official implementation (WXinlong/SOLO, matrix_nms): same-label IoUs only, sigma multiplies
the squared IoU in the Gaussian kernel. Where two masks are both empty their union is 0 and their IoU is
taken as 0 (as mmdeploy's export of it), so zero-padded masks leave the other scores unchanged.
"""
import jax
import jax.numpy as jnp

from segjax.ops.masks import mask_iou

KERNELS = ("gaussian", "linear")


def matrix_nms(masks, labels, scores, kernel="gaussian", sigma=2.0, mask_area=None):
  """Decays the scores of masks sorted by descending score.

  decay_j = min_i f(iou_ij) / f(max_k iou_ki) over i < j of the same label (Eqn. 4), with
  f(iou) = exp(-sigma iou^2) ("gaussian") or 1 - iou ("linear").

  Args:
    masks: [N, H, W] binary masks (bool or {0, 1}), sorted by descending score.
    labels: [N] int class labels.
    scores: [N] scores, descending.
    kernel: "gaussian" or "linear".
    sigma: Gaussian kernel coefficient.
    mask_area: optional [N] mask areas; defaults to masks.sum((1, 2)).

  Returns:
    [N] decayed scores, scores * decay.
  """
  if kernel not in KERNELS:
    raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
  if jnp.ndim(masks) != 3:
    raise ValueError(f"masks must have shape [N, H, W], got {jnp.shape(masks)}")
  num = masks.shape[0]
  for name, x in (("labels", labels), ("scores", scores), ("mask_area", mask_area)):
    if x is not None and jnp.shape(x) != (num,):
      raise ValueError(f"{name} must have shape ({num},) to match masks {masks.shape}, got {jnp.shape(x)}")
  labels = jnp.asarray(labels)
  flat = masks.reshape(num, -1).astype(jnp.float32)
  if mask_area is None:
    mask_area = flat.sum(axis=1)
  return matrix_nms_from_iou(mask_iou(flat, mask_area), labels, scores, kernel, sigma)


def matrix_nms_from_iou(iou, labels, scores, kernel="gaussian", sigma=2.0):
  """`matrix_nms` given the pairwise mask IoUs [N, N] of the masks sorted by descending score (the decay alone,
  without the IoU matrix both it and a sequential NMS start from)."""
  if kernel not in KERNELS:
    raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
  num = scores.shape[0]
  labels = jnp.asarray(labels)
  upper = jnp.arange(num)[:, None] < jnp.arange(num)[None, :]
  same_label = (labels[:, None] == labels[None, :]) & upper
  iou = jnp.where(same_label, iou, 0)
  # Compensation: how much suppressor i is itself suppressed, its max IoU with a higher-scored mask.
  compensate = jnp.max(iou, axis=0)[:, None]
  if kernel == "gaussian":
    decay = jnp.exp(-sigma * iou**2) / jnp.exp(-sigma * compensate**2)
  else:
    decay = (1 - iou) / (1 - compensate)
  return scores * jnp.min(decay, axis=0)


def matrix_nms_in_place(masks, scores, labels=None, kernel="gaussian", sigma=2.0):
  """`matrix_nms` of masks in any order: masks [..., N, H, W] binary, scores [..., N] (labels [..., N], default one
  class) -> the decayed scores [..., N] in the input order, each mask decayed by those scored above it. For models
  that emit their masks in an order of their own (a recurrent model's steps) and keep it."""
  n, h, w = masks.shape[-3:]
  labels = jnp.ones(scores.shape, jnp.int32) if labels is None else labels

  def one(m, s, l):
    order = jnp.argsort(-s)
    decayed = matrix_nms(m[order], l[order], s[order], kernel, sigma)
    return jnp.zeros_like(s).at[order].set(decayed)

  out = jax.vmap(one)(masks.reshape(-1, n, h, w), scores.reshape(-1, n), labels.reshape(-1, n))
  return out.reshape(scores.shape)
