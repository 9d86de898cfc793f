"""Faster R-CNN (Ren et al. 2015) as a box detector on box-only detection sets (VOC; config.dataset.detection).

The network, loss and inference are segjax.models.mask_rcnn's with name "faster_rcnn" (no mask branch); this
module only changes what the loop reads: TASK "detection" (VOC mAP, segjax/evaluation/voc.py) and the batch keys
of a detection set (no masks; difficult objects are left out of training by the data pipeline, as py-faster-rcnn's
use_diff=False). Registered as "faster_rcnn_detection"; config.model holds mask_rcnn's keys.
"""
import ml_collections

from segjax.models import mask_rcnn

TASK = "detection"
BATCH_KEYS = ("image", "boxes", "classes", "instance_valid")
FORWARD_KEYS = ("boxes", "classes", "instance_valid")
INFERENCE_KEYS = mask_rcnn.INFERENCE_KEYS
SIZE_DIVISIBILITY = mask_rcnn.SIZE_DIVISIBILITY
NAME = "faster_rcnn_detection"


def model_config(backbone: str = "vgg16"):
  """mask_rcnn.model_config(backbone, "faster_rcnn") under this module's name."""
  config = mask_rcnn.model_config(backbone, "faster_rcnn")
  config.name = NAME
  return config


def _as_faster_rcnn(config):
  overrides = ml_collections.ConfigDict(config.to_dict() if hasattr(config, "to_dict") else dict(config))
  if overrides.get("name", NAME) != NAME:
    raise ValueError(f"config.model.name: {overrides.name!r}; this module is {NAME!r}")
  overrides.name = "faster_rcnn"
  return overrides


def build(config, info):
  return mask_rcnn.build(_as_faster_rcnn(config), info)


def loss(outputs, batch, model_config):
  return mask_rcnn.loss(outputs, batch, model_config)


def predict(outputs, model_config):
  """Boxes, scores, labels and valid of the forward pass (mask_rcnn.predict without the filled-box masks)."""
  del model_config
  return {k: outputs[k] for k in ("boxes", "scores", "labels", "valid")}
