"""Faster R-CNN (Ren et al. 2015) and Mask R-CNN (He et al. 2017) on ResNet-FPN, as torchvision's
maskrcnn_resnet50_fpn / fasterrcnn_resnet50_fpn, and on ResNet-C4, with static shapes end to end.

backbone "fpn": images [N, H, W, 3] in [0, 1] -> normalised by pixel_mean / pixel_std -> ResNet C2..C5 -> FPN
P2..P6 -> RPN proposals -> RoIAlign (P2..P5, 7x7 boxes, 14x14 masks) -> box head (2fc) and mask head (4conv +
deconv, 28x28, per-class sigmoid). `model_config()` holds torchvision's defaults; experiments override what they
change.
backbone "c4" (the paper's Fig. 4 left, detectron2's R50-C4): the RPN runs on C4 (stride 16, one level of
anchors); RoIAlign 14x14 on C4 feeds the backbone's own res5 stage (stride 2: 7x7x2048); the box predictor reads
its average pool and the mask head (deconv, no convs) its 7x7 map, giving 14x14 masks. In training the mask head
reuses the res5 features of the positive RoIs, as detectron2's Res5ROIHeads.
In programs for CPU the mask head runs on the positives (training) or detections (inference) in a loop over chunks
of MASK_CHUNK_SLOTS slots per image, skipping the chunks past the last valid slot of every image: one compiled program
whose memory is one chunk's, the loss and masks of running it on all slots, which is what TPU and GPU programs do
(segjax.ops.platform). Models derived from this one run their own mask branches in training the same way.
backbone "vgg16" (Faster R-CNN's VGG-16 of Ren et al. 2015, py-faster-rcnn's VGG16 end2end models): the RPN on
conv5_3 (stride 16, 9 anchors: sizes 128, 256, 512 x 3 ratios); RoI max pooling 7x7 on conv5_3 (Girshick 2015)
feeds fc6 and fc7 (4096, ReLU, dropout 0.5) and the predictor. Boxes only (name "faster_rcnn").
Faster R-CNN (mask=False) reports each box filled as its mask, so the instance evaluator still applies;
segjax.models.faster_rcnn runs the same network on box-only detection sets, scored by VOC mAP.
"""
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from segjax.backbones.resnet import ResNet
from segjax.backbones.vgg import VGG16
from segjax.layers import platform as layers_platform
from segjax.layers.fpn import FPN
from segjax.models import roi_heads, rpn, thing_label_map
from segjax.models.validation import validated
from segjax.ops.anchors import fpn_anchors
from segjax.ops.boxes import encode_boxes
from segjax.ops.image import IMAGENET_MEAN, IMAGENET_STD, normalize_images
from segjax.ops.masks import box_masks, paste_masks_in_image, roi_mask_targets
from segjax.ops.roi import assign_fpn_levels, multilevel_roi_align, roi_pool

TASK = "instance"
BATCH_KEYS = ("image", "boxes", "classes", "masks", "is_crowd", "instance_valid")
# Read at inference only: a checkpoint evaluates with other values of these.
INFERENCE_KEYS = frozenset({"rpn_pre_nms_top_n_test", "rpn_post_nms_top_n_test", "score_threshold", "nms_threshold",
                            "detections_per_image", "detection_candidates"})
FORWARD_KEYS = ("boxes", "classes", "masks", "is_crowd", "instance_valid")
SIZE_DIVISIBILITY = 32  # input sides: multiples of P6's stride (C4's 16 divides it)
_FPN_SCALES = (1 / 4, 1 / 8, 1 / 16, 1 / 32)  # RoIAlign reads P2..P5
ROI_POOLERS = ("align", "warp", "pool")
BACKBONES = ("fpn", "c4", "vgg16")
# Slots per image in one chunk of the mask head's loop in CPU programs (MaskRCNN._on_valid_chunks): the work is that
# of the valid slots rounded up to a multiple of it, the memory that of one chunk.
MASK_CHUNK_SLOTS = 8
# detectron2's R50-C4 (Base-RCNN-C4.yaml): 15 anchors per C4 location, more proposals before and after NMS.
_C4_DEFAULTS = {"anchor_sizes": ((32, 64, 128, 256, 512),), "rpn_pre_nms_top_n_train": 12000,
                "rpn_post_nms_top_n_train": 2000, "rpn_pre_nms_top_n_test": 6000, "rpn_post_nms_top_n_test": 1000}
