"""R-CNN's and SPP-net's post-hoc stage on a trained fast_rcnn / sppnet / rcnn workdir: per-class linear SVMs with
hard negative mining on fc7 features, then VOC AP of the SVM scores on the eval split.

  python scripts/rcnn_svm_stage.py --workdir=DIR [--max_train_images=N]

Training set (Girshick et al. 2014, Sec. 2.3 and Appendix B): for class k the positives are the ground-truth boxes
of class k, the negatives the proposals (and other classes' boxes) whose IoU with every class-k box is below 0.3;
features are scaled so that their mean norm is 20 (rcnn's feat_norm_mean); C = 1e-3, positive weight 2, bias
multiplier 10 (rcnn_train.m). segjax.ops.svm does the mining. Detection: every proposal scored by each class's SVM,
per-class NMS at 0.3, the best 100 per image, boxes as proposed (no box regression), scored by VOC AP
(segjax.evaluation.voc) in the batches' pixel frame.
The Fast R-CNN paper (Table 8) finds the fine-tuned network's softmax at least as good as SVMs; the SVM stage's
boxes are not regressed, so compare it with the softmax scores of the same checkpoint without box regression too.
"""
import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from segjax import workdir as workdir_lib  # noqa: E402  pylint: disable=wrong-import-position
from segjax.data import pipeline  # noqa: E402  pylint: disable=wrong-import-position
from segjax.evaluation import voc  # noqa: E402  pylint: disable=wrong-import-position
from segjax.models import fast_rcnn  # noqa: E402  pylint: disable=wrong-import-position
from segjax.ops import svm  # noqa: E402  pylint: disable=wrong-import-position
from segjax.ops.box_nms import batched_nms  # noqa: E402  pylint: disable=wrong-import-position
from segjax.ops.boxes import box_iou  # noqa: E402  pylint: disable=wrong-import-position

NEGATIVE_IOU = 0.3


def features_of(config, split, extract, limit=None):
  """(fc7 of proposals + ground-truth boxes [I, P + M, D], rows' boxes, valid, gt boxes, classes, valid, difficult)
  over the images of `split`."""
  rows = []
  for batch in pipeline.make_eval_iterator(config, split):
    keep = batch["valid_image"]
    boxes = np.concatenate([batch["proposals"], batch["boxes"]], 1)
    valid = np.concatenate([batch["proposal_valid"], batch["instance_valid"]], 1)
    features = np.asarray(extract(batch["image"].astype(np.float32) / 255.0, boxes, valid))
    for i in np.flatnonzero(keep):
      rows.append((features[i], boxes[i], valid[i], batch["boxes"][i], batch["classes"][i],
                   batch["instance_valid"][i], batch["difficult"][i]))
    if limit and len(rows) >= limit:
      break
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--max_train_images", type=int, default=0)
  args = parser.parse_args()
  config, variables = workdir_lib.load(args.workdir)
  info = pipeline.dataset_info(config)
  module = fast_rcnn.build(config.model, info)
  extract = jax.jit(lambda images, boxes, valid: fast_rcnn.roi_features(module, variables, images, boxes, valid))
  num_classes = info.num_thing_classes + 1

  train = features_of(config, config.dataset.train_split, extract, args.max_train_images)
  x, labels, negative = [], [], []
  for features, boxes, valid, gt, classes, gt_valid, _ in train:
    p = len(valid) - len(gt_valid)
    row_labels = np.concatenate([np.zeros(p, int), np.where(gt_valid, classes, 0)])
    x.append(features[valid])
    labels.append(row_labels[valid])
    negatives = svm.class_negatives(box_iou(gt, boxes), classes, gt_valid, num_classes, NEGATIVE_IOU)
    negative.append(negatives[valid])
  x, labels, negative = np.concatenate(x), np.concatenate(labels), np.concatenate(negative)
  scale = svm.feature_scale(x)
  print(f"train: {len(train)} images, {len(x)} regions, positives per class "
        f"{np.bincount(labels, minlength=num_classes)[1:].tolist()}", flush=True)
  weights, biases = svm.train_class_svms(x * scale, labels, num_classes, negative, C=1e-3, positive_weight=2.0,
                                         bias_multiplier=10.0)

  detect = jax.jit(lambda boxes, scores, labels: batched_nms(boxes, scores, labels, 0.3, 100))
  images = []
  for features, boxes, valid, gt, classes, gt_valid, difficult in features_of(
      config, config.dataset.eval_split, extract):
    p = len(valid) - len(gt_valid)  # proposals only: the ground-truth rows are not detections
    scores = (features[:p] * scale) @ weights[1:].T + biases[1:]  # [P, K-1]
    scores = np.where(valid[:p, None], scores, -np.inf).reshape(-1)
    cand_boxes = np.repeat(boxes[:p], num_classes - 1, 0)
    cand_labels = np.tile(np.arange(1, num_classes), p)
    keep = np.asarray(detect(jnp.asarray(cand_boxes), jnp.asarray(scores), jnp.asarray(cand_labels)))
    keep = keep[keep >= 0]
    keep = keep[np.isfinite(scores[keep])]
    images.append(voc.ImageDetections(cand_boxes[keep], scores[keep], cand_labels[keep], gt[gt_valid],
                                      classes[gt_valid], difficult[gt_valid]))
  metrics = voc.voc_metrics(images, info.thing_class_names)
  print({k: round(v, 4) for k, v in metrics.items()})


if __name__ == "__main__":
  main()
