"""FCIS's per-RoI joint mask and class scores and its mask voting (Li et al. 2017, "Fully Convolutional
Instance-aware Semantic Segmentation", Sec. 3.1-3.2), as pure functions with static shapes.

The assembled inside / outside maps of a RoI come from position-sensitive pooling of the 2 k^2 (C + 1) score maps
(segjax.ops.roi.ps_roi_pool with group_size k and an M x M output, the reference's pooled_size 21, group_size 7).
Channel order of the pooled maps, as the reference (msracver/FCIS, fcis/symbols/resnet_v1_101_fcis.py, which
reshapes them to (num_classes, 2)): channel 2 c + 0 is class c's outside map, 2 c + 1 its inside map.
"""
import jax
import jax.numpy as jnp

from segjax.ops.boxes import box_iou


def joint_scores(pooled):
  """Joint mask prediction and classification of assembled maps pooled [..., M, M, 2 K] (K classes with the
  background) -> (class_logits [..., K], mask_logits [..., M, M, K]).

  Mask (Sec. 3.1): per pixel, a softmax over (outside, inside); its foreground probability is
  sigmoid(inside - outside), so mask_logits = inside - outside. Classification: per pixel max(inside, outside),
  then the average over the M x M pixels is the class's logit (a softmax over the K follows).
  """
  pairs = pooled.reshape(*pooled.shape[:-1], -1, 2)  # [..., M, M, K, (outside, inside)]
  class_logits = pairs.max(-1).mean((-3, -2))
  return class_logits, pairs[..., 1] - pairs[..., 0]


def _box_axis_weights(sample, lo, hi, m):
  """[D, V, S, m] bilinear weights of a voter's m cells (centres lo + (u + 0.5) (hi - lo) / m) at positions
  sample [D, S]; a position outside [lo, hi] weighs 0, inside the outer half cells it takes the edge cell."""
  lo, hi = lo[None, :, None], hi[None, :, None]  # [1, V, 1]
  u = (sample[:, None, :] - lo) / jnp.maximum(hi - lo, 1e-6) * m - 0.5  # [D, V, S]
  inside = (sample[:, None, :] >= lo) & (sample[:, None, :] <= hi)
  u = jnp.clip(u, 0, m - 1)
  tent = jnp.maximum(1 - jnp.abs(u[..., None] - jnp.arange(m)), 0)  # [D, V, S, m]
  return jnp.where(inside[..., None], tent, 0.0)


def _voters(boxes, labels, voter_boxes, voter_labels, voter_valid, iou_threshold):
  """[D, V] bool: the valid voters of each detection's label with box IoU >= iou_threshold."""
  iou = jnp.nan_to_num(box_iou(boxes, voter_boxes))  # 0 where both boxes are empty (torchvision: 0 / 0)
  return voter_valid[None] & (voter_labels[None] == labels[:, None]) & (iou >= iou_threshold)


def voting_regions(boxes, labels, voter_boxes, voter_labels, voter_valid, iou_threshold=0.5):
  """[D, 4] the box enclosing each detection's box and those of its voters (as mask_voting picks them): the part of
  the image where the reference's voting, which pastes every voter into the image, can put foreground."""
  vote = _voters(boxes, labels, voter_boxes, voter_labels, voter_valid, iou_threshold)[..., None]  # [D, V, 1]
  lo = jnp.where(vote, voter_boxes[None, :, :2], jnp.inf).min(1)
  hi = jnp.where(vote, voter_boxes[None, :, 2:], -jnp.inf).max(1)
  return jnp.concatenate([jnp.minimum(lo, boxes[:, :2]), jnp.maximum(hi, boxes[:, 2:])], -1)


def mask_voting(boxes, labels, voter_boxes, voter_labels, voter_scores, voter_masks, voter_valid, size,
                iou_threshold=0.5, binary_threshold=0.4, regions=None):
  """FCIS mask voting (Sec. 3.2, the reference's mask merging) of D detections, on a size x size grid of their regions.

  For detection d, its voters are the valid voters v of its label whose box IoU with d's box is >= iou_threshold
  (the reference merges by box overlap, MASK_MERGE_THRESH 0.5; d itself is one of them when it is a voter), with
  weights their class scores normalised to sum 1. Each voter's M x M mask probabilities (cell centres spread over
  its box) are read bilinearly at the centres of the size x size cells of d's region (d's box by default; zero
  outside the voter's box), binarised at >= binary_threshold (the reference's BINARY_THRESH 0.4) and averaged with
  those weights: the voted mask, in [0, 1]. The reference pastes each voter into the image before binarising; here
  they are resampled onto the region's grid, so voter pixels outside it are not counted (none are with the regions
  of `voting_regions`).

  Args:
    boxes [D, 4], labels [D]: the detections (x1, y1, x2, y2).
    voter_boxes [V, 4], voter_labels [V], voter_scores [V], voter_masks [V, M, M] (probabilities), voter_valid [V].
    size: the static side of the voted masks.
    regions: [D, 4] the boxes the voted masks cover; None: the detections' boxes.

  Returns:
    [D, size, size] float32 voted masks; a detection with no voter gets zeros.
  """
  boxes = boxes.astype(jnp.float32)
  voter_boxes = voter_boxes.astype(jnp.float32)
  m = voter_masks.shape[-1]
  x1, y1, x2, y2 = (voter_boxes[:, k] for k in range(4))
  vote = _voters(boxes, labels, voter_boxes, voter_labels, voter_valid, iou_threshold)
  boxes = boxes if regions is None else regions.astype(jnp.float32)
  weight = jnp.where(vote, voter_scores[None].astype(jnp.float32), 0.0)
  weight = weight / jnp.maximum(weight.sum(1, keepdims=True), 1e-12)  # [D, V]
  centres = (jnp.arange(size, dtype=jnp.float32) + 0.5) / size
  sample_y = boxes[:, 1:2] + centres * (boxes[:, 3:4] - boxes[:, 1:2])  # [D, S]
  sample_x = boxes[:, 0:1] + centres * (boxes[:, 2:3] - boxes[:, 0:1])
  wy = _box_axis_weights(sample_y, y1, y2, m)
  wx = _box_axis_weights(sample_x, x1, x2, m)
  read = jnp.einsum("dvim,vmn,dvjn->dvij", wy, voter_masks.astype(jnp.float32), wx,
                    precision=jax.lax.Precision.HIGHEST)
  binary = (read >= binary_threshold).astype(jnp.float32)
  return jnp.einsum("dv,dvij->dij", weight, binary, precision=jax.lax.Precision.HIGHEST)
