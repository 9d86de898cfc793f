"""SDS: Simultaneous Detection and Segmentation (Hariharan, Arbelaez, Girshick & Malik, ECCV 2014), as an instance
segmentation model (TASK "instance": masks scored by COCO mask AP and SDS's own AP^r, segjax/evaluation/voc_regions.py).

Region candidates (Sec. 3.1) come with the data, as masks: the batch keys "region_masks" [N, P, H, W] and
"region_valid" [N, P] (INPUT_KEYS, read in training and at inference). The paper's are MCG's ~2000 per image: the
data pipeline reads MCG's candidate files (config.dataset.num_region_proposals, region_proposal_dirs;
segjax/data/region_candidate_files.py; scripts/region_candidates.py writes selective search's regions in that layout),
else its stand-in (segjax/data/region_proposals.py) moves, grows, shrinks, cuts and merges the ground-truth masks
and adds random ellipses.
Features (Sec. 3.2, network C, the two pathways fine-tuned jointly): each region's bounding box dilated for
`context_padding` pixels of context at `warp_size` and warped to warp_size x warp_size as R-CNN does
(segjax.ops.roi.warp_regions) feeds the box pathway; the same warp with the pixels outside the region's (warped) mask set
to the image mean, 0 after mean subtraction (`region_inputs`; the reference's rcnn_im_crop_mask.m multiplies the mean-
subtracted window by the nearest-resized mask), feeds the region pathway. Each pathway is AlexNet to pool5
(segjax.backbones.alexnet), fc6 and fc7 (ReLU, dropout 0.5); the two fc7 are concatenated (the reference's "join")
and one layer scores the K+1 classes (fc8).
Fine-tuning (Sec. 3.2; the reference's piwindow_train.prototxt): regions sampled from the proposals and the ground-
truth masks, 25% of `roi_batch_size_per_image` foreground, a region whose best region overlap (mask IoU) with a
ground-truth mask is >= 0.5 labelled with that object's class, the rest background (fg and bg thresholds 0.5),
softmax log loss. Crowd objects are no ground truth to match. `region_features` gives the concatenated fc7 on which
the paper's per-class linear SVMs are trained (Sec. 3.3: positives the ground-truth regions, negatives the regions
overlapping every object of the class by less than 0.2 in the reference's train_svms.m, hard negative mining;
scripts/sds_svm_stage.py with segjax.ops.svm); the network's softmax scores the detections here.
Inference (Sec. 3.3, 3.4): every (region, foreground class) pair is a candidate with the softmax score; the best
`detection_candidates` above `score_threshold`, class-wise non-maximum suppression on region overlap at
`nms_threshold` (segjax.ops.soft_nms, "hard"; the reference's region_nms.m drops every region that shares a pixel with
a picked one), the best `detections_per_image`. The detection's mask is its region, refined when `refinement`.
Region refinement (Sec. 3.4): the region's box expanded by the warp's context (the reference's expand_box with
16 / (227 - 32) of the width and height on each side: the warped frame) carries a G x G grid (G = refine_grid, 10);
one logistic predictor per class and cell reads the region's features (the concatenated fc7) and the region's mask
resampled to the grid (the prior), giving a coarse figure-ground mask. Its cells are pasted into the image
(`paste_grid`: each pixel takes the cell its centre falls in, 0 outside the expanded box) and a per-class logistic
of (coarse value, original region's value) decides each pixel (the reference decides each superpixel from the
coarse mask's superpixel mean; there are no superpixels here, so a pixel is its own). Both stages train on the
sampled regions overlapping an object of their class by >= refine_iou (0.7): the grid cells against the object's
mask resampled to the grid (> 0.5), the pixels where the coarse mask exceeds 0.2 or the region holds them against
the object's mask, each by the log loss of its logistic, on the fixed features (stop-gradient: the reference trains
them after the network) and, for the second stage, the fixed coarse mask.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from segjax.backbones.alexnet import AlexNet
from segjax.models import thing_label_map
from segjax.models.validation import validated
from segjax.ops.image import IMAGENET_MEAN, IMAGENET_STD, normalize_images
from segjax.ops.masks import mask_iou, masks_to_boxes
from segjax.ops.matching import sample_balanced
from segjax.ops.roi import roi_align, warp_regions
from segjax.ops.soft_nms import soft_nms

TASK = "instance"
INPUT_KEYS = ("region_masks", "region_valid")
FORWARD_KEYS = ("masks", "classes", "is_crowd", "instance_valid")
BATCH_KEYS = ("image",) + FORWARD_KEYS + INPUT_KEYS
INFERENCE_KEYS = frozenset({"score_threshold", "nms_threshold", "detections_per_image", "detection_candidates"})
COARSE_SUPPORT = 0.2  # train_refiner.m: the second stage learns on pixels with coarse > 0.2 or inside the region


def model_config() -> ml_collections.ConfigDict:
  """SDS's network C (the reference's piwindow_train.prototxt): two AlexNets of width 96, fc6/fc7 4096 with dropout
  0.5, 227 x 227 warps with 16 pixels of context, 128 regions per minibatch at 25% foreground (here per image),
  foreground at region overlap >= 0.5; the refinement's 10 x 10 grid trained on regions overlapping >= 0.7;
  num_classes None: the data set's things + background."""
  return ml_collections.ConfigDict({
      "name": "sds", "num_classes": None, "width": 96, "warp_size": 227, "context_padding": 16,
      "representation_size": 4096, "box_head_dropout": 0.5, "pixel_mean": IMAGENET_MEAN, "pixel_std": IMAGENET_STD,
      "roi_fg_iou": 0.5, "roi_bg_iou": 0.5, "roi_batch_size_per_image": 128, "roi_positive_fraction": 0.25,
      "refinement": True, "refine_grid": 10, "refine_iou": 0.7, "refine_loss_weight": 1.0,
      "score_threshold": 0.05, "nms_threshold": 0.3, "detections_per_image": 100, "detection_candidates": 1000,
      "category_ids": (), "dtype": "float32"})