# py-faster-rcnn's VGG16 end2end (config.py, faster_rcnn_end2end.yml, VGG16 train/test.prototxt): 9 anchors on
# conv5_3, 12000 / 2000 proposals before / after NMS in training and 6000 / 300 at test, 128 RoIs per image (25%
# foreground at IoU >= 0.5, background below 0.5), RoI max pooling 7x7, fc6 and fc7 of 4096 with dropout 0.5.
_VGG16_DEFAULTS = {"anchor_sizes": ((128, 256, 512),), "rpn_pre_nms_top_n_train": 12000,
                   "rpn_post_nms_top_n_train": 2000, "rpn_pre_nms_top_n_test": 6000, "rpn_post_nms_top_n_test": 300,
                   "roi_batch_size_per_image": 128, "representation_size": 4096, "roi_pooler": "pool",
                   "box_head_dropout": 0.5}


def model_config(backbone: str = "fpn", name: str = "mask_rcnn") -> ml_collections.ConfigDict:
  """torchvision's maskrcnn_resnet50_fpn defaults (num_classes None: the data set's things + background); with
  backbone "c4", detectron2's C4 anchors and proposal counts instead; name "faster_rcnn": the same without the mask
  branch (fasterrcnn_resnet50_fpn). category_ids (empty: label k is the data set's k-th thing category): the
  category id of each label 1..num_classes-1, as a converter sets it; detections are then mapped to the data set's
  labels, those of categories it lacks dropped (`segjax.models.thing_label_map`)."""
  if backbone not in BACKBONES:
    raise ValueError(f"config.model.backbone: must be one of {BACKBONES}; got {backbone!r}")
  if name not in ("mask_rcnn", "faster_rcnn"):
    raise ValueError(f"config.model.name: 'mask_rcnn' or 'faster_rcnn'; got {name!r}")
  config = ml_collections.ConfigDict({
      "name": name, "backbone": backbone, "mask": name == "mask_rcnn", "num_classes": None, "depth": 50, "width": 64,
      "norm": "frozen", "deformable_stages": (),
      "fpn_channels": 256, "pixel_mean": IMAGENET_MEAN, "pixel_std": IMAGENET_STD,
      "anchor_sizes": ((32,), (64,), (128,), (256,), (512,)), "aspect_ratios": (0.5, 1.0, 2.0),
      "rpn_pre_nms_top_n_train": 2000, "rpn_pre_nms_top_n_test": 1000,
      "rpn_post_nms_top_n_train": 2000, "rpn_post_nms_top_n_test": 1000, "rpn_nms_threshold": 0.7,
      "rpn_fg_iou": 0.7, "rpn_bg_iou": 0.3, "rpn_batch_size_per_image": 256, "rpn_positive_fraction": 0.5,
      "roi_fg_iou": 0.5, "roi_bg_iou": 0.5, "roi_bg_iou_low": 0.0, "roi_batch_size_per_image": 512,
      "roi_positive_fraction": 0.25, "representation_size": 1024, "box_head_dropout": 0.0, "mask_head_channels": 256,
      "roi_pooler": "align", "roi_aggregation": "",
      "sampling_ratio": 2,
      "score_threshold": 0.05, "nms_threshold": 0.5, "detections_per_image": 100, "detection_candidates": 4096,
      "category_ids": (), "dtype": "float32"})
  if backbone == "c4":
    config.update(_C4_DEFAULTS)
  if backbone == "vgg16":
    config.update(_VGG16_DEFAULTS)
  return config


