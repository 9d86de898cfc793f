"""Boundary-aware instance segmentation (Hayder, He & Salzmann, CVPR 2017) on segjax's Mask R-CNN.

The detector (backbone, FPN, RPN, box head, their losses) is segjax.models.mask_rcnn's; the mask branch predicts,
instead of one binary mask per RoI, the paper's boundary-aware representation (Sec. 3.1, segjax.ops.boundary):
K binary maps B_n, n = 1..K, B_n(p) = [D(p) in bin n], D the distance transform to the nearest pixel outside the
object truncated at R, on the M x M grid of the RoI (cells of that grid are the distance unit). The head is Mask
R-CNN's (convs, deconv) with K logits per class (class_agnostic_mask: K logits in all, as the paper's Object Mask
Network, which predicts no class).
Training: targets are the matched ground-truth mask resampled into the RoI's grid as Mask R-CNN's targets,
binarised at 0.5 and encoded; loss_mask is the per-bin sigmoid cross entropy (each bin's mean over the grid,
summed over the K bins, averaged over the positive RoIs); the other losses are Mask R-CNN's.
The paper's decoder (Sec. 3.2; the survey deck's M = U_n T(., r_n) * B_n) as a differentiable function of the maps:
transposed convolutions with the fixed disks T(., r_n) of -log(1 - B_n), summed into S, and M = 1 - exp(-S), the
probability that some disk covers the pixel (segjax.ops.boundary.soft_decode_boundary_aware; the union for 0 / 1
maps), so a binary cross entropy on the decoded mask trains the maps end to end; with
`decoder_loss_weight` > 0 that loss (the decoded grid of the RoI padded by R cells against the matched mask resampled
over the RoI grown by R cells, binarised at 0.5) is added to the per-bin one. The residual deconvolution layers
that produce the maps in the paper's Object Mask Network are Mask R-CNN's mask head here.
Inference: each map is thresholded (sigmoid > 0.5) and decoded exactly as the union of disks M = U_n T(B_n, r_n)
on the grid padded by R cells, or with `soft_decoding` the maps go through the soft decoder (a mask probability the
evaluator binarises at 0.5); the grid is pasted over the box grown by R cells on each side: pixels
at a box edge that cuts the object grow disks past the box, so the mask can extend beyond it (the paper predicts on
an enlarged box for the same reason).
K = 5 bins and R = 5 are this model's defaults, the values the task names as the paper's; they were not checked
against the paper's text here.
"""
import jax
import jax.numpy as jnp
import ml_collections

from segjax.models import mask_rcnn
from segjax.ops.boundary import decode_roi_masks, grown_boxes, quantisation_bins, roi_boundary_targets
from segjax.ops.boundary import disk_evidence
from segjax.ops.masks import roi_mask_targets

TASK = mask_rcnn.TASK
BATCH_KEYS = mask_rcnn.BATCH_KEYS
FORWARD_KEYS = mask_rcnn.FORWARD_KEYS
SIZE_DIVISIBILITY = mask_rcnn.SIZE_DIVISIBILITY
INFERENCE_KEYS = mask_rcnn.INFERENCE_KEYS | {"soft_decoding"}


def model_config(backbone: str = "fpn") -> ml_collections.ConfigDict:
  """Mask R-CNN's defaults (mask_rcnn.model_config) plus boundary_bins K, boundary_truncation R (in cells of the
  mask head's M x M grid: 28 with FPN, 14 with C4), class_agnostic_mask, the decoded mask's loss weight
  (0: the per-bin loss alone) and soft_decoding at inference."""
  config = mask_rcnn.model_config(backbone)
  config.name = "boundary_aware"
  config.update({"boundary_bins": 5, "boundary_truncation": 5, "class_agnostic_mask": False,
                 "decoder_loss_weight": 0.0, "soft_decoding": False})
  return config


