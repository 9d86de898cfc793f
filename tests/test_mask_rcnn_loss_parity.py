"""Mask R-CNN's training losses equal torchvision's MaskRCNN losses on the same weights, images, targets and samples.

Reference: pytorch/vision v0.29.1 (torchvision==0.29.1, requirements-test.txt),
torchvision/models/detection/rpn.py (RegionProposalNetwork.forward: assign_targets_to_anchors, compute_loss) and
torchvision/models/detection/roi_heads.py (RoIHeads.forward: select_training_samples, fastrcnn_loss, maskrcnn_loss,
project_masks_on_boxes). Both draw their samples at random, so torchvision's BalancedPositiveNegativeSampler is
replaced by one returning segjax's sample: the RPN's returns segjax's sampled anchors; the RoI heads are given
segjax's sampled RoIs as their proposals, and their sampler keeps exactly those (not the ground-truth boxes that
add_gt_proposals appends to them again). Everything else (anchor and RoI matching, box coding, smooth L1 with beta
1/9 normalised by the sampled anchors or RoIs, cross-entropy, RoIAlign of the features, mask targets, per-class
mask BCE) is each side's own; the replaced samplers check that torchvision's matching labels segjax's sample as
segjax did. segjax's side is its training forward (module.apply, train=True) and `mask_rcnn.loss`.
"""
import jax
import numpy as np

from segjax.models import mask_rcnn
from segjax.ops.anchors import fpn_anchors
from segjax.weights import torchvision as tv_weights
from references import optional, requires_torch, torch

SIZE = 160  # a multiple of 32 (P6's stride)
NUM_CLASSES = 3  # with the background
MAX_INSTANCES = 4  # slots: each image pads one
# (x1, y1, x2, y2, class) per image, ellipse masks inside the boxes.
INSTANCES = (((12.0, 20.0, 70.0, 64.0, 1), (80.0, 40.0, 150.0, 130.0, 2), (30.0, 90.0, 62.0, 150.0, 1)),
             ((40.0, 30.0, 120.0, 100.0, 2), (5.0, 110.0, 45.0, 150.0, 1), (124.0, 8.0, 146.0, 32.0, 2)))


def _batch():
  """Two images with colour blobs and the ellipses of INSTANCES painted in, and their padded ground truth."""
  rng = np.random.default_rng(0)
  ys, xs = np.mgrid[:SIZE, :SIZE] + 0.5
  image = np.tile((np.stack([ys, xs, ys + xs], -1) / (4 * SIZE))[None], (2, 1, 1, 1))
  boxes = np.zeros((2, MAX_INSTANCES, 4), np.float32)
  classes = np.zeros((2, MAX_INSTANCES), np.int32)
  masks = np.zeros((2, MAX_INSTANCES, SIZE, SIZE), np.uint8)
  for b, instances in enumerate(INSTANCES):
    for i, (x1, y1, x2, y2, c) in enumerate(instances):
      inside = ((xs - (x1 + x2) / 2) / ((x2 - x1) / 2)) ** 2 + ((ys - (y1 + y2) / 2) / ((y2 - y1) / 2)) ** 2 < 1
      boxes[b, i], classes[b, i], masks[b, i] = (x1, y1, x2, y2), c, inside
      image[b][inside] = rng.uniform(0.3, 1.0, 3)
  valid = classes > 0
  return {"image": image.astype(np.float32), "boxes": boxes, "classes": classes, "masks": masks,
          "is_crowd": np.zeros_like(valid), "instance_valid": valid}


def _torch_model():
  """torchvision's maskrcnn_resnet50_fpn, random, NUM_CLASSES classes; BatchNorm statistics away from (0, 1) and
  kept fixed in training (segjax's converted config: norm "frozen")."""
  detection = optional("torchvision.models.detection")
  torch.manual_seed(0)
  model = detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=NUM_CLASSES,
                                          min_size=SIZE, max_size=SIZE)
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, torch.nn.BatchNorm2d):
        module.running_mean.uniform_(-0.2, 0.2)
        module.running_var.uniform_(0.5, 1.5)
        module.weight.uniform_(0.5, 1.5)
        module.bias.uniform_(-0.2, 0.2)
    # Random ResNet features are large: logits and deltas scaled to a few units, so that the losses are not all
    # saturated and the box losses see both sides of smooth L1's beta.
    model.rpn.head.cls_logits.weight.mul_(0.2)
    model.rpn.head.bbox_pred.weight.mul_(0.2)
    model.roi_heads.box_predictor.cls_score.weight.mul_(0.05)
    model.roi_heads.box_predictor.bbox_pred.weight.mul_(0.2)
    model.roi_heads.mask_predictor.mask_fcn_logits.weight.mul_(1e-3)
  model.train()
  for module in model.modules():
    if isinstance(module, torch.nn.BatchNorm2d):
      module.eval()
  return model


