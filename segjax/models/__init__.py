"""Models by name. Each model module defines:

  TASK: "semantic", "instance", "panoptic" or "detection" (the loop picks the evaluator and the pictures from it);
  BATCH_KEYS: the batch entries the model's forward pass and loss read (only these go to the devices);
  build(model_config, info) -> flax.linen.Module, called as module(images, train=...) -> outputs dict;
  loss(outputs, batch, model_config) -> (scalar loss, dict of scalar metrics);
  INFERENCE_KEYS: frozenset of the config keys read at inference only (thresholds, top-k, CRF iterations, ...):
    they change no variable, so a checkpoint trained with other values evaluates with these (a dotted name
    such as "crf.test_iterations" for a key of a sub-config; a wrapped model's `base` contributes its own);
  predict(outputs, model_config) -> dict of predictions (post-processing; its thresholds are config.model's):
    "semantic": labels int32 [B, H, W];
    "instance": padded to K detections: boxes float32 [B, K, 4] (x1, y1, x2, y2, input pixels), scores
      [B, K], labels int32 [B, K] (thing labels 1..num_thing_classes), masks float32 [B, K, H, W]
      (probabilities at input size), valid bool [B, K]; optionally mask_probabilities float32 [B, K, M, M], the mask
      head's M x M masks over the boxes, which the evaluators paste at the source image's size (torchvision's
      protocol) instead of resizing `masks`; with them optionally mask_boxes float32 [B, K, 4], the boxes they
      lie over where those are not the detections' (the boundary-aware model's grown boxes).
    "panoptic": the "instance" entries (box and mask AP are scored where the eval split has an instances JSON),
      plus panoptic int32 [B, H, W] (segment ids at input size, 0 VOID) and its T segment rows, valid ones first
      in id order: segment_id int32 [B, T], segment_category int32 [B, T] (the thing label 1..K where
      segment_is_thing, else the stuff class 1..S, the S stuff categories in category-id order), segment_is_thing
      bool, segment_score float32 (0 for stuff), segment_area int32, segment_valid bool.
    "detection": the "instance" entries without masks (scored by VOC AP, segjax/evaluation/voc.py).
  Optionally CLASS_AGNOSTIC = True: an "instance" model whose labels are all 1 (bottom-up grouping); the evaluator
  then also scores the unseen-object overlap precision / recall / F-measure (segjax/evaluation/overlap.py).
  Optionally THINGS_PANOPTIC = True: an "instance" model whose masks are disjoint (a labelling) and that also gives
  the "panoptic" entries for its things only (no stuff rows); where the eval split has a panoptic JSON the evaluator
  then also scores PQ_th, SQ_th and RQ_th (segjax/evaluation/panoptic_evaluator.py, things_only).
  Optionally SIZE_DIVISIBILITY: what the input's height and width must be multiples of (segjax.inference pads to it).
  Optionally FORWARD_KEYS: batch entries the forward pass needs in training (two-stage detectors sample RoIs
  from the ground truth); the train step then calls module(images, train=True, targets={k: batch[k]}) with
  rngs "dropout" and "sampling".
  Optionally INPUT_KEYS: batch entries the forward pass reads in training and at inference besides the image
  (Fast R-CNN's external proposals), passed as keyword arguments: module(images, train=..., proposals=...); or
  input_keys(model_config) -> those entries where they depend on the config (UCN's depth with input "rgbd").
A project outside segjax adds a model with `register(name, module)` (the module object or its import path) before
it calls train_and_evaluate, or names the module's import path in config.model.name.
Images are NHWC floats in [0, 1]. Models that run an ImageNet-pretrained backbone (ResNet, VGG-16) normalise them
first by config.model.pixel_mean / pixel_std (torchvision's ImageNet statistics by default; `pixel_normalization`);
a CRF on top still sees the [0, 1] image.
"""
import importlib
import inspect
import types

from segjax.ops.image import IMAGENET_MEAN, IMAGENET_STD

_MODELS = {
    "boundary_aware": "segjax.models.boundary_aware",
    "crf_rnn": "segjax.models.crf_rnn",
    "deconvnet": "segjax.models.deconvnet",
    "deeplab_v1": "segjax.models.deeplab_v1",
    "deeplab_v2": "segjax.models.deeplab_v2",
    "deeplab_v3": "segjax.models.deeplab",
    "deep_watershed": "segjax.models.deep_watershed",
    "dense_crf": "segjax.models.dense_crf",
    "dynamic_instance": "segjax.models.dynamic_instance",
    "discriminative_embedding": "segjax.models.embedding",
    "fast_rcnn": "segjax.models.fast_rcnn",
    "fcis": "segjax.models.fcis",
    "fcn": "segjax.models.fcn",
    "faster_rcnn": "segjax.models.mask_rcnn",
    "faster_rcnn_detection": "segjax.models.faster_rcnn",
    "fast_yolo": "segjax.models.yolo",
    "gcn": "segjax.models.gcn",
    "iterative_instance": "segjax.models.iterative_instance",
    "mask_rcnn": "segjax.models.mask_rcnn",
    "metric_learning": "segjax.models.metric_learning",
    "rcnn": "segjax.models.fast_rcnn",
    "recurrent_attention": "segjax.models.recurrent_attention",
    "ris": "segjax.models.ris",
    "panoptic_fcn": "segjax.models.panoptic_fcn",
    "panoptic_fpn": "segjax.models.panoptic_fpn",
    "pointrend": "segjax.models.pointrend",
    "pspnet": "segjax.models.pspnet",
    "rfcn": "segjax.models.rfcn",
    "rfcn_coco": "segjax.models.rfcn_coco",
    "sds": "segjax.models.sds",
    "segnet": "segjax.models.segnet",
    "solov2": "segjax.models.solov2",
    "sppnet": "segjax.models.fast_rcnn",
    "ucn": "segjax.models.ucn",
    "unet": "segjax.models.unet",
    "yolo_v1": "segjax.models.yolo",
}