def region_boxes(masks):
  """Tight boxes [..., R, 4] (x1, y1, x2, y2, pixel edges) of masks [..., R, H, W]; an empty mask gets the unit box
  at the origin (its features are never used)."""
  shape = masks.shape
  flat = masks.reshape(-1, *shape[-2:])
  boxes = masks_to_boxes(flat) + jnp.array([0, 0, 1, 1], jnp.float32)
  return boxes.reshape(*shape[:-2], 4)


def expanded_boxes(boxes, warp_size, context_padding):
  """The warped frame of each box: half-sides scaled by warp_size / (warp_size - 2 context_padding), as
  segjax.ops.roi.warp_regions dilates them (the reference's expand_box(box, 16 / (227 - 32)))."""
  centre, half = (boxes[..., :2] + boxes[..., 2:]) / 2, (boxes[..., 2:] - boxes[..., :2]) / 2
  half = half * warp_size / (warp_size - 2 * context_padding)
  return jnp.concatenate([centre - half, centre + half], -1)


def resample_masks(masks, boxes, size, sampling_ratio):
  """Each mask of masks [R, H, W] sampled over its own box [R, 4] (pixel edges) to size x size by RoIAlign
  (bilinear, `sampling_ratio` samples per bin side averaged); 0 outside the image. Returns [R, size, size]."""
  r = masks.shape[0]
  rois = jnp.concatenate([jnp.arange(r, dtype=jnp.float32)[:, None], boxes], 1)
  return roi_align(masks[..., None].astype(jnp.float32), rois, size, sampling_ratio=sampling_ratio,
                   aligned=True)[..., 0]


