"""Fast R-CNN (Girshick 2015) with VGG-16 on external proposals, as a box detector (TASK "detection", VOC mAP).

images [N, H, W, 3] in [0, 1] -> normalised -> VGG-16 conv1_1..conv5_3 (stride 16) -> RoI max pooling 7x7 of each
proposal's projection on conv5_3 (segjax.ops.roi.roi_pool, scale 1/16) -> fc6, fc7 (4096, ReLU, dropout 0.5) ->
softmax over K+1 classes and class-specific box deltas (roi_heads.BoxHead). There is no RPN: the proposals come
with the data, the batch keys "proposals" [N, P, 4] and "proposal_valid" [N, P] (INPUT_KEYS: the forward pass reads
them in training and at inference). The paper's are selective search's ~2000 boxes per image; the data pipeline's
stand-in (config.dataset.num_proposals, segjax/data/proposals.py) jitters the ground-truth boxes and adds random
ones.
Training (Sec. 2.3): each image's proposals plus its ground-truth boxes are sampled hierarchically, 64 RoIs per
image of which 25% foreground (IoU >= 0.5, labelled with the matched box's class) and the rest background with a
best IoU in [0.1, 0.5) (roi_heads.sample_rois); the multi-task loss (Eq. 1) is the log loss of the true class plus
lambda = 1 times smooth L1 (Eq. 3, transition 1) of the true class's box deltas on foreground RoIs, targets
normalised by (0.1, 0.1, 0.2, 0.2) as py-faster-rcnn's BBOX_NORMALIZE_STDS (roi_heads.BOX_CODER_WEIGHTS).
Inference: per-class boxes, score threshold, per-class NMS 0.3, the best detections (roi_heads.detect).
SPP-net (He et al. 2014, Sec. 4; model_config("sppnet"), registered as "sppnet"): the same detector with ZF-5's conv5
(segjax.backbones.zf, 256 channels) and, in place of RoI pooling, spatial pyramid pooling of each proposal's window
projected on conv5 (segjax.ops.spp: 6x6, 3x3, 2x2, 1x1 bins, 12,800 values) into fc6; fine-tuning trains fc6, fc7
and the softmax (the experiment freezes the convolutions) on the same RoI sampling, without box regression
(box_loss_weight 0); `roi_features` gives fc7 for the SVMs and the ridge box regressors (segjax.ops.svm,
segjax.ops.box_regression).
R-CNN (Girshick et al. 2014; model_config("rcnn"), registered as "rcnn"): AlexNet (segjax.backbones.alexnet) on
each proposal warped to 227x227 with 16 pixels of context (segjax.ops.roi.warp_regions), pool5 into fc6/fc7 and the softmax,
fine-tuned on RoIs with 25% positives at IoU >= 0.5 and the rest background (the paper's 32 + 96 of 128 regions),
then the same SVM and ridge stages on fc7.
Truncated SVD (Sec. 3.1): `truncated_svd(params, fc6_rank, fc7_rank)` converts trained fc6/fc7 into the two-layer
form that a config with model.fc6_rank / fc7_rank builds (the paper: 1024 and 256).
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from segjax.backbones.alexnet import AlexNet
from segjax.backbones.vgg import VGG16
from segjax.backbones.zf import ZF5
from segjax.models import roi_heads, thing_label_map
from segjax.models.validation import validated
from segjax.ops.boxes import encode_boxes
from segjax.ops.image import IMAGENET_MEAN, IMAGENET_STD, normalize_images
from segjax.ops.roi import roi_pool, warp_regions
from segjax.ops.spp import project_boxes, region_pyramid_pool
from segjax.ops.truncated_svd import factor_kernel

TASK = "detection"
INPUT_KEYS = ("proposals", "proposal_valid")
FORWARD_KEYS = ("boxes", "classes", "instance_valid")
BATCH_KEYS = ("image",) + FORWARD_KEYS + INPUT_KEYS
INFERENCE_KEYS = frozenset({"score_threshold", "nms_threshold", "detections_per_image", "detection_candidates"})
SIZE_DIVISIBILITY = 16  # conv5_3's stride
NAMES = ("fast_rcnn", "sppnet", "rcnn")
BACKBONES = {"vgg16": 64, "zf5": 96, "alexnet": 96}  # backbone: its full width
POOLERS = ("pool", "spp", "warp")


def model_config(name: str = "fast_rcnn") -> ml_collections.ConfigDict:
  """Fast R-CNN's VGG-16 (py-faster-rcnn's fast_rcnn config and VGG16 prototxt): 64 RoIs per image, 25% foreground,
  background IoU in [0.1, 0.5), lambda 1, test NMS 0.3; num_classes None: the data set's things + background.
  name "sppnet": SPP-net's ZF-5 with the spatial pyramid pooler, fine-tuned without box regression; "rcnn": R-CNN's
  AlexNet on warped regions, fine-tuned on background below IoU 0.5 without a lower bound, no box regression."""
  if name not in NAMES:
    raise ValueError(f"config.model.name: one of {NAMES}; got {name!r}")
  spp, rcnn = name == "sppnet", name == "rcnn"
  backbone, pooler = {"sppnet": ("zf5", "spp"), "rcnn": ("alexnet", "warp")}.get(name, ("vgg16", "pool"))
  return ml_collections.ConfigDict({
      "name": name, "backbone": backbone, "roi_pooler": pooler, "warp_size": 227, "context_padding": 16,
      "num_classes": None, "width": BACKBONES[backbone], "pixel_mean": IMAGENET_MEAN, "pixel_std": IMAGENET_STD,
      "representation_size": 4096, "box_head_dropout": 0.5, "fc6_rank": 0, "fc7_rank": 0,
      "roi_fg_iou": 0.5, "roi_bg_iou": 0.5, "roi_bg_iou_low": 0.0 if rcnn else 0.1, "roi_batch_size_per_image": 64,
      "roi_positive_fraction": 0.25, "box_loss_weight": 0.0 if spp or rcnn else 1.0, "smooth_l1_beta": 1.0,
      "score_threshold": 0.05, "nms_threshold": 0.3, "detections_per_image": 100, "detection_candidates": 4096,
      "category_ids": (), "dtype": "float32"})


class FastRCNN(nn.Module):
  """module(images, train, targets, proposals, proposal_valid) -> outputs: training, what `loss` reads; else the
  detections (boxes, scores, labels, valid) of `predict`'s contract."""
  num_classes: int  # with the background, class 0
  config: ml_collections.FrozenConfigDict
  label_map: tuple[int, ...] = ()

  @nn.compact
  def __call__(self, images, train=False, targets=None, proposals=None, proposal_valid=None):
    c = self.config
    n, h, w = images.shape[:3]
    if proposals is None:  # module.init(images) and a bare forward pass: one invalid proposal, no detections
      proposals, proposal_valid = jnp.zeros((n, 1, 4)), jnp.zeros((n, 1), bool)
    dtype = jnp.dtype(c.dtype)
    x = normalize_images(images, c.pixel_mean, c.pixel_std)
    if c.roi_pooler == "warp":  # R-CNN: the network runs on each warped region, not on the image
      conv5 = None
    elif c.backbone == "zf5":
      conv5 = ZF5(width=c.width, dtype=dtype, name="backbone")(x, train=train)["conv5"]
    else:
      conv5 = VGG16(variant="conv5", width=c.width, dtype=dtype, name="backbone")(x, train=train)["conv5_3"]
    box_head = roi_heads.BoxHead(self.num_classes, c.representation_size, dropout_rate=c.box_head_dropout,
                                 deterministic=not train, ranks=(c.fc6_rank, c.fc7_rank), dtype=dtype,
                                 name="box_head")
    proposals = proposals.astype(jnp.float32)
    proposal_valid = proposal_valid.astype(bool)

    def head(boxes):
      r = boxes.shape[1]
      boxes = jax.lax.stop_gradient(boxes)
      if c.roi_pooler == "warp":
        pooled = AlexNet(width=c.width, dtype=dtype, name="backbone")(warp_regions(x, boxes, c.warp_size,
                                                                                  c.context_padding))["pool5"]
      elif c.roi_pooler == "spp":  # SPP-net Sec. 4.1: windows projected on conv5, clipped to the map
        map_hw = jnp.array(conv5.shape[2:0:-1] * 2) - 1
        cells = jnp.clip(project_boxes(boxes, 16), 0, map_hw)
        pooled = jax.vmap(region_pyramid_pool)(conv5, cells).reshape(n * r, -1)
      else:
        batch_index = jnp.repeat(jnp.arange(n, dtype=jnp.float32), r)[:, None]
        pooled = roi_pool(conv5, jnp.concatenate([batch_index, boxes.reshape(-1, 4)], 1), 7, 1 / 16)
      logits, deltas = box_head(pooled)
      return logits.reshape(n, r, -1), deltas.reshape(n, r, -1, 4)

    if train:
      gt_boxes, gt_classes = targets["boxes"].astype(jnp.float32), targets["classes"]
      sample = functools.partial(
          roi_heads.sample_rois, fg_iou=c.roi_fg_iou, bg_iou=c.roi_bg_iou, bg_iou_low=c.roi_bg_iou_low,
          num_samples=c.roi_batch_size_per_image, positive_fraction=c.roi_positive_fraction)
      rois, labels, matched, positive, sampled = jax.vmap(sample)(
          jax.random.split(self.make_rng("sampling"), n), proposals, proposal_valid, gt_boxes, gt_classes,
          targets["instance_valid"])
      class_logits, deltas = head(rois)
      deltas = jnp.take_along_axis(deltas, labels[:, :, None, None], 2)[:, :, 0]
      matched_boxes = jnp.take_along_axis(gt_boxes, matched[..., None], 1)
      box_targets = encode_boxes(matched_boxes, rois, roi_heads.BOX_CODER_WEIGHTS)
      return {"class_logits": class_logits, "roi_labels": labels, "roi_valid": sampled, "roi_positive": positive,
              "box_deltas": deltas, "box_targets": jnp.where(positive[..., None], box_targets, 0.0)}

    class_logits, deltas = head(proposals)
    detect = functools.partial(
        roi_heads.detect, image_hw=(h, w), score_threshold=c.score_threshold, nms_threshold=c.nms_threshold,
        detections_per_image=c.detections_per_image, candidates=c.detection_candidates)
    boxes, scores, labels, valid = jax.vmap(detect)(class_logits, deltas, proposals, proposal_valid)
    if self.label_map:
      labels = jnp.asarray(self.label_map, jnp.int32)[labels]
      valid &= labels > 0
    return {"boxes": boxes, "scores": scores, "labels": labels, "valid": valid}


