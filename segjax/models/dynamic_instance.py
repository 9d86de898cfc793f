"""Dynamically Instantiated Network (Arnab & Torr, "Pixelwise Instance Segmentation with a Dynamically Instantiated
Network", CVPR 2017): an instance CRF over a semantic segmentation and object detections.

The network (Sec. 3, Fig. 2): a semantic segmentation subnetwork gives Q [H, W, K + 1] (background and the K thing
classes); a detector gives D boxes with thing label l_k and score s_k; the instance subnetwork is a CRF with D + 1
labels per pixel (background, one per detection), whose unaries combine a box, a global and a shape term of Q and
the detections and whose pairwise term is the DenseCRF's, its mean field unrolled as an RNN so that the unary and
pairwise weights train end to end (segjax/ops/instance_crf.py, segjax/layers/instance_crf.py). Its output is a
labelling: detection k's mask is the pixels whose most probable label is k.

Here, on one trunk (segjax's ResNet-FPN):
  * the detector is segjax's Faster R-CNN (segjax.models.mask_rcnn, mask=False: RPN and box head with their losses),
    trained jointly on the shared trunk. The paper's detector is a separately trained R-FCN that the instance
    network does not train;
  * the semantic subnetwork is Panoptic FPN's semantic branch (segjax.models.panoptic_fpn.SemanticFPNHead) with
    K + 1 classes, its targets the instance masks' thing labels (0 elsewhere, crowds ignored), trained with the
    per-pixel cross entropy (weight semantic_loss_weight) and through the CRF. The paper uses a pretrained FCN
    (DeepLab-style) network, trained first and then fine-tuned with the instance subnetwork;
  * in training the CRF's detections are the ground-truth boxes (crowds left out), each coordinate moved by a
    uniform fraction in [-box_jitter, box_jitter] of the box's width or height, with score 1; at inference they are
    the detector's (up to detections_per_image, above score_threshold). The loss is Sec. 3.4's: the CRF's marginals
    matched to the ground-truth instances by the Hungarian algorithm, then the per-pixel cross entropy (weight
    instance_loss_weight; segjax.ops.instance_crf.matched_instance_targets).
  * a detection's score is the detector's s_k; its mask the pixels the CRF labels k.

The paper reports, on PASCAL VOC 2012 val (SBD's instance annotations), AP^r at IoU 0.5 of 61.7 and AP^r_vol 55.5:
these numbers come from the task statement and are unverified (the paper's text was not available here), as is
the exact form of the unary terms (see segjax/ops/instance_crf.py).
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from segjax.constants import IGNORE_LABEL
from segjax.layers.instance_crf import InstanceCRF
from segjax.models import mask_rcnn
from segjax.models.panoptic_fpn import SemanticFPNHead
from segjax.ops.instance_crf import matched_instance_targets
from segjax.ops.losses import softmax_cross_entropy
from segjax.ops.pooling import resize_bilinear

TASK = "instance"
BATCH_KEYS = mask_rcnn.BATCH_KEYS
FORWARD_KEYS = mask_rcnn.FORWARD_KEYS
SIZE_DIVISIBILITY = mask_rcnn.SIZE_DIVISIBILITY
INFERENCE_KEYS = mask_rcnn.INFERENCE_KEYS | {"crf.test_iterations"}
THINGS_PANOPTIC = True  # predict's labelling is also a panoptic map of the things (segjax.models' contract)


def model_config() -> ml_collections.ConfigDict:
  """Faster R-CNN's defaults (mask_rcnn.model_config, mask False) plus the semantic branch's width, the loss
  weights, the training boxes' jitter and the instance CRF's fields (segjax.layers.instance_crf.InstanceCRF: unary
  weights 1, CRF-as-RNN's kernel widths and weights, one 16 x 16 template per class, 5 mean-field iterations in
  training and 10 at test)."""
  config = mask_rcnn.model_config()
  config.update({
      "name": "dynamic_instance", "mask": False, "semantic_channels": 128, "semantic_loss_weight": 1.0,
      "instance_loss_weight": 1.0, "box_jitter": 0.1,
      "crf": {"w_box": 1.0, "w_global": 1.0, "w_shape": 1.0, "w_bilateral": 5.0, "w_spatial": 3.0,
              "theta_alpha": 160.0, "theta_beta": 3.0, "theta_gamma": 3.0, "num_templates": 1, "template_size": 16,
              "train_iterations": 5, "test_iterations": 10, "filter": "lattice", "lattice_capacity": None}})
  return config


def jitter_boxes(key, boxes, fraction, height, width):
  """Boxes [..., 4] with each coordinate moved by U(-fraction, fraction) times the box's width (x) or height (y),
  clipped to the image and kept at least one pixel wide."""
  size = jnp.concatenate([boxes[..., 2:] - boxes[..., :2]] * 2, -1)
  moved = boxes + jax.random.uniform(key, boxes.shape, minval=-fraction, maxval=fraction) * size
  limit = jnp.array([width, height, width, height], jnp.float32)
  moved = jnp.clip(moved, 0.0, limit)
  low = jnp.minimum(moved[..., :2], limit[:2] - 1)
  return jnp.concatenate([low, jnp.maximum(moved[..., 2:], low + 1)], -1)


class DynamicInstanceNetwork(mask_rcnn.MaskRCNN):
  """module(images, train, targets, detections=None) -> training: Faster R-CNN's outputs plus "semantic_logits"
  [N, H, W, K + 1], "instance_logits" [N, H, W, D + 1] and "crf_valid" [N, D] (the jittered ground truth's
  detections); inference: the detections (boxes, scores, labels, valid [N, D]), "semantic_logits" and
  "instance_logits". `detections` (a dict of boxes, labels, scores, valid) replaces the detector's at inference."""

  @nn.compact
  def __call__(self, images, train=False, targets=None, detections=None):
    c = self.config
    h, w = images.shape[1:3]
    backbone, levels = self.pyramid(images, train)
    outputs = self.detect(backbone, levels, (h, w), train, targets)
    head = SemanticFPNHead(self.num_classes, c.semantic_channels, dtype=jnp.dtype(c.dtype), name="semantic_head")
    semantic_logits = head(levels[:4]).astype(jnp.float32)
    semantic_logits = resize_bilinear(semantic_logits, 4 * semantic_logits.shape[1], 4 * semantic_logits.shape[2])
    if train:
      boxes = jitter_boxes(self.make_rng("sampling"), targets["boxes"].astype(jnp.float32), c.box_jitter, h, w)
      valid = targets["instance_valid"] & ~targets["is_crowd"]
      detections = {"boxes": boxes, "labels": jnp.where(valid, targets["classes"], 1),
                    "scores": jnp.ones(valid.shape, jnp.float32), "valid": valid}
    elif detections is None:
      detections = {k: outputs[k] for k in ("boxes", "labels", "scores", "valid")}
    else:
      outputs = {**outputs, **detections}
    crf = InstanceCRF(**c.crf.to_dict(), name="instance_crf")
    labels = jnp.clip(detections["labels"], 1, self.num_classes - 1)
    instance_logits = crf(jax.nn.softmax(semantic_logits, -1), 255.0 * images, detections["boxes"], labels,
                          detections["scores"], detections["valid"], train=train)
    outputs = {**outputs, "semantic_logits": semantic_logits, "instance_logits": instance_logits}
    if train:
      outputs["crf_valid"] = detections["valid"]
    return outputs