def region_inputs(x, boxes, masks, warp_size, context_padding):
  """The two pathways' inputs (Sec. 3.2): x [N, H, W, C] the normalised images, boxes [N, R, 4], masks [N, R, H, W]
  -> (box warps, region warps) [N * R, S, S, C]: the R-CNN warp of each box, and the same warp with every sample whose
  bilinearly warped mask is below 0.5 set to 0 (the mean after normalisation)."""
  n, r = boxes.shape[:2]
  warped = warp_regions(x, boxes, warp_size, context_padding)
  frames = expanded_boxes(boxes, warp_size, context_padding).reshape(-1, 4)
  warped_masks = resample_masks(masks.reshape(n * r, *masks.shape[2:]), frames, warp_size, 1)
  return warped, warped * (warped_masks >= 0.5)[..., None].astype(warped.dtype)


def paste_grid(grids, boxes, height, width):
  """Coarse masks grids [R, G, G] over boxes [R, 4] (pixel edges) -> [R, height, width]: each pixel takes the value
  of the cell its centre falls in (cells split the box evenly), 0 where its centre is outside the box (the
  reference's place_indices + apply_mask, at pixel centres)."""
  g = grids.shape[-1]

  def cells(lo, hi, length):  # [R, length, G] one-hot of each pixel's cell, zero rows outside the box
    centre = jnp.arange(length, dtype=jnp.float32) + 0.5
    index = jnp.floor((centre[None] - lo[:, None]) / jnp.maximum(hi - lo, 1e-6)[:, None] * g)
    return jax.nn.one_hot(jnp.where((index >= 0) & (index < g), index, -1).astype(jnp.int32), g)

  wy, wx = cells(boxes[:, 1], boxes[:, 3], height), cells(boxes[:, 0], boxes[:, 2], width)
  return jnp.einsum("rhg,rgk,rwk->rhw", wy, grids.astype(jnp.float32), wx, precision=jax.lax.Precision.HIGHEST)


class Pathway(nn.Module):
  """AlexNet to pool5, then fc6 and fc7 (ReLU, dropout): one of network C's two pathways."""
  width: int
  representation_size: int
  dropout_rate: float
  dtype: jnp.dtype

  @nn.compact
  def __call__(self, x, train):
    pooled = AlexNet(width=self.width, dtype=self.dtype, name="alexnet")(x)["pool5"]
    h = pooled.reshape(pooled.shape[0], -1)
    for name in ("fc6", "fc7"):
      h = nn.relu(nn.Dense(self.representation_size, dtype=self.dtype, name=name)(h))
      h = nn.Dropout(self.dropout_rate, deterministic=not train)(h)
    return h


class Refiner(nn.Module):
  """Sec. 3.4's two stages for regions of known classes: per class, G x G logistic cells on (features, prior) and
  the per-pixel logistic of (pasted coarse mask, region)."""
  num_classes: int
  grid: int

  def coarse_logits(self, features, prior, classes):
    """features [R, F], prior [R, G, G], classes [R] (1..K-1) -> the coarse masks' logits [R, G, G]."""
    g = self.grid
    inputs = jnp.concatenate([jax.lax.stop_gradient(features), prior.reshape(prior.shape[0], -1)], 1)
    logits = nn.Dense((self.num_classes - 1) * g * g, kernel_init=nn.initializers.zeros, name="cells")(inputs)
    logits = logits.reshape(-1, self.num_classes - 1, g * g)
    return jnp.take_along_axis(logits, (classes - 1)[:, None, None], 1)[:, 0].reshape(-1, g, g)

  def pixel_logits(self, coarse, region, classes):
    """coarse, region [R, H, W], classes [R] -> the refined masks' logits [R, H, W]."""
    # At the start the region decides: 4 coarse + 4 region - 2.5 is >= 0 exactly inside the region.
    init = lambda key, shape: jnp.tile(jnp.array([[4.0, 4.0, -2.5]]), (shape[0], 1))
    weights = self.param("pixels", init, (self.num_classes - 1, 3))[classes - 1]
    return (weights[:, 0, None, None] * coarse + weights[:, 1, None, None] * region
            + weights[:, 2, None, None])

  @nn.compact
  def __call__(self, features, prior, classes, masks, frames):
    coarse_logits = self.coarse_logits(features, prior, classes)
    coarse = paste_grid(jax.nn.sigmoid(coarse_logits), frames, *masks.shape[1:])
    return coarse_logits, coarse, self.pixel_logits(jax.lax.stop_gradient(coarse), masks, classes)


