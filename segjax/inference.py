"""`Predictor(config, variables)`: a trained or converted model as a function of images, with results per image in
the source image's pixels, as detectron2's DefaultPredictor.

Each image ([H, W, 3], uint8 in 0..255 or float in [0, 1], any size) is prepared as the eval pipeline prepares it
(segjax/data/augment.py): resized to fit the test size (config.dataset.image_size, aspect ratio kept, bilinear,
antialiased when shrinking) and padded at the bottom and right to that size rounded up to the model's
SIZE_DIVISIBILITY (the stride its backbone needs; 1 by default). With a model config alone (a converter's) and no
`image_size`, an image keeps its size and is only padded. The model's own `predict` gives the results (so DenseCRF and
CRF-as-RNN labels come after the CRF), mapped back to the source image as the evaluators map them:

  semantic: {"labels" [h, w] int32, "logits" [h, w, L]} (labels: crop, nearest resize; logits: the network's, or the
    base's unaries under DenseCRF, crop and bilinear resize). With `scales` and/or `flip` (DeepLab v3 Sec. 4.3) the
    softmax probabilities of every pass are resized back and averaged, as DeepLab's reference code does, and
    "logits" is their log (segjax.evaluation.tta, which the training loop's evaluation runs too).
  instance: {"boxes" [K, 4] (x1, y1, x2, y2), "scores" [K], "labels" [K], "masks" [K, h, w] probabilities} of the
    valid detections only (boxes / scale; masks: the mask head's M x M masks pasted at the source size where the
    model gives them, as torchvision does, else cropped and resized bilinearly).
  panoptic: the instance entries plus "panoptic" [h, w] int32 segment ids (0 VOID; crop, nearest resize) and
    "segments_info", panopticapi's per-segment dicts {"id", "category_id", "iscrowd": 0, "bbox" [x, y, w, h], "area"}
    with "isthing" and "score", for the ids the map still holds.
One jitted function serves all images of one padded shape.
"""
import functools

import jax
import numpy as np

from segjax import workdir as workdir_lib
from segjax.evaluation import tta
from segjax.evaluation.instance import to_source_image
from segjax.evaluation.panoptic_evaluator import segment_category_ids, to_source_map
from segjax.models import get_model
from segjax.models import input_keys
from segjax.ops import platform

_INSTANCE_KEYS = ("boxes", "scores", "labels", "masks")


def fit_scale(size, image_size) -> float:
  """The eval pipeline's resize factor: the largest that fits (h, w) into image_size (H, W), aspect ratio kept."""
  if image_size is None:
    return 1.0
  return float(min(np.float32(image_size[0]) / np.float32(size[0]), np.float32(image_size[1]) / np.float32(size[1])))