def _config(overrides):
  config = mask_rcnn._config(overrides, model_config())  # pylint: disable=protected-access
  if config.mask:
    raise ValueError("config.model.mask: the instance CRF gives the masks; the detector is box-only (mask=False)")
  if config.backbone != "fpn":
    raise ValueError(f"config.model.backbone: the semantic branch reads the FPN; got {config.backbone!r}")
  if config.semantic_channels % 32:
    raise ValueError(f"config.model.semantic_channels must be a multiple of 32 (GroupNorm's 32 groups); got "
                     f"{config.semantic_channels}")
  if config.category_ids:
    raise ValueError("config.model.category_ids: the semantic branch and the detector share the data set's labels")
  return config


def build(config, info):
  config = _config(config)
  num_classes, _ = mask_rcnn.num_classes_and_label_map(config, info)
  return DynamicInstanceNetwork(num_classes=num_classes, config=config, label_map=())


def semantic_targets(masks, classes, valid, is_crowd):
  """Per-pixel targets [N, H, W] of the semantic branch from the instances (masks [N, M, H, W], classes, valid,
  is_crowd [N, M]): the thing label of the instance covering the pixel, IGNORE_LABEL on crowds, 0 elsewhere."""
  code = jnp.where(is_crowd, IGNORE_LABEL, classes)
  code = jnp.where(valid, code, 0)
  return jnp.max(jnp.where(masks > 0, code[:, :, None, None], 0), axis=1).astype(jnp.int32)