def build(config, info):
  config = validated(config, model_config(config.get("name", "fast_rcnn")))
  if config.backbone not in BACKBONES or config.roi_pooler not in POOLERS:
    raise ValueError(f"config.model: backbone one of {tuple(BACKBONES)}, roi_pooler one of {POOLERS}; got "
                     f"{config.backbone!r}, {config.roi_pooler!r}")
  num_classes = config.num_classes or info.num_thing_classes + 1
  if config.category_ids and len(config.category_ids) != num_classes - 1:
    raise ValueError(f"config.model.category_ids: {len(config.category_ids)} ids for {num_classes - 1} classes")
  return FastRCNN(num_classes=num_classes, config=config, label_map=thing_label_map(config, info) or ())


def loss(outputs, batch, model_config):
  """Eq. 1: L = L_cls + lambda [u >= 1] L_loc over the sampled RoIs (roi_heads.box_losses)."""
  del batch
  classification, box = roi_heads.box_losses(
      outputs["class_logits"], outputs["roi_labels"], outputs["roi_valid"], outputs["roi_positive"],
      outputs["box_deltas"], outputs["box_targets"], beta=model_config.get("smooth_l1_beta", 1.0))
  box = model_config.get("box_loss_weight", 1.0) * box
  metrics = {"loss_classifier": classification, "loss_box_reg": box,
             "num_positive_rois": outputs["roi_positive"].sum(-1).mean().astype(jnp.float32)}
  return classification + box, metrics