class BoundaryAware(mask_rcnn.MaskRCNN):
  """Mask R-CNN's module with the boundary-aware mask branch: training outputs "boundary_logits" and
  "boundary_targets" [N, P, K, M, M] and "mask_valid" [N, P]; inference masks are the decoded maps pasted over the
  grown boxes, "mask_probabilities" the decoded grids [N, D, M + 2R, M + 2R] and "mask_boxes" the grown boxes."""

  def _mask_logits(self, k, levels, boxes, labels, res5):
    """The K maps' logits [N, k, K, M, M] of the first k boxes [N, S, 4], those of each box's class labels
    [N, S] (or the class-agnostic ones)."""
    c = self.config
    bins = c.boundary_bins
    outputs = bins if c.class_agnostic_mask else bins * self.num_classes
    logits = self._mask_head_logits(k, levels, boxes, res5, num_outputs=outputs)
    if not c.class_agnostic_mask:
      per_class = logits.reshape(*logits.shape[:-1], self.num_classes, bins)
      logits = jnp.take_along_axis(per_class, labels[:, :k, None, None, None, None], -2)[..., 0, :]
    return jnp.moveaxis(logits, -1, 2)

  def _roi_masks(self, logits, boxes, image_hw):
    """Decoded maps pasted at input size [N, k, H, W] over the boxes grown by R cells, the decoded grids
    [N, k, M + 2R, M + 2R] (as 0 / 1 probabilities) and those grown boxes [N, k, 4], which evaluators paste the
    grids over at the source image's size."""
    n, k = logits.shape[:2]
    masks, decoded, region = decode_roi_masks(logits.reshape(n * k, *logits.shape[2:]), boxes.reshape(n * k, 4),
                                              self.config.boundary_truncation, *image_hw,
                                              soft=self.config.soft_decoding)
    return masks.reshape(n, k, *masks.shape[1:]), decoded.reshape(n, k, *decoded.shape[1:]), region.reshape(n, k, 4)

  def _mask_train_outputs(self, targets, levels, rois, labels, matched, positive, res5):
    """The K maps' logits and targets of the positives among the first P RoIs of the sample."""
    c = self.config
    logits = self._on_valid_chunks(BoundaryAware._mask_logits, positive, levels, rois, labels, res5)
    m = logits.shape[-1]
    encode = lambda masks, boxes, index: roi_boundary_targets(masks, boxes, index, m, c.boundary_truncation,
                                                              c.boundary_bins)
    boundary_targets = jax.vmap(encode)(targets["masks"], rois, matched)
    outputs = {"boundary_logits": logits, "boundary_targets": boundary_targets, "mask_valid": positive}
    if c.decoder_loss_weight:
      r = c.boundary_truncation
      outputs["decoded_evidence"] = jax.vmap(jax.vmap(lambda z: disk_evidence(z, r, pad=r)))(logits)
      resample = lambda masks, boxes, index: roi_mask_targets(masks, boxes, index, m + 2 * r)
      outputs["decoded_targets"] = jax.vmap(resample)(targets["masks"], grown_boxes(rois, m, r), matched) >= 0.5
    return outputs


def _config(overrides) -> ml_collections.FrozenConfigDict:
  config = mask_rcnn._config(overrides, model_config(overrides.get("backbone", "fpn")))  # pylint: disable=protected-access
  if not config.mask:
    raise ValueError("config.model.mask: boundary_aware predicts masks; name faster_rcnn builds a box-only model")
  if config.boundary_bins < 1:
    raise ValueError(f"config.model.boundary_bins: must be >= 1; got {config.boundary_bins}")
  try:
    quantisation_bins(config.boundary_truncation, config.boundary_bins)
  except ValueError as error:
    raise ValueError(f"config.model.boundary_truncation: {error}") from None
  return config


def build(config, info):
  config = _config(config)
  num_classes, label_map = mask_rcnn.num_classes_and_label_map(config, info)
  return BoundaryAware(num_classes=num_classes, config=config, label_map=label_map)


def boundary_loss(logits, targets, valid):
  """Per-bin sigmoid cross entropy of logits and targets [N, P, K, M, M]: each bin's mean over the M x M grid,
  summed over the K bins, averaged over the valid RoIs valid [N, P] (with K = 1, Mask R-CNN's mask loss)."""
  bce = (jnp.logaddexp(0.0, logits) - targets * logits).mean((-2, -1)).sum(-1)
  return jnp.sum(jnp.where(valid, bce, 0.0)) / jnp.maximum(valid.sum(), 1)


def decoded_mask_loss(evidence, targets, valid):
  """Binary cross entropy of the soft-decoded masks M = 1 - exp(-S), from their evidence S [N, P, G, G]
  (segjax.ops.boundary.disk_evidence), and their 0 / 1 targets: -log M = -log(-expm1(-S)) inside, -log(1 - M) = S
  outside; each RoI's mean over the grid, averaged over the valid RoIs valid [N, P]."""
  t = targets.astype(jnp.float32)
  inside = -jnp.log(-jnp.expm1(-jnp.maximum(evidence, 1e-30)))
  bce = (t * inside + (1.0 - t) * evidence).mean((-2, -1))
  return jnp.sum(jnp.where(valid, bce, 0.0)) / jnp.maximum(valid.sum(), 1)


def loss(outputs, batch, model_config):
  """Mask R-CNN's RPN and RoI box losses + loss_mask, the boundary maps' per-bin cross entropy (+ weighted
  loss_mask_decoded, the decoded masks' cross entropy, where decoder_loss_weight > 0)."""
  total, metrics = mask_rcnn.loss(outputs, batch, model_config)
  metrics["loss_mask"] = boundary_loss(outputs["boundary_logits"], outputs["boundary_targets"].astype(jnp.float32),
                                       outputs["mask_valid"])
  total = total + metrics["loss_mask"]
  if "decoded_evidence" in outputs:
    metrics["loss_mask_decoded"] = decoded_mask_loss(outputs["decoded_evidence"], outputs["decoded_targets"],
                                                     outputs["mask_valid"])
    total = total + model_config.decoder_loss_weight * metrics["loss_mask_decoded"]
  return total, metrics


def predict(outputs, model_config):
  """Mask R-CNN's detections; masks are the decoded boundary maps at input size, mask_probabilities the decoded
  grids over mask_boxes, the boxes grown by R cells."""
  return mask_rcnn.predict(outputs, model_config)