def loss(outputs, batch, model_config):
  """Faster R-CNN's RPN and RoI losses + semantic_loss_weight x the semantic branch's cross entropy +
  instance_loss_weight x the matched cross entropy of the instance CRF (Sec. 3.4); crf_overflow is the fraction of
  images whose lattice overflowed (NaN logits: raise config.model.crf.lattice_capacity)."""
  c = _config(model_config)
  total, metrics = mask_rcnn.loss(outputs, batch, model_config)
  semantic = semantic_targets(batch["masks"], batch["classes"], batch["instance_valid"], batch["is_crowd"])
  metrics["loss_sem_seg"] = c.semantic_loss_weight * softmax_cross_entropy(outputs["semantic_logits"], semantic)
  logits = outputs["instance_logits"]
  n, h, w, num_labels = logits.shape
  probabilities = jax.nn.softmax(logits, -1).reshape(n, h * w, num_labels)
  masks = batch["masks"].reshape(n, batch["masks"].shape[1], h * w)
  targets, match = jax.vmap(matched_instance_targets)(probabilities, outputs["crf_valid"], masks,
                                                      batch["instance_valid"], batch["is_crowd"])
  metrics["loss_instance"] = c.instance_loss_weight * softmax_cross_entropy(logits, targets.reshape(n, h, w))
  metrics["matched_instances"] = match.sum((1, 2)).mean().astype(jnp.float32)
  metrics["crf_overflow"] = jnp.isnan(logits).any((1, 2, 3)).mean()
  return total + metrics["loss_sem_seg"] + metrics["loss_instance"], metrics


def predict(outputs, model_config):
  """The detections with the CRF's labelling as their masks: detection k's mask is the pixels whose most probable
  label is k (0 / 1 floats [B, D, H, W]); a detection that wins no pixel is not valid. The labelling is also a
  things-only panoptic map (the panoptic contract of segjax.models, no stuff rows): segment k + 1 is detection k,
  0 the background, so the evaluator scores PQ over the thing categories (THINGS_PANOPTIC)."""
  del model_config
  labels = jnp.argmax(outputs["instance_logits"], -1)  # [B, H, W]
  num_detections = outputs["boxes"].shape[1]
  ids = jnp.arange(1, num_detections + 1, dtype=jnp.int32)
  masks = labels[:, None] == ids[None, :, None, None]
  valid = outputs["valid"] & masks.any((2, 3))
  masks = masks & valid[..., None, None]
  scores = jnp.where(valid, outputs["scores"], 0.0)
  classes = jnp.where(valid, outputs["labels"], 0).astype(jnp.int32)
  panoptic = (masks * ids[None, :, None, None]).sum(1).astype(jnp.int32)  # masks are disjoint
  order = jnp.argsort(~valid, axis=1, stable=True)  # valid rows first, in id order
  rows = lambda x: jnp.take_along_axis(x, order, 1)
  segment_valid = rows(valid)
  return {"boxes": jnp.where(valid[..., None], outputs["boxes"], 0.0), "scores": scores, "labels": classes,
          "masks": masks.astype(jnp.float32), "valid": valid, "panoptic": panoptic,
          "segment_id": jnp.where(segment_valid, rows(jnp.broadcast_to(ids, valid.shape)), 0),
          "segment_category": rows(classes), "segment_is_thing": segment_valid, "segment_score": rows(scores),
          "segment_area": rows(masks.sum((2, 3)).astype(jnp.int32)), "segment_valid": segment_valid}