class SDS(nn.Module):
  """module(images, train, targets, region_masks, region_valid) -> outputs: training, what `loss` reads; else the
  detections of `predict`'s contract."""
  num_classes: int  # with the background, class 0
  config: ml_collections.FrozenConfigDict
  label_map: tuple[int, ...] = ()

  def setup(self):
    c = self.config
    dtype = jnp.dtype(c.dtype)
    self.box_pathway = Pathway(c.width, c.representation_size, c.box_head_dropout, dtype)
    self.region_pathway = Pathway(c.width, c.representation_size, c.box_head_dropout, dtype)
    self.classifier = nn.Dense(self.num_classes, dtype=dtype)
    if c.refinement:
      self.refiner = Refiner(self.num_classes, c.refine_grid)

  def features(self, x, masks, train):
    """Network C's concatenated fc7 [N, R, 2 representation_size] of regions masks [N, R, H, W]."""
    c = self.config
    n, r = masks.shape[:2]
    boxes = region_boxes(masks)
    box_input, region_input = region_inputs(x, boxes, masks, c.warp_size, c.context_padding)
    joined = jnp.concatenate([self.box_pathway(box_input, train), self.region_pathway(region_input, train)], -1)
    self.sow("intermediates", "features", joined)
    return joined.reshape(n, r, -1), boxes

  def refine(self, features, masks, boxes, classes):
    """Refinement of regions masks [R, H, W] (boxes [R, 4], features [R, F]) as class `classes` [R]: (coarse logits
    [R, G, G], pasted coarse mask [R, H, W], refined logits [R, H, W], expanded boxes [R, 4])."""
    c = self.config
    frames = expanded_boxes(boxes, c.warp_size, c.context_padding)
    prior = resample_masks(masks, frames, c.refine_grid, 2)
    return (*self.refiner(features, prior, classes, masks.astype(jnp.float32), frames), frames)

  def __call__(self, images, train=False, targets=None, region_masks=None, region_valid=None):
    c = self.config
    n, h, w = images.shape[:3]
    if region_masks is None:  # module.init(images) and a bare forward pass: one empty region, no detections
      region_masks, region_valid = jnp.zeros((n, 1, h, w), jnp.uint8), jnp.zeros((n, 1), bool)
    x = normalize_images(images, c.pixel_mean, c.pixel_std)
    region_masks = region_masks.astype(jnp.float32)
    region_valid = region_valid.astype(bool) & (region_masks.sum((2, 3)) > 0)
    if train:
      return self.train_outputs(x, targets, region_masks, region_valid)
    features, boxes = self.features(x, region_masks, False)
    logits = self.classifier(features)
    probabilities = jax.nn.softmax(logits.astype(jnp.float32), -1)[..., 1:]
    region, labels, scores = jax.vmap(lambda *a: select_detections(*a, c))(probabilities, region_masks, region_valid)
    masks = jnp.take_along_axis(region_masks, region[..., None, None], 1)  # [N, D, H, W]
    if c.refinement:
      d = region.shape[1]
      take = lambda a: jnp.take_along_axis(a, region.reshape(n, d, *([1] * (a.ndim - 2))), 1).reshape(n * d,
                                                                                                   *a.shape[2:])
      refined = self.refine(take(features), masks.reshape(n * d, h, w), take(boxes), jnp.maximum(labels, 1).reshape(-1))
      masks = (jax.nn.sigmoid(refined[2]) >= 0.5).astype(jnp.float32).reshape(n, d, h, w)
    valid = (scores > 0) & (masks.sum((2, 3)) > 0)
    if self.label_map:
      labels = jnp.asarray(self.label_map, jnp.int32)[labels]
      valid &= labels > 0
    return {"boxes": jnp.where(valid[..., None], region_boxes(masks), 0.0), "scores": jnp.where(valid, scores, 0.0),
            "labels": jnp.where(valid, labels, 0), "masks": masks * valid[..., None, None], "valid": valid}

  def train_outputs(self, x, targets, region_masks, region_valid):
    c = self.config
    gt_masks = targets["masks"].astype(jnp.float32)
    gt_valid = targets["instance_valid"].astype(bool) & ~targets["is_crowd"].astype(bool)
    sample = jax.vmap(lambda key, *a: sample_regions(key, *a, fg_iou=c.roi_fg_iou, bg_iou=c.roi_bg_iou,
                                                     num_samples=c.roi_batch_size_per_image,
                                                     positive_fraction=c.roi_positive_fraction))
    keys = jax.random.split(self.make_rng("sampling"), x.shape[0])
    regions, labels, matched, overlap, positive, sampled = sample(keys, region_masks, region_valid, gt_masks,
                                                                 targets["classes"], gt_valid)
    features, boxes = self.features(x, jax.lax.stop_gradient(regions), True)
    outputs = {"class_logits": self.classifier(features), "roi_labels": labels, "roi_valid": sampled,
               "roi_positive": positive}
    if c.refinement:
      n, s = labels.shape
      flat = lambda a: a.reshape(n * s, *a.shape[2:])
      target = jnp.take_along_axis(gt_masks, matched[:, :, None, None], 1)  # [N, S, H, W]
      coarse_logits, coarse, pixel_logits, frames = self.refine(flat(features), flat(regions), flat(boxes),
                                                                jnp.maximum(flat(labels), 1))
      cell_targets = resample_masks(flat(target), frames, c.refine_grid, 2) > 0.5
      support = (coarse > COARSE_SUPPORT) | (flat(regions) > 0)
      outputs.update({"refine_regions": flat(positive & (overlap >= c.refine_iou)), "coarse_logits": coarse_logits,
                      "coarse_targets": cell_targets, "pixel_logits": pixel_logits, "pixel_targets": flat(target),
                      "pixel_support": support})
    return outputs