def predict(outputs, model_config):
  del model_config
  return {k: outputs[k] for k in ("boxes", "scores", "labels", "valid")}


def roi_features(module, variables, images, proposals, proposal_valid):
  """fc7's output [N, P, representation_size] for each proposal (the features R-CNN's and SPP-net's SVMs and box
  regressors are trained on), from the forward pass's "intermediates"."""
  _, state = module.apply(variables, images, proposals=proposals, proposal_valid=proposal_valid,
                          mutable=["intermediates"])
  features = state["intermediates"]["box_head"]["features"][0]
  return features.reshape(*proposals.shape[:2], -1)


def truncated_svd(params, fc6_rank, fc7_rank):
  """Trained Fast R-CNN params -> those of the model with model.fc6_rank / fc7_rank (Sec. 3.1): each fc kernel
  factored by segjax.ops.truncated_svd.factor_kernel into "fcN_sv" (no bias) and "fcN_u" (the fc's bias); a rank
  of 0 leaves that fc as it is."""
  head = dict(params["box_head"])
  for name, rank in (("fc6", fc6_rank), ("fc7", fc7_rank)):
    if rank:
      layer = head.pop(name)
      first, second = factor_kernel(layer["kernel"], rank)
      head[f"{name}_sv"] = {"kernel": jnp.asarray(first)}
      head[f"{name}_u"] = {"kernel": jnp.asarray(second), "bias": layer["bias"]}
  return {**params, "box_head": head}
