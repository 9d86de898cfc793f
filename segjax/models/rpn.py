"""Region Proposal Network (Ren et al. 2015, Faster R-CNN Sec. 3.1) over FPN levels, in torchvision's semantics.

Static shapes: per level the top `pre_nms_top_n` anchors by objectness, then NMS within each level and the
`post_nms_top_n` best proposals of the image with a validity mask; training targets by IoU matching and a
fixed-size balanced sample of anchors (torchvision's RegionProposalNetwork).
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax.layers.conv import Conv
from segjax.ops.box_nms import batched_nms
from segjax.ops.boxes import box_iou, clip_boxes, decode_boxes, encode_boxes
from segjax.ops.losses import smooth_l1_loss
from segjax.ops.matching import match_boxes, sample_balanced

_NORMAL_001 = nn.initializers.normal(0.01)


class RPNHead(nn.Module):
  """Shared 3x3 conv + ReLU, then 1x1 objectness (A) and box deltas (4A) on every level.

  Returns (objectness [N, sum_l Hl Wl A], deltas [N, sum_l Hl Wl A, 4]), location-major then anchor, as the
  anchors of `segjax.ops.fpn_anchors`.
  """
  num_anchors: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, levels):
    conv = Conv(levels[0].shape[-1], (3, 3), padding=1, kernel_init=_NORMAL_001, dtype=self.dtype, name="conv")
    cls_logits = Conv(self.num_anchors, (1, 1), kernel_init=_NORMAL_001, dtype=self.dtype, name="cls_logits")
    bbox_pred = Conv(4 * self.num_anchors, (1, 1), kernel_init=_NORMAL_001, dtype=self.dtype, name="bbox_pred")
    objectness, deltas = [], []
    for x in levels:
      t = nn.relu(conv(x))
      n = x.shape[0]
      objectness.append(cls_logits(t).reshape(n, -1))
      deltas.append(bbox_pred(t).reshape(n, -1, 4))
    return (jnp.concatenate(objectness, 1).astype(jnp.float32), jnp.concatenate(deltas, 1).astype(jnp.float32))


def propose(objectness, deltas, anchors, level_sizes, image_hw, *, pre_nms_top_n, post_nms_top_n, nms_threshold,
            min_size=1e-3):
  """Proposals of one image (torchvision's RegionProposalNetwork.filter_proposals).

  Args:
    objectness: [A] logits; deltas: [A, 4]; anchors: [A, 4], the levels concatenated.
    level_sizes: static anchors per level.
    image_hw: static (H, W) the boxes are clipped to.

  Returns:
    boxes [post_nms_top_n, 4], scores [post_nms_top_n] (sigmoid objectness), valid bool [post_nms_top_n],
    by descending score.
  """
  boxes = clip_boxes(decode_boxes(deltas, anchors), *image_hw)
  picked, level_ids, start = [], [], 0
  for level, size in enumerate(level_sizes):
    _, top = jax.lax.top_k(objectness[start:start + size], min(pre_nms_top_n, size))
    picked.append(start + top)
    level_ids.append(jnp.full(top.shape, level, jnp.int32))
    start += size
  picked, level_ids = jnp.concatenate(picked), jnp.concatenate(level_ids)
  boxes, scores = boxes[picked], jax.nn.sigmoid(objectness[picked])
  wide = (boxes[:, 2] - boxes[:, 0] >= min_size) & (boxes[:, 3] - boxes[:, 1] >= min_size)
  # Removed boxes sort after every kept one, so they suppress nothing; they are masked out below.
  keep = batched_nms(boxes, jnp.where(wide, scores, -jnp.inf), level_ids, nms_threshold, post_nms_top_n)
  valid = (keep >= 0) & wide[jnp.maximum(keep, 0)]
  keep = jnp.maximum(keep, 0)
  return jnp.where(valid[:, None], boxes[keep], 0.0), jnp.where(valid, scores[keep], 0.0), valid


def anchor_targets(key, anchors, gt_boxes, gt_valid, *, fg_iou, bg_iou, batch_size_per_image, positive_fraction):
  """RPN targets of one image: matched GT (IoU >= fg_iou or best for a GT; < bg_iou background) and a sample.

  Returns (positive [A], negative [A] sampled bool masks, regression targets [A, 4] w.r.t. the anchors).
  """
  matches = match_boxes(box_iou(gt_boxes, anchors), gt_valid, fg_iou, bg_iou, allow_low_quality_matches=True)
  labels = jnp.where(matches >= 0, 1, jnp.where(matches == -1, 0, -1))
  positive, negative = sample_balanced(key, labels, batch_size_per_image, positive_fraction)
  targets = encode_boxes(gt_boxes[jnp.maximum(matches, 0)], anchors)
  return positive, negative, jnp.where(positive[:, None], targets, 0.0)


def batch_anchor_targets(key, anchors, gt_boxes, gt_valid, config):
  """`anchor_targets` of each image of a batch (gt_boxes [N, M, 4], gt_valid [N, M]), with the thresholds and
  sample size of a model config's rpn_* keys; one key split per image."""
  targets = functools.partial(
      anchor_targets, anchors=anchors, fg_iou=config.rpn_fg_iou, bg_iou=config.rpn_bg_iou,
      batch_size_per_image=config.rpn_batch_size_per_image, positive_fraction=config.rpn_positive_fraction)
  return jax.vmap(lambda k, b, v: targets(k, gt_boxes=b, gt_valid=v))(
      jax.random.split(key, gt_boxes.shape[0]), gt_boxes, gt_valid)


def rpn_loss(objectness, deltas, positive, negative, targets):
  """torchvision's RPN loss over the batch: BCE over sampled anchors (mean), smooth L1 (beta 1/9) over positives
  summed and divided by the number of sampled anchors."""
  sampled = positive | negative
  count = jnp.maximum(sampled.sum(), 1)
  bce = jnp.logaddexp(0.0, objectness) - positive * objectness
  objectness_loss = jnp.sum(jnp.where(sampled, bce, 0.0)) / count
  box = smooth_l1_loss(deltas, targets, beta=1 / 9, reduction="none").sum(-1)
  return objectness_loss, jnp.sum(jnp.where(positive, box, 0.0)) / count