def select_detections(scores, masks, valid, config):
  """One image's detections among its regions (Sec. 3.3): scores [P, K] of the foreground classes (positive; the
  softmax's), masks [P, H, W], valid [P] -> the picked regions' indices, labels (1..K) and scores, [D] each (score
  0: no detection). Every (region, class) pair scoring >= score_threshold is a candidate, the best
  detection_candidates of them go through class-wise hard NMS on region overlap at nms_threshold, the first
  detections_per_image picks are kept."""
  p, k = scores.shape
  scores = jnp.where(valid[:, None] & (scores >= config.score_threshold), scores, 0.0).reshape(-1)
  top, candidates = jax.lax.top_k(scores, min(config.detection_candidates, p * k))
  region, label = candidates // k, candidates % k + 1
  overlaps = mask_iou(masks.reshape(p, -1))[region][:, region]
  picked, order = soft_nms(overlaps, top, label, method="hard", iou_threshold=config.nms_threshold)
  order = order[:config.detections_per_image]
  return region[order], label[order], picked[order]


def sample_regions(key, masks, valid, gt_masks, gt_classes, gt_valid, *, fg_iou, bg_iou, num_samples,
                   positive_fraction):
  """One image's training regions (Sec. 3.2): the proposals masks [P, H, W] (valid [P]) and the ground-truth masks
  [M, H, W] (gt_valid [M], classes 1..K-1) as candidates; foreground a best region overlap >= fg_iou with an object
  (its class), background below bg_iou; `num_samples` drawn at `positive_fraction` foreground at most
  (matching.sample_balanced), positives first. Returns the regions [S, H, W], labels [S] (0 background), matched
  object [S], best overlap [S], positive [S] and sampled [S]."""
  candidates = jnp.concatenate([masks, gt_masks])
  candidate_valid = jnp.concatenate([valid, gt_valid])
  flat_gt, flat = gt_masks.reshape(gt_masks.shape[0], -1), candidates.reshape(candidates.shape[0], -1)
  inter = jnp.matmul(flat_gt, flat.T, precision=jax.lax.Precision.HIGHEST)
  union = flat_gt.sum(1)[:, None] + flat.sum(1)[None] - inter
  iou = jnp.where(gt_valid[:, None] & (union > 0), inter / jnp.maximum(union, 1), 0.0)  # [M, P + M]
  best, matched = iou.max(0, initial=0.0), jnp.argmax(iou, 0)
  labels = jnp.where(best >= fg_iou, gt_classes[matched], jnp.where(best < bg_iou, 0, -1))
  positive, negative = sample_balanced(key, jnp.where(candidate_valid, labels, -1), num_samples, positive_fraction)
  _, order = jax.lax.top_k(2 * positive.astype(jnp.int32) + negative, min(num_samples, candidates.shape[0]))
  positive, sampled = positive[order], (positive | negative)[order]
  return (candidates[order], jnp.where(positive, labels[order], 0), matched[order], best[order], positive, sampled)


