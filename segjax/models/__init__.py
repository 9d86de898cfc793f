"""Models by name. Each model module defines:

  TASK: "semantic", "instance", "panoptic" or "detection" (the loop picks the evaluator and the pictures from it);
  BATCH_KEYS: the batch entries the model's forward pass and loss read (only these go to the devices);
  build(model_config, info) -> flax.linen.Module, called as module(images, train=...) -> outputs dict;
  loss(outputs, batch, model_config) -> (scalar loss, dict of scalar metrics);
  predict(outputs) -> dict of predictions:
    "semantic": labels int32 [B, H, W];
    "instance": padded to K detections: boxes float32 [B, K, 4] (x1, y1, x2, y2, input pixels), scores
      [B, K], labels int32 [B, K] (thing labels 1..num_thing_classes), masks float32 [B, K, H, W]
      (probabilities at input size), valid bool [B, K].
    "panoptic": the "instance" entries (box and mask AP are scored where the eval split has an instances JSON),
      plus panoptic int32 [B, H, W] (segment ids at input size, 0 VOID) and its T segment rows, valid ones first
      in id order: segment_id int32 [B, T], segment_category int32 [B, T] (the thing label 1..K where
      segment_is_thing, else the stuff class 1..S, the S stuff categories in category-id order), segment_is_thing
      bool, segment_score float32 (0 for stuff), segment_area int32, segment_valid bool.
    "detection": the "instance" entries without masks (scored by VOC AP, segjax/evaluation/voc.py).
  Optionally FORWARD_KEYS: batch entries the forward pass needs in training (two-stage detectors sample RoIs
  from the ground truth); the train step then calls module(images, train=True, targets={k: batch[k]}) with
  rngs "dropout" and "sampling".
Images are NHWC floats in [0, 1]. Models that run an ImageNet-pretrained backbone (ResNet, VGG-16) normalise them
first by config.model.pixel_mean / pixel_std (torchvision's ImageNet statistics by default; `pixel_normalization`);
a CRF on top still sees the [0, 1] image.
"""
import importlib
import types

from segjax.ops.image import IMAGENET_MEAN, IMAGENET_STD

_MODELS = {
    "crf_rnn": "segjax.models.crf_rnn",
    "deconvnet": "segjax.models.deconvnet",
    "deeplab_v1": "segjax.models.deeplab_v1",
    "deeplab_v2": "segjax.models.deeplab_v2",
    "deeplab_v3": "segjax.models.deeplab",
    "dense_crf": "segjax.models.dense_crf",
    "fcn": "segjax.models.fcn",
    "faster_rcnn": "segjax.models.mask_rcnn",
    "fast_yolo": "segjax.models.yolo",
    "gcn": "segjax.models.gcn",
    "mask_rcnn": "segjax.models.mask_rcnn",
    "panoptic_fcn": "segjax.models.panoptic_fcn",
    "panoptic_fpn": "segjax.models.panoptic_fpn",
    "pspnet": "segjax.models.pspnet",
    "segnet": "segjax.models.segnet",
    "solov2": "segjax.models.solov2",
    "unet": "segjax.models.unet",
    "yolo_v1": "segjax.models.yolo",
}


def get_model(name: str) -> types.ModuleType:
  if name not in _MODELS:
    raise ValueError(f"config.model.name: unknown model {name!r}; known: {sorted(_MODELS)}")
  return importlib.import_module(_MODELS[name])


def pixel_normalization(model_config) -> dict:
  """{"pixel_mean", "pixel_std"} of `model_config` (3 values each, ImageNet's by default): a model's normalisation."""
  fields = {"pixel_mean": IMAGENET_MEAN, "pixel_std": IMAGENET_STD}
  fields = {k: tuple(float(v) for v in model_config.get(k, default)) for k, default in fields.items()}
  if len(fields["pixel_mean"]) != 3 or len(fields["pixel_std"]) != 3 or min(fields["pixel_std"]) <= 0:
    raise ValueError(f"config.model.pixel_mean / pixel_std: 3 values each (RGB), std positive; got {fields}")
  return fields