_CONTRACT = ("TASK", "BATCH_KEYS", "build", "loss", "predict")


def register(name: str, module: types.ModuleType | str) -> None:
  """Adds model `name`: a module that follows the contract above, or its import path (imported on first use)."""
  if name in _MODELS and _MODELS[name] is not module and _MODELS[name] != module:
    raise ValueError(f"model {name!r} is already registered (as {_MODELS[name]!r})")
  if isinstance(module, types.ModuleType):
    _check_contract(module)
  _MODELS[name] = module


def _check_contract(module: types.ModuleType) -> types.ModuleType:
  missing = [attr for attr in _CONTRACT if not hasattr(module, attr)]
  if missing:
    raise ValueError(f"model module {module.__name__} lacks {', '.join(missing)} (see segjax/models/__init__.py)")
  return module


def get_model(name: str) -> types.ModuleType:
  """The module of model `name`: a registered name, or the import path of a module that follows the contract."""
  if name in _MODELS:
    entry = _MODELS[name]
    return _check_contract(importlib.import_module(entry) if isinstance(entry, str) else entry)
  if "." in name:
    try:
      module = importlib.import_module(name)
    except ModuleNotFoundError as error:
      raise ValueError(f"config.model.name: {name!r} is neither a registered model nor an importable module "
                       f"({error})") from None
    return _check_contract(module)
  raise ValueError(f"config.model.name: unknown model {name!r}; known: {sorted(_MODELS)}, or a module path")


def input_keys(module: types.ModuleType, model_config) -> tuple[str, ...]:
  """The batch entries `module`'s forward pass reads besides the image under `model_config` (see the contract)."""
  if hasattr(module, "input_keys"):
    return tuple(module.input_keys(model_config))
  return tuple(getattr(module, "INPUT_KEYS", ()))


def thing_label_map(model_config, info) -> tuple[int, ...] | None:
  """The table model label -> the data set's thing label 1..K (0: a category the data set lacks), for a model whose
  labels are another label space's: `model_config.category_ids[k - 1]` is the category id of its label k (a converted
  torchvision detector's labels are COCO's category ids 1..90). None where the config has no category_ids (the
  model's labels are the data set's) or no data set is given. The one place where the two label spaces meet."""
  category_ids = tuple(int(c) for c in (model_config.get("category_ids") or ()))
  if not category_ids or info is None:
    return None
  to_label = dict(info.category_to_thing_label)
  table = (0,) + tuple(to_label.get(c, 0) for c in category_ids)
  if not any(table):
    raise ValueError(f"config.model.category_ids: none of the model's categories {category_ids[:8]}... is a thing "
                     f"category of data set {getattr(info, 'name', '')!r} (ids {sorted(to_label)[:8]}...)")
  return table


def inference_keys(model_config) -> frozenset:
  """The dotted names of `model_config`'s inference-only keys: its model's INFERENCE_KEYS, and its base model's
  under "base." (crf_rnn, dense_crf)."""
  keys = set(getattr(get_model(model_config.name), "INFERENCE_KEYS", ()))
  base = model_config.get("base")
  if base is not None and "name" in base:
    keys |= {f"base.{k}" for k in inference_keys(base)}
  return frozenset(keys)


def config_defaults(model_config) -> dict:
  """The default config of `model_config`'s model (its module's `model_config`, where it has one) as a dict, its
  base model's under "base" (crf_rnn, dense_crf): what a key that a config leaves out means. A module's
  `model_config` parameters are config keys whose values choose the defaults (backbone, name): they are read from
  `model_config`, as the module's build does."""
  module = get_model(model_config.name)
  defaults = {}
  if hasattr(module, "model_config"):
    chosen = {p.name: model_config.get(p.name, p.default)
              for p in inspect.signature(module.model_config).parameters.values()}
    defaults = module.model_config(**chosen).to_dict()
  base = model_config.get("base")
  if base is not None and "name" in base:
    defaults["base"] = {**defaults.get("base", {}), **config_defaults(base)}
  return defaults


def pixel_normalization(model_config) -> dict:
  """{"pixel_mean", "pixel_std"} of `model_config` (3 values each, ImageNet's by default): a model's normalisation."""
  fields = {"pixel_mean": IMAGENET_MEAN, "pixel_std": IMAGENET_STD}
  fields = {k: tuple(float(v) for v in model_config.get(k, default)) for k, default in fields.items()}
  if len(fields["pixel_mean"]) != 3 or len(fields["pixel_std"]) != 3 or min(fields["pixel_std"]) <= 0:
    raise ValueError(f"config.model.pixel_mean / pixel_std: 3 values each (RGB), std positive; got {fields}")
  return fields