def build(config, info):
  config = validated(config, model_config())
  num_classes = config.num_classes or info.num_thing_classes + 1
  if config.category_ids and len(config.category_ids) != num_classes - 1:
    raise ValueError(f"config.model.category_ids: {len(config.category_ids)} ids for {num_classes - 1} classes")
  return SDS(num_classes=num_classes, config=config, label_map=thing_label_map(config, info) or ())


def _binary_log_loss(logits, targets, weights):
  """Mean log loss of logistic predictions over the entries where weights > 0 (weights broadcast)."""
  per = jnp.logaddexp(0.0, logits) - logits * targets
  weights = jnp.broadcast_to(weights, per.shape).astype(jnp.float32)
  return jnp.sum(per * weights) / jnp.maximum(weights.sum(), 1.0)


def loss(outputs, batch, model_config):
  """The softmax log loss of the sampled regions' classes (divided by their count), plus refine_loss_weight times
  the refinement's two log losses (grid cells, pixels) on the regions it trains on."""
  del batch
  valid = outputs["roi_valid"]
  log_p = jax.nn.log_softmax(outputs["class_logits"].astype(jnp.float32), -1)
  picked = jnp.take_along_axis(log_p, outputs["roi_labels"][..., None], -1)[..., 0]
  classification = -jnp.sum(jnp.where(valid, picked, 0.0)) / jnp.maximum(valid.sum(), 1)
  metrics = {"loss_classifier": classification,
             "num_positive_rois": outputs["roi_positive"].sum(-1).mean().astype(jnp.float32)}
  total = classification
  if "coarse_logits" in outputs:
    regions = outputs["refine_regions"][:, None, None]
    coarse = _binary_log_loss(outputs["coarse_logits"], outputs["coarse_targets"], regions)
    pixels = _binary_log_loss(outputs["pixel_logits"], outputs["pixel_targets"],
                              regions & outputs["pixel_support"])
    weight = model_config.get("refine_loss_weight", 1.0)
    total = total + weight * (coarse + pixels)
    metrics.update({"loss_refine_grid": coarse, "loss_refine_pixels": pixels,
                    "num_refine_regions": outputs["refine_regions"].sum().astype(jnp.float32)})
  return total, metrics


def predict(outputs, model_config):
  del model_config
  return {k: outputs[k] for k in ("boxes", "scores", "labels", "masks", "valid")}


def region_features(module, variables, images, region_masks, region_valid):
  """Network C's concatenated fc7 [N, P, 2 representation_size] of each region (the features of the paper's SVMs),
  from the forward pass's "intermediates"."""
  _, state = module.apply(variables, images, region_masks=region_masks, region_valid=region_valid,
                          mutable=["intermediates"])
  return state["intermediates"]["features"][0].reshape(*region_masks.shape[:2], -1)