class Predictor:
  """Calls `config.model`'s module with `variables` on images of any size.

  Args:
    config: an experiment config (with `.model` and `.dataset`), or a model config (with `.name`) such as a converter
      returns.
    variables: {"params", "batch_stats"} of that model.
    info: what `build` needs of the data set (num_semantic_classes, num_thing_classes, categories, ...); by default
      the experiment config's data set (`segjax.data.pipeline.dataset_info`); not needed by a model config that sets
      num_classes (a converter's).
    scales, flip: test-time augmentation of semantic models.
    image_size: (H, W) the images are fitted into; by default an experiment config's dataset.image_size, else None
      (each image at its own size).
  """

  def __init__(self, config, variables, info=None, *, scales=(1.0,), flip=False, image_size=None):
    experiment = "model" in config
    model_config = config.model if experiment else config
    if info is None and not model_config.get("num_classes"):
      if not experiment:
        raise ValueError("Predictor: pass `info` (num_semantic_classes, ...) with a model config; only an "
                         "experiment config names the data set it was trained on")
      from segjax.data import pipeline  # pylint: disable=g-import-not-at-top  (TensorFlow only when needed)
      info = pipeline.dataset_info(config)
    if image_size is None and experiment:
      image_size = tuple(config.dataset.image_size)
    self.model_config, self.info = model_config, info
    self.image_size = None if image_size is None else tuple(int(s) for s in image_size)
    self.model_lib = get_model(model_config.name)
    self.task = self.model_lib.TASK
    extra = input_keys(self.model_lib, model_config)
    if extra:
      raise ValueError(f"Predictor: {model_config.name} reads {', '.join(extra)} besides the image (external "
                       "proposals, depth); Predictor passes images only")
    if self.task != "semantic" and (tuple(scales) != (1.0,) or flip):
      raise ValueError(f"Predictor: scales and flip are for semantic models; {model_config.name} is {self.task}")
    if not scales or any(s <= 0 for s in scales):
      raise ValueError(f"Predictor: scales must be positive; got {scales}")
    self.module = self.model_lib.build(model_config, info)
    self.variables = variables
    self.scales, self.flip = tuple(float(s) for s in scales), bool(flip)
    self.divisibility = int(getattr(self.model_lib, "SIZE_DIVISIBILITY", 1))
    self._predict = jax.jit(self._semantic if self.task == "semantic" else self._instance)
    # The implementations of segjax.ops.platform for the platform of the default device, which the program runs on.
    self._kernels = platform.for_devices(config.get("kernels", "auto") if experiment else "auto", jax.devices()[:1])

  @property
  def thing_category_ids(self):
    """Category id of each thing label 1..K (at index label - 1): the data set's, else the model config's
    `category_ids` (a converted detector's), else None (labels are the ids)."""
    if self.info is not None and getattr(self.info, "thing_category_ids", None):
      return tuple(self.info.thing_category_ids)
    return tuple(self.model_config.get("category_ids", ())) or None

  @property
  def class_names(self):
    """Names by label (semantic: train ids 0..L-1; instance, panoptic: thing labels 1..K at label - 1), or None."""
    key = "semantic_class_names" if self.task == "semantic" else "thing_class_names"
    names = getattr(self.info, key, None) if self.info is not None else None
    return tuple(names) if names else None

  @classmethod
  def from_workdir(cls, workdir, step=None, **kwargs):
    """The model of a workdir written by segjax.main, at checkpoint `step` (default the latest); `kwargs` as
    __init__'s (info, scales, flip)."""
    config, variables = workdir_lib.load(workdir, step)
    return cls(config, variables, **kwargs)

  def _forward(self, variables, images):
    return self.module.apply(variables, images, train=False)

  def _semantic(self, variables, images):
    if self.scales == (1.0,) and not self.flip:
      outputs = self._forward(variables, images)
      return {"logits": outputs["logits"], "labels": self.model_lib.predict(outputs, self.model_config)["labels"]}
    return tta.semantic_tta(functools.partial(self._forward, variables), images, self.scales, self.flip)

  def _instance(self, variables, images):
    return self.model_lib.predict(self._forward(variables, images), self.model_config)

  def prepare(self, image, index=0):
    """image [h, w, 3] -> (padded float32 [H', W', 3] in [0, 1], scale, (h, w))."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or min(image.shape[:2]) < 1:
      raise ValueError(f"Predictor: image {index} must be [H, W, 3] (RGB); got shape {image.shape}")
    if image.dtype == np.uint8:
      image = image.astype(np.float32) / 255.0
    elif np.issubdtype(image.dtype, np.floating):
      image = image.astype(np.float32)
      if image.size and (image.min() < 0 or image.max() > 1):
        raise ValueError(f"Predictor: image {index} is float with values in [{image.min()}, {image.max()}]; floats "
                         "must lie in [0, 1] (pass uint8 for 0..255)")
    else:
      raise ValueError(f"Predictor: image {index} has dtype {image.dtype}; pass uint8 (0..255) or float ([0, 1])")
    h, w = image.shape[:2]
    scale = fit_scale((h, w), self.image_size)
    size = tuple(max(int(np.round(np.float32(s) * np.float32(scale))), 1) for s in (h, w))  # float32 as the pipeline
    if size != (h, w):
      image = np.asarray(jax.image.resize(image, (*size, 3), "linear", antialias=True))
      image = np.round(255 * np.clip(image, 0, 1)) / 255  # the eval pipeline rounds resized images to uint8
    target = self.image_size or size
    if size[0] > target[0] or size[1] > target[1]:
      raise ValueError(f"Predictor: image {index} resized to {size} exceeds the test size {target}")
    d = self.divisibility
    padded = (-(-target[0] // d) * d, -(-target[1] // d) * d)
    image = np.pad(image, ((0, padded[0] - size[0]), (0, padded[1] - size[1]), (0, 0)))
    return image, scale, (h, w)

  def __call__(self, images):
    """images: a list of [H, W, 3] images (sizes may differ) or an array [N, H, W, 3] -> a list of result dicts."""
    if isinstance(images, np.ndarray) and images.ndim != 4:
      raise ValueError(f"Predictor: pass a list of [H, W, 3] images or an array [N, H, W, 3]; got shape {images.shape}")
    prepared = [self.prepare(image, i) for i, image in enumerate(images)]
    with platform.kernels(self._kernels):  # read when a new shape's program is traced
      return self._predict_shapes(prepared)

  def _predict_shapes(self, prepared):
    """Prepared images -> their result dicts, one compiled program per padded shape."""
    results = [None] * len(prepared)
    shapes = sorted({p[0].shape for p in prepared})
    for shape in shapes:
      indices = [i for i, p in enumerate(prepared) if p[0].shape == shape]
      outputs = jax.device_get(self._predict(self.variables, np.stack([prepared[i][0] for i in indices])))
      for row, i in enumerate(indices):
        _, scale, size = prepared[i]
        results[i] = self._to_source({k: v[row] for k, v in outputs.items()}, scale, size)
    return results

  def _to_source(self, outputs, scale, size):
    """One image's padded-input outputs -> its results in source pixels."""
    if self.task == "semantic":
      labels = to_source_map(outputs["labels"], scale, size)
      logits = to_source_map_float(outputs["logits"], scale, size)
      return {"labels": labels, "logits": logits}
    keep = outputs["valid"]
    roi_masks = outputs["mask_probabilities"][keep] if "mask_probabilities" in outputs else None
    mask_boxes = outputs["mask_boxes"][keep] if "mask_boxes" in outputs else None
    boxes, masks = to_source_image(outputs["boxes"][keep], outputs["masks"][keep], scale, size, roi_masks,
                                   mask_boxes)
    result = {"boxes": boxes, "scores": outputs["scores"][keep], "labels": outputs["labels"][keep], "masks": masks}
    if self.task == "panoptic":
      result["panoptic"] = to_source_map(outputs["panoptic"], scale, size)
      result["segments_info"] = self._segments_info(outputs, result["panoptic"])
    return result

  def _segments_info(self, outputs, panoptic):
    """panopticapi's segments_info of the valid segment rows whose id the source map still holds."""
    category_ids = segment_category_ids(outputs["segment_category"], outputs["segment_is_thing"], self.info)
    areas = np.bincount(panoptic.reshape(-1))
    segments = []
    for k in np.flatnonzero(outputs["segment_valid"]):
      segment_id = int(outputs["segment_id"][k])
      if segment_id >= len(areas) or not areas[segment_id]:
        continue
      ys, xs = np.nonzero(panoptic == segment_id)
      segments.append({"id": segment_id, "category_id": int(category_ids[k]), "iscrowd": 0,
                       "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1),
                                int(ys.max() - ys.min() + 1)],
                       "area": int(areas[segment_id]), "isthing": bool(outputs["segment_is_thing"][k]),
                       "score": float(outputs["segment_score"][k])})
    return segments


def to_source_map_float(values, scale, size):
  """Float maps [H, W, C] at the padded input size -> [h, w, C] of the source image (crop, bilinear resize)."""
  h, w = size
  crop_h = min(max(int(round(h * float(scale))), 1), values.shape[0])
  crop_w = min(max(int(round(w * float(scale))), 1), values.shape[1])
  values = np.asarray(values[:crop_h, :crop_w], np.float32)
  if (crop_h, crop_w) != (h, w):
    values = np.asarray(jax.image.resize(values, (h, w, values.shape[-1]), "linear"))
  return values
