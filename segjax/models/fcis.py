"""FCIS (Li et al. 2017, "Fully Convolutional Instance-aware Semantic Segmentation"), static shapes, following the
released code's ResNet-101 model (msracver/FCIS, fcis/symbols/resnet_v1_101_fcis.py) on the R-FCN trunk of
segjax/models/rfcn.py.

images [N, H, W, 3] in [0, 1] -> ResNet with conv5 at stride 16 (every 3x3 of conv5 dilated by 2) -> C4, C5
(`output_stride` 8 dilates conv4 as well: C4 and C5 at stride 8, for small images).
  RPN on C4, shared with the trunk (one level of anchors at stride 16), as R-FCN;
  C5 -> 1x1 conv to `head_channels` (1024) + ReLU -> two 1x1 convs: 2 k^2 (C + 1) inside / outside
  position-sensitive score maps (k = ps_size = 7) and 4 k^2 class-agnostic box maps;
  per RoI, assembling (Sec. 3.1): position-sensitive pooling of the score maps to an M x M grid (M = roi_size = 21,
  k x k cells of 3 x 3 bins, the reference's PSROIPooling with pooled_size 21, group_size 7) ->
  segjax.ops.fcis.joint_scores: per class, mask logits inside - outside (the per-pixel softmax) and the class logit,
  the mean over the pixels of max(inside, outside) (`ps_pooler` "align": bilinear samples per bin instead of the
  average over integer bins, finer masks on coarse maps); box deltas: the box maps pooled the same way (M x M bins of
  k x k cells) and averaged, as the reference's psroipool_bbox and its global average pooling.
Training: RPN losses + softmax cross-entropy + smooth L1 (beta 1, positives) + the per-pixel (outside, inside)
softmax cross-entropy of each positive RoI's ground-truth class against its matched mask RoI-aligned to M x M and
binarised at `binary_threshold` (the reference's proposal_annotator, 0.4), the three summed with weight 1: the
classification and box terms averaged over the RoIs, the mask term over the positives' pixels (the reference
weighs its mask term 10 and sums it over pixels, with lr_mult 3 on conv_new_1; not reproduced here). RoIs: a
balanced sample, or with `ohem` every proposal and ground-truth box labelled and the `ohem_rois` of highest
classification + box + mask loss kept (the reference's BoxAnnotatorOHEM, fed the mask predictions; 128 of 300).
Box deltas use segjax's coder weights (10, 10, 5, 5); the reference normalises by stds (0.2, 0.2, 0.5, 0.5).
Inference (Sec. 3.2): the RPN's RoIs and their regressed boxes (a second pass of the head, the reference's TEST.ITER
2) are scored; every (RoI, class) pair's box is that RoI, the box its mask was assembled on (the reference's
im_detect); pairs scoring above `score_threshold` go through per-class NMS at `nms_threshold` (0.3); each kept
detection's mask is the mask voting (segjax.ops.fcis.mask_voting) of the candidate pairs of its class with box IoU
>= `vote_iou` (0.5), each voter binarised at `binary_threshold` (0.4) and weighted by score, on a `vote_size` x
`vote_size` grid of the box enclosing the detection and its voters (the reference votes at image pixels); the voted
mask is pasted into the image and binarised there at `binary_threshold`, as the reference's evaluation, and the
detection's box becomes the voted mask's tight box, as the reference's mask merging (with `mask_voting` False: the
detection's own M x M mask on its RoI).
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
from segjax.models.rfcn import STRIDE, roi_losses
from segjax.models.validation import validated
from segjax.ops.anchors import fpn_anchors
from segjax.ops.box_nms import batched_nms
from segjax.ops.boxes import clip_boxes, decode_boxes, encode_boxes
from segjax.ops.fcis import joint_scores, mask_voting, voting_regions
from segjax.ops.image import IMAGENET_MEAN, IMAGENET_STD, normalize_images
from segjax.ops.masks import masks_to_boxes, paste_masks_in_image, roi_mask_targets
from segjax.ops.matching import hardest
from segjax.ops.roi import ps_roi_align, ps_roi_pool

TASK = "instance"
BATCH_KEYS = ("image", "boxes", "classes", "masks", "is_crowd", "instance_valid")
FORWARD_KEYS = ("boxes", "classes", "masks", "is_crowd", "instance_valid")
INFERENCE_KEYS = frozenset({"rpn_pre_nms_top_n_test", "rpn_post_nms_top_n_test", "score_threshold", "nms_threshold",
                            "detections_per_image", "detection_candidates", "mask_voting", "vote_iou",
                            "vote_size", "binary_threshold"})
SIZE_DIVISIBILITY = STRIDE  # the paper's output stride; 8 divides it too
_NORMAL_001 = nn.initializers.normal(0.01)  # the reference's new layers: Gaussian, std 0.01, zero bias


def model_config() -> ml_collections.ConfigDict:
  """The released FCIS ResNet-101 for COCO (resnet_v1_101_coco_fcis_end2end_ohem.yaml; num_classes None: the data
  set's things + background): anchors of 4 sizes (scales 4..32 x stride 16) x 3 ratios at stride 16; RPN 6000
  proposals before NMS (0.7), 300 after, in training and at test; RoIs positive at IoU >= 0.5; OHEM keeps 128 of
  them; k = 7, M = 21; test NMS 0.3, 100 detections, mask voting at box IoU 0.5 with masks binarised at 0.4 (on a
  42 x 42 grid, twice M, of the box enclosing each detection and its voters: the reference votes at image pixels)."""
  return ml_collections.ConfigDict({
      "name": "fcis", "num_classes": None, "depth": 101, "width": 64, "norm": "frozen", "output_stride": 16,
      "deformable_stages": (),
      "pixel_mean": IMAGENET_MEAN, "pixel_std": IMAGENET_STD,
      "anchor_sizes": ((64, 128, 256, 512),), "aspect_ratios": (0.5, 1.0, 2.0),
      "rpn_pre_nms_top_n_train": 6000, "rpn_post_nms_top_n_train": 300, "rpn_pre_nms_top_n_test": 6000,
      "rpn_post_nms_top_n_test": 300, "rpn_nms_threshold": 0.7,
      "rpn_fg_iou": 0.7, "rpn_bg_iou": 0.3, "rpn_batch_size_per_image": 256, "rpn_positive_fraction": 0.5,
      "roi_fg_iou": 0.5, "roi_bg_iou": 0.5, "roi_batch_size_per_image": 128, "roi_positive_fraction": 0.25,
      "ohem": True, "ohem_rois": 128,
      "head_channels": 1024, "ps_size": 7, "roi_size": 21, "ps_pooler": "pool", "sampling_ratio": 2,
      "score_threshold": 0.05, "nms_threshold": 0.3, "detections_per_image": 100, "detection_candidates": 1000,
      "mask_voting": True, "vote_iou": 0.5, "vote_size": 42, "binary_threshold": 0.4,
      "dtype": "float32"})


class FCISHead(nn.Module):
  """C5 [N, H, W, 2048] -> (inside / outside score maps [N, H, W, 2 k^2 K], box maps [N, H, W, 4 k^2]): a 1x1 conv
  to `channels` + ReLU (the reference's conv_new_1), then one 1x1 conv per kind of map (fcis_cls_seg, fcis_bbox).
  Channel (2 c + s) k^2 + i k + j is class c's outside (s = 0) or inside (s = 1) map of cell (i, j)."""
  num_classes: int
  k: int
  channels: int = 1024
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(Conv, kernel_size=(1, 1), kernel_init=_NORMAL_001, dtype=self.dtype)
    x = nn.relu(conv(self.channels, name="conv_new")(x))
    return (conv(2 * self.k**2 * self.num_classes, name="fcis_cls_seg")(x),
            conv(4 * self.k**2, name="fcis_bbox")(x))


def _pool_image(features, boxes, k, m, spatial_scale, pooler="pool", sampling_ratio=2):
  """One image's boxes [R, 4] pooled on its map [H, W, C k^2] into m x m bins of k x k cells: [R, m, m, C].
  pooler "pool": the average over integer bins (the reference's PSROIPooling); "align": `sampling_ratio`^2
  bilinear samples per bin (ps_roi_align)."""
  rois = jnp.concatenate([jnp.zeros_like(boxes[:, :1]), boxes], 1)
  if pooler == "align":
    return ps_roi_align(features[None], rois, m, spatial_scale, sampling_ratio, group_size=k)
  return ps_roi_pool(features[None], rois, m, spatial_scale, group_size=k)


def assemble(score_maps, boxes, k, m, spatial_scale, pooler="pool", sampling_ratio=2):
  """Assembling (Sec. 3.1) of boxes [N, R, 4] on score maps [N, H, W, 2 k^2 K] -> (class_logits [N, R, K],
  mask_logits [N, R, m, m, K]): each image's RoIs pooled on its own map into m x m bins of k x k cells."""
  pool = functools.partial(_pool_image, k=k, m=m, spatial_scale=spatial_scale, pooler=pooler,
                           sampling_ratio=sampling_ratio)
  return joint_scores(jax.vmap(pool)(score_maps, boxes))


class FCIS(nn.Module):
  """module(images, train, targets) -> outputs: training, everything `loss` needs; else the detections
  (boxes, scores, labels, masks at input size, valid) of `predict`'s contract."""
  num_classes: int  # with the background, class 0
  config: ml_collections.FrozenConfigDict

  @nn.compact
  def __call__(self, images, train=False, targets=None):
    c = self.config
    h, w = images.shape[1:3]
    stride = c.output_stride
    if h % stride or w % stride:
      raise ValueError(f"fcis: image height and width must be multiples of {stride}; got {(h, w)}")
    dtype = jnp.dtype(c.dtype)
    conv5_blocks = STAGE_BLOCKS[c.depth][-1]
    backbone = ResNet(depth=c.depth, width=c.width, norm=c.norm, output_stride=stride,
                      multi_grid=(2,) + (1,) * (conv5_blocks - 1), deformable_stages=tuple(c.deformable_stages),
                      dtype=dtype, name="backbone")
    features = backbone(normalize_images(images, c.pixel_mean, c.pixel_std), train=train)
    c4, c5 = features["C4"], features["C5"]
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
    score_maps, box_maps = FCISHead(self.num_classes, c.ps_size, c.head_channels, dtype=dtype, name="fcis_head")(c5)
    score_maps, box_maps = score_maps.astype(jnp.float32), box_maps.astype(jnp.float32)

    def head(boxes):
      class_logits, mask_logits = assemble(score_maps, boxes, c.ps_size, c.roi_size, 1 / stride, c.ps_pooler,
                                           c.sampling_ratio)
      box_deltas = jax.vmap(functools.partial(_pool_image, k=c.ps_size, m=c.roi_size, spatial_scale=1 / stride,
                                              pooler=c.ps_pooler, sampling_ratio=c.sampling_ratio))(
          box_maps, boxes).mean((2, 3))
      return class_logits, mask_logits, box_deltas

    if train:
      return self._train_outputs(targets, objectness, deltas, anchors, proposals, proposal_valid, head)
    return self._detections(proposals, proposal_valid, head, (h, w))

  def _detections(self, proposals, proposal_valid, head, image_hw):
    c = self.config
    h, w = image_hw
    class_logits, mask_logits, box_deltas = head(proposals)
    regressed = clip_boxes(decode_boxes(box_deltas, proposals, roi_heads.BOX_CODER_WEIGHTS), h, w)
    # The second pass (TEST.ITER 2): the regressed boxes as RoIs. Each score and mask keeps the RoI it was assembled
    # on as its box (the reference's im_detect: pred_boxes = rois), so that a mask is pasted where it was predicted.
    class_logits2, mask_logits2, _ = head(jax.lax.stop_gradient(regressed))
    boxes = jnp.concatenate([proposals, regressed], 1)
    scores = jax.nn.softmax(jnp.concatenate([class_logits, class_logits2], 1), -1)
    masks = jax.nn.sigmoid(jnp.concatenate([mask_logits, mask_logits2], 1))
    valid = jnp.concatenate([proposal_valid, proposal_valid], 1)
    return jax.vmap(functools.partial(self._detect_image, image_hw=image_hw))(boxes, scores, masks, valid)

  def _detect_image(self, boxes, scores, masks, valid, image_hw):
    """One image's RoIs: boxes [R, 4], scores [R, K] (softmax), masks [R, M, M, K] (probabilities), valid [R]."""
    c = self.config
    h, w = image_hw
    num_classes = scores.shape[-1]
    pair_scores = scores[:, 1:].reshape(-1)
    pair_labels = jnp.tile(jnp.arange(1, num_classes, dtype=jnp.int32), boxes.shape[0])
    roi_of_pair = jnp.repeat(jnp.arange(boxes.shape[0]), num_classes - 1)
    sides = boxes[:, 2:] - boxes[:, :2]
    ok = (jnp.repeat(valid & (sides.min(-1) >= 1e-2), num_classes - 1)) & (pair_scores > c.score_threshold)
    masked = jnp.where(ok, pair_scores, -jnp.inf)
    _, top = jax.lax.top_k(masked, min(c.detection_candidates, masked.shape[0]))
    cand_boxes, cand_scores, cand_labels = boxes[roi_of_pair[top]], masked[top], pair_labels[top]
    cand_ok = ok[top]
    cand_masks = masks[roi_of_pair[top], :, :, cand_labels]  # [V, M, M]: each pair's own class
    keep = batched_nms(cand_boxes, cand_scores, cand_labels, c.nms_threshold, c.detections_per_image)
    index = jnp.maximum(keep, 0)
    det_valid = (keep >= 0) & cand_ok[index]
    det_boxes, det_labels = cand_boxes[index], cand_labels[index]
    if c.mask_voting:  # over the box enclosing the voters, where the reference's image-wide voting puts them
      regions = voting_regions(det_boxes, det_labels, cand_boxes, cand_labels, cand_ok, c.vote_iou)
      det_masks = mask_voting(det_boxes, det_labels, cand_boxes, cand_labels, cand_scores, cand_masks, cand_ok,
                              c.vote_size, c.vote_iou, c.binary_threshold, regions=regions)
    else:
      regions, det_masks = det_boxes, cand_masks[index]
    # Soft masks pasted, then binarised in the image (the reference resizes each voted mask to its box there and
    # thresholds it at BINARY_THRESH): edges fall between the cells of the M x M grid.
    pasted = paste_masks_in_image(det_masks, regions, h, w) >= c.binary_threshold
    if c.mask_voting:  # the reference's voted box: the tight box of the voted mask (the RoI where it is empty),
      # its inclusive pixel indices as the edges of those pixels
      tight = masks_to_boxes(pasted) + jnp.array([0.0, 0.0, 1.0, 1.0])
      det_boxes = jnp.where(pasted.any((1, 2))[:, None], tight, det_boxes)
    pasted = pasted.astype(jnp.float32)
    return {"boxes": jnp.where(det_valid[:, None], det_boxes, 0.0),
            "scores": jnp.where(det_valid, cand_scores[index], 0.0),
            "labels": jnp.where(det_valid, det_labels, 0),
            "masks": jnp.where(det_valid[:, None, None], pasted, 0.0), "valid": det_valid}

  def _train_outputs(self, targets, objectness, deltas, anchors, proposals, proposal_valid, head):
    c = self.config
    n = objectness.shape[0]
    gt_boxes, gt_classes = targets["boxes"].astype(jnp.float32), targets["classes"]
    gt_valid = targets["instance_valid"]
    if "is_crowd" in targets:  # crowd regions are not trained on
      gt_valid &= ~targets["is_crowd"]
    rpn_key, roi_key = jax.random.split(self.make_rng("sampling"))
    rpn_positive, rpn_negative, rpn_targets = rpn.batch_anchor_targets(rpn_key, anchors, gt_boxes, gt_valid, c)
    all_rois = proposals.shape[1] + gt_boxes.shape[1]
    sample = functools.partial(
        roi_heads.sample_rois, fg_iou=c.roi_fg_iou, bg_iou=c.roi_bg_iou,
        num_samples=all_rois if c.ohem else c.roi_batch_size_per_image,
        positive_fraction=1.0 if c.ohem else c.roi_positive_fraction)
    rois, labels, matched, positive, sampled = jax.vmap(sample)(
        jax.random.split(roi_key, n), proposals, proposal_valid, gt_boxes, gt_classes, gt_valid)
    class_logits, mask_logits, box_deltas = head(rois)
    # The mask of each RoI's label (0, the background's, for negatives: not in the loss).
    mask_logits = jnp.take_along_axis(mask_logits, labels[:, :, None, None, None], -1)[..., 0]
    mask_targets = jax.vmap(lambda m, r, i: roi_mask_targets(m, r, i, c.roi_size))(targets["masks"], rois, matched)
    matched_boxes = jnp.take_along_axis(gt_boxes, matched[..., None], 1)
    box_targets = jnp.where(positive[..., None], encode_boxes(matched_boxes, rois, roi_heads.BOX_CODER_WEIGHTS), 0.0)
    outputs = {
        "rpn_objectness": objectness, "rpn_deltas": deltas, "rpn_positive": rpn_positive,
        "rpn_negative": rpn_negative, "rpn_targets": rpn_targets, "rois": rois, "class_logits": class_logits,
        "box_deltas": box_deltas, "box_targets": box_targets, "roi_labels": labels, "roi_positive": positive,
        "roi_selected": sampled, "mask_logits": mask_logits,
        "mask_targets": (mask_targets >= c.binary_threshold).astype(jnp.float32)}
    if c.ohem:  # the B RoIs of highest classification + box + mask loss (the selection takes no gradient)
      ce, box = roi_losses(class_logits, box_deltas, labels, box_targets, positive)
      mask = jnp.where(positive, mask_cross_entropy(mask_logits, outputs["mask_targets"]), 0.0)
      per_roi = jnp.where(sampled, jax.lax.stop_gradient(ce + box + mask), 0.0)
      outputs["roi_selected"] = jax.vmap(functools.partial(hardest, count=c.ohem_rois))(per_roi, sampled)
    return outputs


def mask_cross_entropy(mask_logits, mask_targets):
  """Per-pixel cross-entropy of the (outside, inside) softmax, mask_logits = inside - outside, targets in {0, 1};
  the mean over the pixels: [...]."""
  return (jnp.logaddexp(0.0, mask_logits) - mask_targets * mask_logits).mean((-2, -1))


def _config(overrides) -> ml_collections.FrozenConfigDict:
  config = validated(overrides, model_config())
  if config.depth not in STAGE_BLOCKS:
    raise ValueError(f"config.model.depth: must be one of {tuple(STAGE_BLOCKS)}; got {config.depth}")
  if len(config.anchor_sizes) != 1:
    raise ValueError(f"config.model.anchor_sizes: one level (the RPN runs on C4); got {config.anchor_sizes}")
  if config.ps_pooler not in ("pool", "align"):
    raise ValueError(f"config.model.ps_pooler: 'pool' or 'align'; got {config.ps_pooler!r}")
  if config.output_stride not in (8, 16):
    raise ValueError(f"config.model.output_stride: 16 (the paper's) or 8; got {config.output_stride}")
  if config.roi_size % config.ps_size:
    raise ValueError(f"config.model.roi_size ({config.roi_size}) must be a multiple of ps_size ({config.ps_size})")
  return config


def build(config, info):
  config = _config(config)
  return FCIS(num_classes=config.num_classes or info.num_thing_classes + 1, config=config)


def loss(outputs, batch, model_config):
  """RPN objectness and box losses + on the selected RoIs (OHEM's B hardest, or the balanced sample): softmax
  cross-entropy and smooth L1 (positives) summed over them and divided by their number, and the positives' mean
  per-pixel mask cross-entropy (divided by the number of selected positives)."""
  del batch, model_config
  rpn_objectness, rpn_box = rpn.rpn_loss(outputs["rpn_objectness"], outputs["rpn_deltas"], outputs["rpn_positive"],
                                         outputs["rpn_negative"], outputs["rpn_targets"])
  selected = outputs["roi_selected"]
  positive = outputs["roi_positive"] & selected
  count = jnp.maximum(selected.sum(), 1)
  labels = jnp.where(selected, outputs["roi_labels"], IGNORE_LABEL)
  ce, box = roi_losses(outputs["class_logits"], outputs["box_deltas"], labels, outputs["box_targets"], positive)
  mask = mask_cross_entropy(outputs["mask_logits"], outputs["mask_targets"])
  metrics = {"loss_objectness": rpn_objectness, "loss_rpn_box_reg": rpn_box,
             "loss_classifier": jnp.sum(jnp.where(selected, ce, 0.0)) / count, "loss_box_reg": jnp.sum(box) / count,
             "loss_mask": jnp.sum(jnp.where(positive, mask, 0.0)) / jnp.maximum(positive.sum(), 1),
             "num_positive_rois": positive.sum(-1).mean().astype(jnp.float32)}
  return sum(v for k, v in metrics.items() if k.startswith("loss_")), metrics


def predict(outputs, model_config):
  """The detections of the forward pass: boxes, scores, labels, masks at input size [B, K, H, W], valid."""
  del model_config
  return {k: outputs[k] for k in ("boxes", "scores", "labels", "masks", "valid")}
