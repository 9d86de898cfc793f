"""Fast/Mask R-CNN RoI heads (Girshick 2015; He et al. 2017) in torchvision's semantics, with static shapes.

Training: proposals plus the ground-truth boxes are matched (IoU >= fg_iou foreground, < bg_iou background) and
a fixed-size balanced sample is drawn, positives first, so the mask head runs on a static prefix of the sample.
Inference: class-specific boxes, score threshold, per-class NMS and the top detections (RoIHeads.postprocess).
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax.constants import IGNORE_LABEL
from segjax.layers.conv import MatmulConv
from segjax.ops.box_nms import batched_nms
from segjax.ops.boxes import box_iou, clip_boxes, decode_boxes
from segjax.ops.losses import smooth_l1_loss, softmax_cross_entropy
from segjax.ops.matching import match_boxes, sample_balanced

BOX_CODER_WEIGHTS = (10.0, 10.0, 5.0, 5.0)  # torchvision's RoIHeads box coder
# torchvision's MaskRCNNHeads: kaiming_normal_(mode="fan_out", nonlinearity="relu").
_KAIMING_FAN_OUT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class BoxHead(nn.Module):
  """TwoMLPHead (fc6, fc7 with ReLU) + FastRCNNPredictor: RoI features [R, 7, 7, C] -> (class logits [R, K],
  box deltas [R, K, 4]); K counts the background class 0. With num_fc=0 (the C4 head) only the predictor, on the
  average pool of res5's [R, 7, 7, 2048] (detectron2's Res5ROIHeads). dropout_rate > 0 follows each fc with dropout
  (Fast and Faster R-CNN's VGG-16 drop6 and drop7; a "dropout" rng when not deterministic). ranks[i] > 0 makes
  the (i+1)-th fc two layers through that many units (Fast R-CNN's truncated SVD, Girshick 2015 Sec. 3.1): "fcN_sv"
  (Sigma_t V_t^T, no bias) then "fcN_u" (U_t and the fc's bias); segjax.ops.truncated_svd converts the weights."""
  num_classes: int
  representation_size: int = 1024
  num_fc: int = 2
  dropout_rate: float = 0.0
  ranks: tuple[int, ...] = ()
  deterministic: bool = True
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, features):
    dense = lambda size, name, init=nn.initializers.lecun_normal(): nn.Dense(
        size, kernel_init=init, dtype=self.dtype, name=name)
    x = features.reshape(features.shape[0], -1) if self.num_fc else features.mean((1, 2))
    for j, i in enumerate(range(6, 6 + self.num_fc)):
      rank = self.ranks[j] if j < len(self.ranks) else 0
      if rank:
        x = nn.Dense(rank, use_bias=False, dtype=self.dtype, name=f"fc{i}_sv")(x)
        x = nn.relu(dense(self.representation_size, f"fc{i}_u")(x))
      else:
        x = nn.relu(dense(self.representation_size, f"fc{i}")(x))
      if self.dropout_rate:
        x = nn.Dropout(self.dropout_rate, deterministic=self.deterministic)(x)
    self.sow("intermediates", "features", x)  # fc7's output: R-CNN's and SPP-net's SVMs read it
    class_logits = dense(self.num_classes, "cls_score", nn.initializers.normal(0.01))(x)
    deltas = dense(4 * self.num_classes, "bbox_pred", nn.initializers.normal(0.001))(x)
    return class_logits.astype(jnp.float32), deltas.reshape(-1, self.num_classes, 4).astype(jnp.float32)


class MaskHead(nn.Module):
  """MaskRCNNHeads (num_convs x conv3x3 + ReLU) + MaskRCNNPredictor (2x2 stride-2 deconv + ReLU, 1x1 per-class
  logits): RoI features [R, 14, 14, C] -> mask logits [R, 28, 28, K]. The C4 head has no convs and reads res5's
  [R, 7, 7, 2048]: logits [R, 14, 14, K] (He et al. 2017, Fig. 4 left). Its convolutions are matrix products
  (MatmulConv): Mask R-CNN runs the head inside control flow (a loop over chunks of RoIs) on CPU."""
  num_classes: int
  features: int = 256
  num_convs: int = 4
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    for i in range(1, 1 + self.num_convs):
      x = nn.relu(MatmulConv(self.features, (3, 3), padding=1, kernel_init=_KAIMING_FAN_OUT, dtype=self.dtype,
                             name=f"mask_fcn{i}")(x))
    # ConvTranspose2d(kernel 2, stride 2): every input pixel writes its own 2x2 output block.
    kernel = self.param("conv5_mask_kernel", _KAIMING_FAN_OUT, (2, 2, x.shape[-1], self.features))
    bias = self.param("conv5_mask_bias", nn.initializers.zeros, (self.features,))
    r, h, w, c = x.shape
    y = jnp.dot(x, kernel.astype(self.dtype).transpose(2, 0, 1, 3).reshape(c, 4 * self.features))
    y = y.reshape(r, h, w, 2, 2, self.features).transpose(0, 1, 3, 2, 4, 5).reshape(r, 2 * h, 2 * w, self.features)
    y = nn.relu(y + bias.astype(self.dtype))
    logits = MatmulConv(self.num_classes, (1, 1), kernel_init=_KAIMING_FAN_OUT, dtype=self.dtype,
                        name="mask_fcn_logits")(y)
    return logits.astype(jnp.float32)


def sample_rois(key, proposals, proposal_valid, gt_boxes, gt_classes, gt_valid, *, fg_iou, bg_iou, num_samples,
                positive_fraction, bg_iou_low=0.0):
  """The RoI minibatch of one image (torchvision's RoIHeads.select_training_samples), positives first.

  Foreground: IoU >= fg_iou with a ground-truth box; background: best IoU in [bg_iou_low, bg_iou) (Fast R-CNN's
  hierarchical sampling, Girshick 2015 Sec. 2.3: [0.1, 0.5), the lower bound a heuristic for hard example mining;
  torchvision and Faster R-CNN end to end: 0); RoIs in neither are not sampled.

  Args:
    proposals: [P, 4] with proposal_valid [P]; gt_boxes [M, 4], gt_classes [M] (1..K-1), gt_valid [M].

  Returns:
    rois [S, 4], labels [S] (0 background), matched GT index [S], positive [S], valid [S] (S = num_samples;
    slots past the sample are invalid). Positives fill the first slots, then negatives, each in input order.
  """
  rois = jnp.concatenate([proposals, gt_boxes])  # add_gt_proposals
  valid = jnp.concatenate([proposal_valid, gt_valid])
  matches = match_boxes(box_iou(gt_boxes, rois), gt_valid, fg_iou, bg_iou, allow_low_quality_matches=False)
  labels = jnp.where(matches >= 0, gt_classes[jnp.maximum(matches, 0)], jnp.where(matches == -1, 0, -1))
  if bg_iou_low > 0:
    best = jnp.max(jnp.where(gt_valid[:, None], box_iou(gt_boxes, rois), 0.0), axis=0, initial=0.0)
    labels = jnp.where((labels == 0) & (best < bg_iou_low), -1, labels)
  positive, negative = sample_balanced(key, jnp.where(valid, labels, -1), num_samples, positive_fraction)
  _, order = jax.lax.top_k(2 * positive.astype(jnp.int32) + negative, min(num_samples, rois.shape[0]))
  picked_valid = (positive | negative)[order]
  return (rois[order], jnp.where(positive[order], labels[order], 0), jnp.maximum(matches[order], 0),
          positive[order], picked_valid)


def box_losses(class_logits, labels, valid, positive, box_deltas, box_targets, beta):
  """Fast R-CNN's multi-task loss terms (Girshick 2015, Eq. 1-3) over sampled RoIs [..., S]: the log loss of the
  true class, and smooth L1 (transition `beta`) of the true class's box deltas on foreground RoIs, each summed and
  divided by the number of sampled RoIs (py-faster-rcnn's SoftmaxWithLoss and SmoothL1Loss; torchvision's
  fastrcnn_loss). Returns (classification, box regression)."""
  count = jnp.maximum(valid.sum(), 1)
  labels = jnp.where(valid, labels, IGNORE_LABEL)
  classification = softmax_cross_entropy(class_logits, labels, ignore_index=IGNORE_LABEL, reduction="sum") / count
  box = smooth_l1_loss(box_deltas, box_targets, beta=beta, reduction="none").sum(-1)
  return classification, jnp.sum(jnp.where(positive, box, 0.0)) / count


def detect(class_logits, deltas, proposals, proposal_valid, image_hw, *, score_threshold, nms_threshold,
           detections_per_image, candidates, min_size=1e-2):
  """Detections of one image (torchvision's RoIHeads.postprocess_detections).

  Every (proposal, foreground class) pair is a candidate: class-specific box, clipped, kept when its softmax
  score > score_threshold and its sides >= min_size; the best `candidates` of them go through per-class NMS
  and the first `detections_per_image` survive. torchvision runs NMS on all candidates: the results agree
  whenever at most `candidates` pass the threshold or the first ones already hold all the detections.

  Returns boxes [D, 4], scores [D], labels [D] (1..K-1), valid [D], by descending score.
  """
  num_classes = class_logits.shape[-1]
  scores = jax.nn.softmax(class_logits, -1)[:, 1:]
  boxes = clip_boxes(decode_boxes(deltas[:, 1:], proposals[:, None], BOX_CODER_WEIGHTS), *image_hw)
  labels = jnp.broadcast_to(jnp.arange(1, num_classes, dtype=jnp.int32), scores.shape)
  boxes, scores, labels = boxes.reshape(-1, 4), scores.reshape(-1), labels.reshape(-1)
  ok = (jnp.repeat(proposal_valid, num_classes - 1) & (scores > score_threshold)
        & (boxes[:, 2] - boxes[:, 0] >= min_size) & (boxes[:, 3] - boxes[:, 1] >= min_size))
  masked = jnp.where(ok, scores, -jnp.inf)
  _, top = jax.lax.top_k(masked, min(candidates, masked.shape[0]))
  keep = batched_nms(boxes[top], masked[top], labels[top], nms_threshold, detections_per_image)
  index = top[jnp.maximum(keep, 0)]
  valid = (keep >= 0) & ok[index]
  return (jnp.where(valid[:, None], boxes[index], 0.0), jnp.where(valid, scores[index], 0.0),
          jnp.where(valid, labels[index], 0), valid)
