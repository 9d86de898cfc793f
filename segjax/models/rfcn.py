"""R-FCN (Dai et al. 2016, "R-FCN: Object Detection via Region-based Fully Convolutional Networks"), static shapes.

images [N, H, W, 3] in [0, 1] -> normalised by pixel_mean / pixel_std -> ResNet with conv5 at stride 16 (stride 1,
every 3x3 of conv5 dilated by 2: the paper's "a trous" conv5; the ResNet's multi_grid (2, 1, ..) on
output_stride 16) -> C4 [N, H/16, W/16, 1024 w/64] and C5 [N, H/16, W/16, 2048 w/64].
  RPN on C4, shared with the trunk (one level of anchors at stride 16), as the released R-FCN;
  C5 -> 1x1 conv to `head_channels` (1024) + ReLU -> two 1x1 convs: k^2 (C + 1) position-sensitive class score
  maps and 4 k^2 class-agnostic box maps (k = ps_size = 7);
  per RoI, position-sensitive pooling (Eq. 1: bin (i, j) of channel (c, i, j), averaged over the bin) and voting
  (the mean over the k^2 bins) -> class logits [C + 1] (softmax) and box deltas [4].
Training: RPN losses + softmax cross-entropy + smooth L1 on the RoIs (Eq. 3): a balanced sample of
`roi_batch_size_per_image`, or with `ohem` every proposal and ground-truth box is labelled and the `ohem_rois`
(B = 128) of highest loss are kept (Sec. 2, "Training"; the paper's N = 300 proposals per image).
Inference: the detection post-processing of the Faster R-CNN heads (segjax.models.roi_heads.detect: softmax
scores, the class-agnostic box for every class, per-class NMS at 0.3 as the paper).

Deformable R-FCN (Dai et al. 2017, "Deformable Convolutional Networks", Sec. 2.2 and the reference's
resnet_v1_101_rfcn_dcn symbol): `deformable_stages` (5,) makes res5's 3x3 convs deformable and `deformable_psroi`
moves the bins of the "sampled" pooler (deformable PS RoI pooling, gamma 0.1) by per-bin offsets pooled from
zero-initialised offset maps of the 1024-d features; at initialisation it computes the plain R-FCN with that pooler.

Registered as "rfcn" with TASK "detection" (box-only sets, VOC AP: experiments/rfcn_r101_voc07.py), and as
"rfcn_coco" (segjax/models/rfcn_coco.py) with TASK "instance" (COCO AP of the boxes; each box is reported filled as
its mask, as Faster R-CNN here).
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from segjax.backbones.resnet import STAGE_BLOCKS, ResNet
from segjax.constants import IGNORE_LABEL
from segjax.layers.conv import Conv
from segjax.models import roi_heads, rpn
from segjax.models.validation import validated
from segjax.ops.anchors import fpn_anchors
from segjax.ops.boxes import encode_boxes
from segjax.ops.deform_roi import deform_ps_roi_pool
from segjax.ops.image import IMAGENET_MEAN, IMAGENET_STD, normalize_images
from segjax.ops.losses import smooth_l1_loss, softmax_cross_entropy
from segjax.ops.masks import box_masks
from segjax.ops.matching import hardest
from segjax.ops.roi import ps_roi_align, ps_roi_pool

TASK = "detection"
BATCH_KEYS = ("image", "boxes", "classes", "instance_valid")
FORWARD_KEYS = ("boxes", "classes", "instance_valid")
# Read at inference only: a checkpoint evaluates with other values of these.
INFERENCE_KEYS = frozenset({"rpn_pre_nms_top_n_test", "rpn_post_nms_top_n_test", "score_threshold", "nms_threshold",
                            "detections_per_image", "detection_candidates"})
SIZE_DIVISIBILITY = 16  # the stride of C4 and of the dilated C5
STRIDE = 16
PS_POOLERS = ("pool", "align", "sampled")
_NORMAL_001 = nn.initializers.normal(0.01)  # the released R-FCN's new layers: Gaussian, std 0.01, zero bias


def model_config() -> ml_collections.ConfigDict:
  """The paper's R-FCN on ResNet-101 for PASCAL VOC (num_classes None: the data set's things + background).

  Anchors: 3 sizes x 3 ratios at stride 16 (the released VOC model's scales 8, 16, 32); RPN proposals 6000 before
  NMS (0.7) and 300 after, in training (OHEM's N = 300) and at test. RoI labels: IoU >= 0.5 foreground, below
  background. OHEM keeps B = 128 RoIs per image. Test: score > 0.05, NMS 0.3, 100 detections per image.
  """
  return ml_collections.ConfigDict({
      "name": "rfcn", "num_classes": None, "depth": 101, "width": 64, "norm": "frozen",
      "pixel_mean": IMAGENET_MEAN, "pixel_std": IMAGENET_STD,
      "anchor_sizes": ((128, 256, 512),), "aspect_ratios": (0.5, 1.0, 2.0),
      "rpn_pre_nms_top_n_train": 6000, "rpn_post_nms_top_n_train": 300, "rpn_pre_nms_top_n_test": 6000,
      "rpn_post_nms_top_n_test": 300, "rpn_nms_threshold": 0.7,
      "rpn_fg_iou": 0.7, "rpn_bg_iou": 0.3, "rpn_batch_size_per_image": 256, "rpn_positive_fraction": 0.5,
      "roi_fg_iou": 0.5, "roi_bg_iou": 0.5, "roi_batch_size_per_image": 128, "roi_positive_fraction": 0.25,
      "ohem": True, "ohem_rois": 128,
      "head_channels": 1024, "ps_size": 7, "ps_pooler": "pool", "sampling_ratio": 2,
      "deformable_psroi": False, "deformable_stages": (),
      "score_threshold": 0.05, "nms_threshold": 0.3, "detections_per_image": 100, "detection_candidates": 4096,
      "dtype": "float32"})


def vote(score_maps, boxes, k, spatial_scale, pooler="pool", sampling_ratio=2, offsets=None):
  """Position-sensitive pooling and voting (Eq. 1-2) of boxes [N, R, 4] on score maps [N, H, W, k^2 D] -> [N, R, D].

  Channel d * k^2 + i * k + j is the map z_{i,j,d} of bin (i, j) (row i, column j) for output d. Eq. 1:
  r_d(i, j) = (1 / n) sum_{(x, y) in bin(i, j)} z_{i,j,d}(x + x0, y + y0), the bins
  floor(i h / k) <= y < ceil((i + 1) h / k) of the RoI's (w, h) on the map (the paper's footnote). Eq. 2, as the
  text's "vote by averaging": r_d = (1 / k^2) sum_{i,j} r_d(i, j). pooler "pool": the paper's average over integer
  bins (torchvision's ps_roi_pool: corners rounded to the map); "align": bilinear samples (ps_roi_align,
  `sampling_ratio` per bin side); "sampled": the Deformable ConvNets reference's PS RoI pooling
  (segjax.ops.deform_roi.deform_ps_roi_pool, `sampling_ratio` samples per bin side), moved by `offsets`
  [N, R, k, k, T, 2] (normalised (dx, dy) per bin and offset class, gamma 0.1; None: unmoved). Each image's RoIs
  are pooled on its own map.
  """
  if pooler not in PS_POOLERS:
    raise ValueError(f"position-sensitive pooler must be one of {PS_POOLERS}; got {pooler!r}")

  if offsets is not None and pooler != "sampled":
    raise ValueError(f"offsets move the 'sampled' pooler's bins; got pooler {pooler!r}")

  def pool(features, image_boxes, image_offsets):  # one image: batch index 0 of its own map
    rois = jnp.concatenate([jnp.zeros_like(image_boxes[:, :1]), image_boxes], 1)
    if pooler == "pool":
      return ps_roi_pool(features[None], rois, k, spatial_scale)
    if pooler == "sampled":
      return deform_ps_roi_pool(features[None], rois, image_offsets, k, spatial_scale, sampling_ratio=sampling_ratio)
    return ps_roi_align(features[None], rois, k, spatial_scale, sampling_ratio)

  return jax.vmap(pool)(score_maps, boxes, offsets).mean((2, 3))  # [N, R, k, k, D] -> [N, R, D]


def pooled_offsets(offset_maps, boxes, k, spatial_scale, classes, sampling_ratio):
  """Per-bin offsets [N, R, k, k, T, 2] of boxes [N, R, 4]: offset maps [N, H, W, 2 T k^2] pooled without offsets
  (the reference's rfcn_cls_offset / rfcn_bbox_offset: DeformablePSROIPooling, no_trans, output_dim 2 T), channel
  2 t + 0 the x and 2 t + 1 the y offset of offset class t."""
  def pool(features, image_boxes):
    rois = jnp.concatenate([jnp.zeros_like(image_boxes[:, :1]), image_boxes], 1)
    return deform_ps_roi_pool(features[None], rois, None, k, spatial_scale, sampling_ratio=sampling_ratio)

  pooled = jax.vmap(pool)(offset_maps, boxes)  # [N, R, k, k, 2 T]
  return pooled.reshape(*pooled.shape[:-1], classes, 2)


class PSHead(nn.Module):
  """C5 [N, H, W, 2048] -> (class score maps [N, H, W, k^2 (C + 1)], box maps [N, H, W, 4 k^2]): a 1x1 conv to
  `channels` + ReLU (the paper's 1024-d dimension reduction), then one 1x1 conv per kind of map.

  With `deformable` (deformable R-FCN, Dai et al. 2017 Sec. 2.2, the reference's resnet_v1_101_rfcn_dcn symbol)
  also the offset maps of each: 2 k^2 (C + 1) for the classes (one offset field per class) and 2 k^2 for the boxes,
  1x1 convs `rfcn_cls_offset_t` and `rfcn_bbox_offset_t` initialised to zero, so that training starts from
  unmoved bins: returns (class maps, box maps, class offset maps, box offset maps).
  """
  num_classes: int
  k: int
  channels: int = 1024
  deformable: bool = False
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(Conv, kernel_size=(1, 1), kernel_init=_NORMAL_001, dtype=self.dtype)
    x = nn.relu(conv(self.channels, name="conv_new")(x))
    maps = (conv(self.k**2 * self.num_classes, name="rfcn_cls")(x), conv(4 * self.k**2, name="rfcn_bbox")(x))
    if not self.deformable:
      return maps
    zero = functools.partial(Conv, kernel_size=(1, 1), kernel_init=nn.initializers.zeros, dtype=self.dtype)
    return maps + (zero(2 * self.k**2 * self.num_classes, name="rfcn_cls_offset_t")(x),
                   zero(2 * self.k**2, name="rfcn_bbox_offset_t")(x))


def roi_losses(class_logits, deltas, labels, box_targets, positive):
  """Per-RoI loss of Eq. 3 (lambda = 1): softmax cross-entropy + [c* > 0] smooth L1 (beta 1, Fast R-CNN's) of the
  class-agnostic deltas; class_logits [..., C + 1], deltas and box_targets [..., 4], labels and positive [...]."""
  ce = softmax_cross_entropy(class_logits, labels, ignore_index=IGNORE_LABEL, reduction="none")
  box = smooth_l1_loss(deltas, box_targets, beta=1.0, reduction="none").sum(-1)
  return ce, jnp.where(positive, box, 0.0)


class RFCN(nn.Module):
  """module(images, train, targets) -> outputs: training, everything `loss` needs; else the detections
  (boxes, scores, labels, masks (the boxes filled) at input size, valid) of `predict`'s contract."""
  num_classes: int  # with the background, class 0
  config: ml_collections.FrozenConfigDict

  @nn.compact
  def __call__(self, images, train=False, targets=None):
    c = self.config
    h, w = images.shape[1:3]
    if h % STRIDE or w % STRIDE:
      raise ValueError(f"rfcn: image height and width must be multiples of {STRIDE}; got {(h, w)}")
    dtype = jnp.dtype(c.dtype)
    conv5_blocks = STAGE_BLOCKS[c.depth][-1]
    backbone = ResNet(depth=c.depth, width=c.width, norm=c.norm, output_stride=16,
                      multi_grid=(2,) + (1,) * (conv5_blocks - 1), deformable_stages=tuple(c.deformable_stages),
                      dtype=dtype, name="backbone")
    features = backbone(normalize_images(images, c.pixel_mean, c.pixel_std), train=train)
    c4, c5 = features["C4"], features["C5"]
    n = images.shape[0]
    num_anchors = len(c.anchor_sizes[0]) * len(c.aspect_ratios)
    objectness, deltas = rpn.RPNHead(num_anchors, dtype=dtype, name="rpn_head")([c4])
    anchors = fpn_anchors((h, w), [c4.shape[1:3]], c.anchor_sizes, c.aspect_ratios)
    phase = "train" if train else "test"
    propose = functools.partial(
        rpn.propose, anchors=anchors, level_sizes=[anchors.shape[0]], image_hw=(h, w),
        pre_nms_top_n=c[f"rpn_pre_nms_top_n_{phase}"], post_nms_top_n=c[f"rpn_post_nms_top_n_{phase}"],
        nms_threshold=c.rpn_nms_threshold)
    proposals, _, proposal_valid = jax.vmap(propose)(jax.lax.stop_gradient(objectness),
                                                     jax.lax.stop_gradient(deltas))
    maps = PSHead(self.num_classes, c.ps_size, c.head_channels, deformable=c.deformable_psroi, dtype=dtype,
                  name="ps_head")(c5)
    maps = [m.astype(jnp.float32) for m in maps]

    def head(boxes):
      offsets = (None, None)
      if c.deformable_psroi:
        offsets = tuple(pooled_offsets(m, boxes, c.ps_size, 1 / STRIDE, t, c.sampling_ratio)
                        for m, t in ((maps[2], self.num_classes), (maps[3], 1)))
      return tuple(vote(m, boxes, c.ps_size, 1 / STRIDE, c.ps_pooler, c.sampling_ratio, o)
                   for m, o in zip(maps[:2], offsets))
    if train:
      return self._train_outputs(targets, objectness, deltas, anchors, proposals, proposal_valid, head)

    class_logits, box_deltas = head(proposals)
    r = proposals.shape[1]
    detect = functools.partial(
        roi_heads.detect, image_hw=(h, w), score_threshold=c.score_threshold, nms_threshold=c.nms_threshold,
        detections_per_image=c.detections_per_image, candidates=c.detection_candidates)
    # Class-agnostic regression: every class's box is the RoI's one box.
    box_deltas = jnp.broadcast_to(box_deltas[:, :, None], (n, r, self.num_classes, 4))
    boxes, scores, labels, valid = jax.vmap(detect)(class_logits, box_deltas, proposals, proposal_valid)
    masks = jnp.where(valid[..., None, None], box_masks(boxes, h, w), 0.0)
    return {"boxes": boxes, "scores": scores, "labels": labels, "masks": masks, "valid": valid}

  def _train_outputs(self, targets, objectness, deltas, anchors, proposals, proposal_valid, head):
    c = self.config
    n = objectness.shape[0]
    gt_boxes, gt_classes = targets["boxes"].astype(jnp.float32), targets["classes"]
    gt_valid = targets["instance_valid"]
    if "is_crowd" in targets:  # COCO's crowd regions are not trained on (as the Faster R-CNN code here)
      gt_valid &= ~targets["is_crowd"]
    rpn_key, roi_key = jax.random.split(self.make_rng("sampling"))
    rpn_positive, rpn_negative, rpn_targets = rpn.batch_anchor_targets(rpn_key, anchors, gt_boxes, gt_valid, c)
    # OHEM labels every proposal and ground-truth box (a sample of all of them, positives first); otherwise a
    # balanced sample of roi_batch_size_per_image.
    all_rois = proposals.shape[1] + gt_boxes.shape[1]
    sample = functools.partial(
        roi_heads.sample_rois, fg_iou=c.roi_fg_iou, bg_iou=c.roi_bg_iou,
        num_samples=all_rois if c.ohem else c.roi_batch_size_per_image,
        positive_fraction=1.0 if c.ohem else c.roi_positive_fraction)
    rois, labels, matched, positive, sampled = jax.vmap(sample)(
        jax.random.split(roi_key, n), proposals, proposal_valid, gt_boxes, gt_classes, gt_valid)
    class_logits, box_deltas = head(rois)
    matched_boxes = jnp.take_along_axis(gt_boxes, matched[..., None], 1)
    box_targets = jnp.where(positive[..., None], encode_boxes(matched_boxes, rois, roi_heads.BOX_CODER_WEIGHTS), 0.0)
    outputs = {
        "rpn_objectness": objectness, "rpn_deltas": deltas, "rpn_positive": rpn_positive,
        "rpn_negative": rpn_negative, "rpn_targets": rpn_targets, "rois": rois, "class_logits": class_logits,
        "box_deltas": box_deltas, "box_targets": box_targets, "roi_labels": labels, "roi_positive": positive,
        "roi_selected": sampled}
    if c.ohem:  # the B RoIs of highest loss (forward only: the selection takes no gradient)
      ce, box = roi_losses(class_logits, box_deltas, labels, box_targets, positive)
      per_roi = jax.lax.stop_gradient(ce + box)
      outputs["roi_losses"] = jnp.where(sampled, per_roi, 0.0)
      outputs["roi_candidates"] = sampled
      outputs["roi_selected"] = jax.vmap(functools.partial(hardest, count=c.ohem_rois))(per_roi, sampled)
    return outputs


def _config(overrides) -> ml_collections.FrozenConfigDict:
  """model_config() updated with `overrides`, checked by segjax.models.validation."""
  config = validated(overrides, model_config())
  if config.ps_pooler not in PS_POOLERS:
    raise ValueError(f"config.model.ps_pooler: must be one of {PS_POOLERS}; got {config.ps_pooler!r}")
  if config.depth not in STAGE_BLOCKS:
    raise ValueError(f"config.model.depth: must be one of {tuple(STAGE_BLOCKS)}; got {config.depth}")
  if config.deformable_psroi and config.ps_pooler != "sampled":
    raise ValueError("config.model.deformable_psroi: moves the bins of ps_pooler 'sampled' (the Deformable ConvNets "
                     f"reference's PS RoI pooling); got ps_pooler {config.ps_pooler!r}")
  if len(config.anchor_sizes) != 1:
    raise ValueError(f"config.model.anchor_sizes: one level (the RPN runs on C4); got {config.anchor_sizes}")
  return config


def build(config, info):
  config = _config(config)
  return RFCN(num_classes=config.num_classes or info.num_thing_classes + 1, config=config)


def loss(outputs, batch, model_config):
  """RPN objectness and box losses (segjax.models.rpn.rpn_loss) + Eq. 3 on the selected RoIs (OHEM's B hardest, or
  the balanced sample): cross-entropy and smooth L1 summed over them and divided by their number."""
  del batch, model_config
  rpn_objectness, rpn_box = rpn.rpn_loss(outputs["rpn_objectness"], outputs["rpn_deltas"], outputs["rpn_positive"],
                                         outputs["rpn_negative"], outputs["rpn_targets"])
  selected = outputs["roi_selected"]
  count = jnp.maximum(selected.sum(), 1)
  labels = jnp.where(selected, outputs["roi_labels"], IGNORE_LABEL)
  ce, box = roi_losses(outputs["class_logits"], outputs["box_deltas"], labels, outputs["box_targets"],
                       outputs["roi_positive"] & selected)
  metrics = {"loss_objectness": rpn_objectness, "loss_rpn_box_reg": rpn_box,
             "loss_classifier": jnp.sum(jnp.where(selected, ce, 0.0)) / count, "loss_box_reg": jnp.sum(box) / count,
             "num_positive_rois": (outputs["roi_positive"] & selected).sum(-1).mean().astype(jnp.float32)}
  return sum(v for k, v in metrics.items() if k.startswith("loss_")), metrics


def predict(outputs, model_config):
  """The detections of the forward pass (its score and NMS thresholds are config.model's): boxes, scores, labels,
  valid."""
  del model_config
  return {k: outputs[k] for k in ("boxes", "scores", "labels", "valid")}
