"""SDS's region classifiers on a trained sds workdir (Hariharan et al. 2014, Sec. 3.3): per-class linear SVMs with
hard negative mining on network C's concatenated fc7, then SDS's AP^r of the SVM scores on the eval split.

  python scripts/sds_svm_stage.py --workdir=DIR [--max_train_images=N]

Training set (the reference's region_classification/train_svms.m): for class k the positives are the ground-truth
regions of class k, the negatives the region candidates whose region overlap (mask IoU) with every class-k object is
below 0.2 and the other classes' ground-truth regions; features scaled to a mean norm of 20, C = 1e-3, positive
weight 2, bias multiplier 10, as R-CNN's stage (scripts/rcnn_svm_stage.py; segjax.ops.svm does the mining; the
reference's optional latent update of the positives is left out). Detection: every candidate scored by each class's
SVM, the scores mapped through the logistic function (monotone: the ranking and so AP^r are unchanged) into the
model's class-wise region NMS and top detections (sds.select_detections, the config's thresholds with
score_threshold 0), masks as proposed (no refinement), scored by mask_APr50 / mask_APr70 / mask_APr_vol
(segjax.evaluation.voc_regions) in the batches' pixel frame, crowds as VOC's difficult objects.
"""
import argparse
import os
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from segjax import workdir as workdir_lib  # noqa: E402  pylint: disable=wrong-import-position
from segjax.data import compact, pipeline  # noqa: E402  pylint: disable=wrong-import-position
from segjax.evaluation import voc, voc_regions  # noqa: E402  pylint: disable=wrong-import-position
from segjax.models import sds  # noqa: E402  pylint: disable=wrong-import-position
from segjax.ops import svm  # noqa: E402  pylint: disable=wrong-import-position

NEGATIVE_OVERLAP = 0.2


def _iou(a, b):
  a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
  inter = a @ b.T
  union = a.sum(1)[:, None] + b.sum(1)[None] - inter
  return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def rows_of(config, split, extract, limit=0):
  """Per image of `split`: (features of the candidates then the objects [P + M, D], candidates' masks [P, H, W],
  their validity [P], objects' masks [M, H, W], classes [M], valid [M], crowd [M])."""
  rows = []
  for batch in pipeline.make_eval_iterator(config, split):
    batch = compact.expand(batch)
    objects = batch["instance_valid"] & ~batch["is_crowd"]
    masks = np.concatenate([batch["region_masks"], batch["masks"]], 1)
    valid = np.concatenate([batch["region_valid"], objects], 1)
    features = np.asarray(extract(batch["image"], masks, valid))
    for i in np.flatnonzero(batch["valid_image"]):
      rows.append((features[i], batch["region_masks"][i], batch["region_valid"][i], batch["masks"][i],
                   batch["classes"][i], batch["instance_valid"][i], batch["is_crowd"][i]))
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
  module = sds.build(config.model, info)
  extract = jax.jit(lambda images, masks, valid: sds.region_features(module, variables, images, masks, valid))
  num_classes = info.num_thing_classes + 1

  x, labels, negative = [], [], []
  for features, regions, valid, gt, classes, gt_valid, crowd in rows_of(config, config.dataset.train_split, extract,
                                                                        args.max_train_images):
    objects = gt_valid & ~crowd
    rows = np.concatenate([valid, objects])
    x.append(features[rows])
    labels.append(np.concatenate([np.zeros(len(valid), int), np.where(objects, classes, 0)])[rows])
    negatives = svm.class_negatives(_iou(gt, np.concatenate([regions, gt])), classes, objects, num_classes,
                                    NEGATIVE_OVERLAP)
    negative.append(negatives[rows])
  x, labels, negative = np.concatenate(x), np.concatenate(labels), np.concatenate(negative)
  scale = svm.feature_scale(x)
  print(f"train: {len(x)} regions, positives per class {np.bincount(labels, minlength=num_classes)[1:].tolist()}",
        flush=True)
  weights, biases = svm.train_class_svms(x * scale, labels, num_classes, negative, C=1e-3, positive_weight=2.0,
                                         bias_multiplier=10.0)

  select_config = types.SimpleNamespace(**{k: config.model[k] for k in (
      "nms_threshold", "detections_per_image", "detection_candidates")}, score_threshold=0.0)
  select = jax.jit(lambda scores, masks, valid: sds.select_detections(scores, masks, valid, select_config))
  images = []
  for features, regions, valid, gt, classes, gt_valid, crowd in rows_of(config, config.dataset.eval_split, extract):
    p = len(valid)  # candidates only: the ground-truth rows are not detections
    scores = 1 / (1 + np.exp(-((features[:p] * scale) @ weights[1:].T + biases[1:])))  # [P, K - 1]
    region, label, score = (np.asarray(a) for a in select(jnp.asarray(scores, jnp.float32), jnp.asarray(regions),
                                                            jnp.asarray(valid)))
    keep = score > 0
    images.append(voc.ImageDetections(
        boxes=np.zeros((keep.sum(), 4)), scores=score[keep].astype(np.float64), labels=label[keep],
        gt_boxes=np.zeros((gt_valid.sum(), 4)), gt_labels=classes[gt_valid], gt_difficult=crowd[gt_valid],
        ious=_iou(regions[region[keep]], gt[gt_valid])))
  print({k: round(v, 4) for k, v in voc_regions.region_ap_of_images(images, num_classes - 1).items()})


if __name__ == "__main__":
  main()