class MaskRCNN(nn.Module):
  """module(images, train, targets) -> outputs: training, everything `loss` needs; else the detections
  (boxes, scores, labels, masks at input size, valid) of `predict`'s contract."""
  num_classes: int  # with the background, class 0
  config: ml_collections.FrozenConfigDict
  label_map: tuple[int, ...] = ()  # model label -> data set thing label (0: dropped); () keeps the labels

  def _pooled(self, levels, scales, boxes, size):
    """RoI features of boxes [N, R, 4] -> [N * R, size, size, C], each from its FPN level (Lin et al. 2017, Eq. 1).

    "align": RoIAlign as torchvision's MultiScaleRoIAlign (aligned=False); "warp": RoIWarp, the box rounded to its
    level's grid, then bilinear sampling and averaging; "pool": RoIPool (Girshick 2015), quantised box and bins,
    max (Mask R-CNN Table 2c). config.roi_aggregation "max" or "avg" reduces each bin that way instead of the
    pooler's own (max for "pool", avg otherwise): the table's five rows.
    """
    n, r, _ = boxes.shape
    batch_index = jnp.repeat(jnp.arange(n, dtype=boxes.dtype), r)[:, None]
    rois = jax.lax.stop_gradient(jnp.concatenate([batch_index, boxes.reshape(-1, 4)], 1))
    pooler = self.config.roi_pooler
    aggregation = self.config.roi_aggregation or ("max" if pooler == "pool" else "avg")
    if pooler == "pool":
      k_min = round(-math.log2(scales[0]))
      level = assign_fpn_levels(rois[:, 1:], k_min, k_min + len(scales) - 1)[:, None, None, None]
      # Every RoI pooled on every level, then its own level kept: 4x the work with FPN, for the ablation only.
      pooled = [roi_pool(f, rois, size, s, aggregation=aggregation) for f, s in zip(levels, scales)]
      return jnp.select([level == k for k in range(len(scales))], pooled)
    return multilevel_roi_align(levels, rois, size, scales, sampling_ratio=self.config.sampling_ratio,
                                aligned=False, quantized=pooler == "warp", aggregation=aggregation)

  def _heads_input(self, backbone, levels, boxes, train):
    """Box-head input of boxes [N, R, 4]. FPN: RoIAlign 7x7 from each box's level -> [N * R, 7, 7, C]. C4:
    RoIAlign 14x14 on C4, then res5 -> [N * R, 7, 7, 2048], which the mask head reads too."""
    if self.config.backbone == "fpn":
      return self._pooled(levels[:4], _FPN_SCALES, boxes, 7)
    if self.config.backbone == "vgg16":
      return self._pooled(levels, (1 / 16,), boxes, 7)
    return backbone(self._pooled(levels, (1 / 16,), boxes, 14), train=train, start="C5")["C5"]

  def _mask_head_logits(self, k, levels, boxes, res5, num_outputs=None):
    """The mask head's logits of the first k boxes [N, S, 4] -> [N, k, M, M, num_outputs] (one per class by default;
    submodule "mask_head"). Its input: FPN, RoIAlign 14x14 from each box's level; C4, the boxes' res5 features res5
    [N, S, 7, 7, 2048], computed outside the mask loop, whose body runs convolutions slowly on XLA:CPU
    (see segjax.ops.conv.conv_as_matmul)."""
    c = self.config
    n = boxes.shape[0]
    if c.backbone == "fpn":
      x = self._pooled(levels[:4], _FPN_SCALES, boxes[:, :k], 14)
    else:
      x = res5[:, :k].reshape(n * k, *res5.shape[2:])
    head = roi_heads.MaskHead(num_outputs or self.num_classes, c.mask_head_channels,
                              num_convs=4 if c.backbone == "fpn" else 0, dtype=jnp.dtype(c.dtype), name="mask_head")
    logits = head(x)
    return logits.reshape(n, k, *logits.shape[1:])

  def _mask_logits(self, k, levels, boxes, labels, res5):
    """The mask head's logits for the class of each of the first k boxes [N, S, 4] -> [N, k, M, M]."""
    logits = self._mask_head_logits(k, levels, boxes, res5)
    return jnp.take_along_axis(logits, labels[:, :k, None, None, None], -1)[..., 0]

  def _roi_masks(self, logits, boxes, image_hw):
    """Mask logits [N, k, ...] of `_mask_logits` for boxes [N, k, 4] -> (masks pasted at input size
    [N, k, H, W], the M x M probabilities [N, k, M, M], the boxes [N, k, 4] they lie over, None for the boxes
    themselves). A model with another mask representation overrides this."""
    probabilities = jax.nn.sigmoid(logits)
    masks = jax.vmap(lambda m, b: paste_masks_in_image(m, b, *image_hw))(probabilities, boxes)
    return masks, probabilities, None

  def _on_valid_chunks(self, fn, valid, shared, *per_slot):
    """fn(module, k, shared, *per_slot) -> arrays [N, k, ...] for the first k of S slots, per_slot [N, S, ...]
    (or None), shared the operands every slot reads; valid [N, S].

    Programs for CPU (segjax.ops.platform) run fn on chunks of MASK_CHUNK_SLOTS slots per image, in a loop (one
    compiled body, however many slots), on every chunk that starts before the last valid slot of any image; the
    chunks past it get fn's outputs on no slot, zero-padded. fn must treat its slots independently (the mask head
    and the paste do): the valid slots then get the results of k = S. The loop body is rematerialised in the
    backward pass, so that the program holds one chunk's activations, not those of all slots. Other platforms, and
    init (creating the parameters under their own names), run k = S.
    """
    n, s = valid.shape
    every_slot = lambda mdl, valid, shared, *per_slot: fn(mdl, s, shared, *per_slot)
    if self.is_initializing():
      return every_slot(self, valid, shared, *per_slot)

    def chunked(mdl, valid, shared, *per_slot):
      c = min(MASK_CHUNK_SLOTS, s)
      chunks = -(-s // c)
      needed = jnp.max(jnp.where(valid, jnp.arange(1, s + 1), 0))
      pad = lambda y, size: jnp.pad(y, [(0, 0), (0, size - y.shape[1])] + [(0, 0)] * (y.ndim - 2))
      # [N, S, ...] -> [chunks, N, c, ...]: the scanned axis first.
      split = lambda x: jnp.moveaxis(pad(x, chunks * c).reshape(n, chunks, c, *x.shape[2:]), 1, 0)
      windows = jax.tree.map(split, per_slot)

      def body(mdl, needed, shared, inputs):
        start, window = inputs
        run = lambda k: lambda mdl, shared, window: jax.tree.map(lambda y: pad(y, c), fn(mdl, k, shared, *window))
        return needed, nn.cond(start < needed, run(c), run(0), mdl, shared, window)

      scan = nn.scan(nn.remat(body, prevent_cse=False), variable_broadcast=True, split_rngs={"params": False},
                     in_axes=(nn.broadcast, 0), length=chunks)
      _, outputs = scan(mdl, needed, shared, (jnp.arange(chunks) * c, windows))
      join = lambda y: jnp.moveaxis(y, 0, 1).reshape(n, chunks * c, *y.shape[3:])[:, :s]
      return jax.tree.map(join, outputs)

    return layers_platform.select(self, valid, shared, *per_slot, cpu=chunked, xla=every_slot)

  @nn.compact
  def __call__(self, images, train=False, targets=None):
    return self.detect(*self.pyramid(images, train), images.shape[1:3], train, targets)

  def pyramid(self, images, train):
    """images [N, H, W, 3] -> (the backbone module, the RPN's levels): FPN, [P2, ..., P6] (submodules "backbone",
    "fpn"); C4, [C4]."""
    c = self.config
    h, w = images.shape[1:3]
    stride = 32 if c.backbone == "fpn" else 16  # P6, or C4 / conv5_3
    if h % stride or w % stride:
      raise ValueError(f"{c.name}: image height and width must be multiples of {stride} ({c.backbone}); got {(h, w)}")
    x = normalize_images(images, c.pixel_mean, c.pixel_std)
    if c.backbone == "vgg16":
      backbone = VGG16(variant="conv5", width=c.width, dtype=jnp.dtype(c.dtype), name="backbone")
      return backbone, [backbone(x, train=train)["conv5_3"]]
    backbone = ResNet(depth=c.depth, width=c.width, norm=c.norm, deformable_stages=tuple(c.deformable_stages),
                      dtype=jnp.dtype(c.dtype), name="backbone")
    if c.backbone == "c4":
      return backbone, [backbone(x, train=train, stop="C4")["C4"]]
    pyramid = FPN(c.fpn_channels, dtype=jnp.dtype(c.dtype), name="fpn")(backbone(x, train=train))
    return backbone, [pyramid[f"P{k}"] for k in range(2, 7)]

  def detect(self, backbone, levels, image_hw, train, targets):
    """RPN and RoI heads on the levels of `pyramid`: `__call__`'s outputs (submodules "rpn_head", "box_head",
    "mask_head"; C4 runs the backbone's res5 on the RoIs)."""
    c = self.config
    fpn = c.backbone == "fpn"
    n = levels[0].shape[0]
    h, w = image_hw
    dtype = jnp.dtype(c.dtype)
    num_anchors = len(c.anchor_sizes[0]) * len(c.aspect_ratios)
    objectness, deltas = rpn.RPNHead(num_anchors, dtype=dtype, name="rpn_head")(levels)
    anchors = fpn_anchors((h, w), [l.shape[1:3] for l in levels], c.anchor_sizes, c.aspect_ratios)
    phase = "train" if train else "test"
    propose = functools.partial(
        rpn.propose, anchors=anchors, level_sizes=[l.shape[1] * l.shape[2] * num_anchors for l in levels],
        image_hw=(h, w), pre_nms_top_n=c[f"rpn_pre_nms_top_n_{phase}"],
        post_nms_top_n=c[f"rpn_post_nms_top_n_{phase}"], nms_threshold=c.rpn_nms_threshold)
    proposals, _, proposal_valid = jax.vmap(propose)(jax.lax.stop_gradient(objectness),
                                                     jax.lax.stop_gradient(deltas))
    box_head = roi_heads.BoxHead(self.num_classes, c.representation_size, num_fc=0 if c.backbone == "c4" else 2,
                                 dropout_rate=c.box_head_dropout, deterministic=not train, dtype=dtype,
                                 name="box_head")
    heads_input = functools.partial(self._heads_input, backbone, levels, train=train)
    if train:
      return self._train_outputs(targets, objectness, deltas, anchors, proposals, proposal_valid, box_head,
                                 heads_input, levels)

    class_logits, box_deltas = box_head(heads_input(proposals))
    detect = functools.partial(
        roi_heads.detect, image_hw=(h, w), score_threshold=c.score_threshold, nms_threshold=c.nms_threshold,
        detections_per_image=c.detections_per_image, candidates=c.detection_candidates)
    r = proposals.shape[1]
    boxes, scores, labels, valid = jax.vmap(detect)(
        class_logits.reshape(n, r, -1), box_deltas.reshape(n, r, -1, 4), proposals, proposal_valid)
    if c.mask:  # valid detections come first: masks of the rest are zeros
      res5 = None
      if not fpn:  # C4: res5 of every detection, outside the mask loop
        x = heads_input(boxes)
        res5 = x.reshape(n, boxes.shape[1], *x.shape[1:])

      def masks_of(mdl, k, levels, boxes, labels, res5):
        return mdl._roi_masks(mdl._mask_logits(k, levels, boxes, labels, res5), boxes[:, :k], (h, w))
      masks, mask_probabilities, mask_boxes = self._on_valid_chunks(masks_of, valid, levels, boxes, labels, res5)
    else:
      masks = box_masks(boxes, h, w)
    if self.label_map:  # config.model.category_ids: the data set's labels, after the mask head read the model's
      labels = jnp.asarray(self.label_map, jnp.int32)[labels]
      valid &= labels > 0
    masks = jnp.where(valid[..., None, None], masks, 0.0)
    outputs = {"boxes": boxes, "scores": scores, "labels": labels, "masks": masks, "valid": valid}
    if c.mask:  # the M x M masks themselves: evaluators paste them at the source image's size, as torchvision does
      outputs["mask_probabilities"] = jnp.where(valid[..., None, None], mask_probabilities, 0.0)
      if mask_boxes is not None:  # over these boxes instead of the detections'
        outputs["mask_boxes"] = jnp.where(valid[..., None], mask_boxes, 0.0)
    return outputs

  def _train_outputs(self, targets, objectness, deltas, anchors, proposals, proposal_valid, box_head, heads_input,
                     levels):
    c = self.config
    n = objectness.shape[0]
    gt_boxes, gt_classes = targets["boxes"].astype(jnp.float32), targets["classes"]
    gt_valid = targets["instance_valid"]
    if "is_crowd" in targets:  # crowds are not trained on (torchvision, detectron2); box-only sets have none
      gt_valid &= ~targets["is_crowd"]
    rpn_key, roi_key = jax.random.split(self.make_rng("sampling"))
    rpn_positive, rpn_negative, rpn_targets = rpn.batch_anchor_targets(rpn_key, anchors, gt_boxes, gt_valid, c)
    sample = functools.partial(
        roi_heads.sample_rois, fg_iou=c.roi_fg_iou, bg_iou=c.roi_bg_iou, bg_iou_low=c.roi_bg_iou_low,
        num_samples=c.roi_batch_size_per_image,
        positive_fraction=c.roi_positive_fraction)
    rois, labels, matched, positive, sampled = jax.vmap(sample)(
        jax.random.split(roi_key, n), proposals, proposal_valid, gt_boxes, gt_classes, gt_valid)
    s = rois.shape[1]
    features = heads_input(rois)
    class_logits, box_deltas = box_head(features)
    box_deltas = jnp.take_along_axis(box_deltas.reshape(n, s, -1, 4), labels[:, :, None, None], 2)[:, :, 0]
    matched_boxes = jnp.take_along_axis(gt_boxes, matched[..., None], 1)
    outputs = {
        "rpn_objectness": objectness, "rpn_deltas": deltas, "rpn_positive": rpn_positive,
        "rpn_negative": rpn_negative, "rpn_targets": rpn_targets,
        "rois": rois, "class_logits": class_logits.reshape(n, s, -1), "roi_labels": labels, "roi_valid": sampled,
        "roi_positive": positive, "box_deltas": box_deltas,
        "box_targets": jnp.where(positive[..., None], encode_boxes(matched_boxes, rois, roi_heads.BOX_CODER_WEIGHTS),
                                 0.0)}
    if c.mask:
      # The sample holds at most this many positives, all in its first slots; the mask head runs on those.
      p = min(int(c.roi_batch_size_per_image * c.roi_positive_fraction), s)
      # C4: the positives' res5 features, already computed for the box head (detectron2).
      res5 = features.reshape(n, s, *features.shape[1:])[:, :p] if c.backbone == "c4" else None
      outputs.update(self._mask_train_outputs(targets, levels, rois[:, :p], labels[:, :p], matched[:, :p],
                                              positive[:, :p], res5))
    return outputs

  def _mask_train_outputs(self, targets, levels, rois, labels, matched, positive, res5):
    """The mask branch's training outputs on the first P slots of the RoI sample (rois [N, P, 4], labels, matched
    GT index and positive [N, P]): "mask_logits" [N, P, M, M] of each RoI's class, "mask_targets" (its matched
    mask resampled to M x M), "mask_valid" [N, P]. A model with another mask head overrides this."""
    logits = self._on_valid_chunks(MaskRCNN._mask_logits, positive, levels, rois, labels, res5)
    resolution = logits.shape[2]
    targets = jax.vmap(lambda m, r, i: roi_mask_targets(m, r, i, resolution))(targets["masks"], rois, matched)
    return {"mask_logits": logits, "mask_targets": targets, "mask_valid": positive}


def _config(overrides, defaults=None) -> ml_collections.FrozenConfigDict:
  """`defaults` (model_config(backbone, name) if None) updated with `overrides`, checked by
  segjax.models.validation (an unknown key or a value of the wrong kind is an error naming it)."""
  if defaults is None:
    defaults = model_config(overrides.get("backbone", "fpn"), overrides.get("name", "mask_rcnn"))
  config = validated(overrides, defaults)
  if config.roi_pooler not in ROI_POOLERS:
    raise ValueError(f"config.model.roi_pooler: must be one of {ROI_POOLERS}; got {config.roi_pooler!r}")
  if config.roi_aggregation not in ("", "max", "avg"):
    raise ValueError(f"config.model.roi_aggregation: must be '', 'max' or 'avg'; got {config.roi_aggregation!r}")
  if config.name == "faster_rcnn" and config.mask:
    raise ValueError("config.model.mask: faster_rcnn has no mask branch; name mask_rcnn builds one")
  if config.backbone == "vgg16" and config.mask:
    raise ValueError("config.model.backbone: vgg16 has no mask head; use it with name faster_rcnn")
  return config


def num_classes_and_label_map(config, info):
  """(classes with the background, `thing_label_map` or ()) of a Mask R-CNN config; checks category_ids' length."""
  num_classes = config.num_classes or info.num_thing_classes + 1
  if config.category_ids and len(config.category_ids) != num_classes - 1:
    raise ValueError(f"config.model.category_ids: {len(config.category_ids)} ids for {num_classes - 1} classes")
  return num_classes, thing_label_map(config, info) or ()


def build(config, info):
  config = _config(config)
  num_classes, label_map = num_classes_and_label_map(config, info)
  return MaskRCNN(num_classes=num_classes, config=config, label_map=label_map)


def loss(outputs, batch, model_config):
  """torchvision's Mask R-CNN losses, summed with weight 1: RPN objectness and box, RoI classification and box
  (smooth L1, beta 1/9, normalised by the sampled RoIs), mask BCE over the positives' 28x28 targets."""
  del batch, model_config
  rpn_objectness, rpn_box = rpn.rpn_loss(outputs["rpn_objectness"], outputs["rpn_deltas"], outputs["rpn_positive"],
                                         outputs["rpn_negative"], outputs["rpn_targets"])
  classifier, box_reg = roi_heads.box_losses(outputs["class_logits"], outputs["roi_labels"], outputs["roi_valid"],
                                             outputs["roi_positive"], outputs["box_deltas"], outputs["box_targets"],
                                             beta=1 / 9)
  metrics = {"loss_objectness": rpn_objectness, "loss_rpn_box_reg": rpn_box, "loss_classifier": classifier,
             "loss_box_reg": box_reg, "num_positive_rois": outputs["roi_positive"].sum(-1).mean().astype(jnp.float32)}
  if "mask_logits" in outputs:
    logits, targets, valid = outputs["mask_logits"], outputs["mask_targets"], outputs["mask_valid"]
    bce = (jnp.logaddexp(0.0, logits) - targets * logits).mean((-2, -1))
    metrics["loss_mask"] = jnp.sum(jnp.where(valid, bce, 0.0)) / jnp.maximum(valid.sum(), 1)
  total = sum(v for k, v in metrics.items() if k.startswith("loss_"))
  return total, metrics


def predict(outputs, model_config):
  """The detections of the forward pass (its score and NMS thresholds are config.model's), with the mask head's
  M x M "mask_probabilities" [B, K, M, M] where it has one, and "mask_boxes" [B, K, 4] where they lie over other
  boxes than the detections'."""
  del model_config
  keys = ("boxes", "scores", "labels", "masks", "valid", "mask_probabilities", "mask_boxes")
  return {k: outputs[k] for k in keys if k in outputs}