def _segjax_losses(model, batch):
  """segjax's training outputs and `mask_rcnn.loss` metrics with the model's weights converted."""
  config, variables = tv_weights.convert("maskrcnn_resnet50_fpn", {k: v.numpy() for k, v in model.state_dict().items()})
  config.category_ids = ()  # the model's labels are the data's
  module = mask_rcnn.build(config, None)

  def forward(variables, batch, key):
    outputs, _ = module.apply(variables, batch["image"], train=True, targets={k: batch[k] for k in mask_rcnn.FORWARD_KEYS},
                              rngs={"sampling": key}, mutable=["batch_stats"])
    return outputs, mask_rcnn.loss(outputs, batch, config)[1]

  outputs, metrics = jax.jit(forward)(variables, batch, jax.random.key(0))
  return config, jax.device_get(outputs), {k: float(v) for k, v in metrics.items()}


def _rpn_sampler(positive, negative, checked):
  """torchvision's RPN fg_bg_sampler returning segjax's sampled anchors [N, A]; checks torchvision's anchor labels
  (1 foreground, 0 background, -1 between the thresholds) agree."""
  positive, negative = [torch.tensor(np.asarray(p)) for p in positive], [torch.tensor(np.asarray(n)) for n in negative]

  def sample(labels):
    for label, p, n in zip(labels, positive, negative):
      assert (label[p] == 1).all() and (label[n] == 0).all()
      checked.append((int(p.sum()), int(n.sum())))
    return positive, negative
  return sample


def _roi_sampler(roi_labels, checked):
  """torchvision's RoI-heads fg_bg_sampler keeping the first len(roi_labels[b]) boxes of image b, segjax's sampled
  RoIs given as the proposals (the ground-truth boxes torchvision appends come after them); checks torchvision's
  class labels of those equal segjax's."""
  def sample(labels):
    positive, negative = [], []
    for label, ours in zip(labels, roi_labels):
      first = torch.arange(len(label)) < len(ours)
      np.testing.assert_array_equal(label[:len(ours)].numpy(), ours)
      positive.append(first & (label > 0))
      negative.append(first & (label == 0))
      checked.append(len(ours))
    return positive, negative
  return sample


@requires_torch
def test_mask_rcnn_losses_equal_torchvision_on_the_same_samples():
  image_list_cls = optional("torchvision.models.detection.image_list").ImageList
  batch = _batch()
  model = _torch_model()
  config, outputs, ours = _segjax_losses(model, batch)

  images = torch.stack([model.transform.normalize(torch.from_numpy(x).permute(2, 0, 1)) for x in batch["image"]])
  image_list = image_list_cls(images, [(SIZE, SIZE)] * len(images))
  targets = [{"boxes": torch.from_numpy(boxes[valid]), "labels": torch.from_numpy(classes[valid]).long(),
              "masks": torch.from_numpy(masks[valid])}
             for boxes, classes, masks, valid in zip(batch["boxes"], batch["classes"], batch["masks"],
                                                     batch["instance_valid"])]
  rpn_checked, roi_checked = [], []
  with torch.no_grad():
    features = model.backbone(images)
    # The RPN's anchors are segjax's, in its order (location-major, then size and aspect ratio): the sampled anchor
    # masks then mean the same anchors.
    anchors = model.rpn.anchor_generator(image_list, list(features.values()))[0].numpy()
    ours_anchors = fpn_anchors((SIZE, SIZE), [f.shape[-2:] for f in features.values()], config.anchor_sizes,
                               config.aspect_ratios)
    np.testing.assert_allclose(np.asarray(ours_anchors), anchors, atol=1e-4)
    model.rpn.fg_bg_sampler = _rpn_sampler(outputs["rpn_positive"], outputs["rpn_negative"], rpn_checked)
    _, losses = model.rpn(image_list, features, targets)
    sampled = outputs["roi_valid"]
    proposals = [torch.from_numpy(rois[valid]) for rois, valid in zip(outputs["rois"], sampled)]
    model.roi_heads.fg_bg_sampler = _roi_sampler([l[v] for l, v in zip(outputs["roi_labels"], sampled)], roi_checked)
    losses.update(model.roi_heads(features, proposals, image_list.image_sizes, targets)[1])
  reference = {k: float(v) for k, v in losses.items()}

  # The samples hold what each loss term needs: positives and negatives in every image.
  assert len(rpn_checked) == 2 and all(p > 0 and n > 0 for p, n in rpn_checked), rpn_checked
  positives = outputs["roi_positive"].sum(1)
  assert roi_checked == list(sampled.sum(1)) and (positives > 0).all() and (sampled.sum(1) > positives).all()
  assert set(reference) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask"}
  relative = {k: abs(ours[k] - v) / abs(v) for k, v in reference.items()}
  assert max(relative.values()) < 1e-4, relative
  # The positive RoIs' sides reach both sides of (28, 56]: the mask targets take 1, 2 and more samples per bin.
  positive_rois = outputs["rois"][outputs["roi_positive"]]
  sides = np.concatenate([positive_rois[:, 2] - positive_rois[:, 0], positive_rois[:, 3] - positive_rois[:, 1]])
  assert sides.max() > 56 and sides.min() < 28, (sides.min(), sides.max())
