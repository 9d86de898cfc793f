"""`Predictor(config, variables)`: a trained model as a function of a batch of images, results per image.

Semantic models give {"logits" [H, W, L], "labels" [H, W]} at the input size; with `scales` and/or `flip`
(DeepLab v3 Sec. 4.3: multi-scale and left-right flipped inputs; segjax.evaluation.tta, which the training loop's
evaluation runs too) the softmax probabilities of every pass are averaged and "logits" is their log. Instance
models give {"boxes" [K, 4], "scores" [K], "labels" [K], "masks" [K, H, W]} numpy arrays of the valid detections only.
One jitted function serves all batches of one input shape.
"""
import functools

import jax
import numpy as np

from segjax.evaluation import tta
from segjax import workdir as workdir_lib
from segjax.models import get_model


class Predictor:
  """Calls `config.model`'s module with `variables` on images NHWC float in [0, 1].

  Args:
    config: an experiment config (with `.model`), or a model config (with `.name`) such as a converter returns.
    variables: {"params", "batch_stats"} of that model.
    info: what `build` needs of the data set (num_semantic_classes, num_thing_classes, ...); by default the
      experiment config's data set (`segjax.data.pipeline.dataset_info`); not needed by a model config that
      sets num_classes (a converted detector's).
    scales, flip: test-time augmentation of semantic models.
  """

  def __init__(self, config, variables, info=None, *, scales=(1.0,), flip=False):
    model_config = config.model if "model" in config else config
    if info is None and not model_config.get("num_classes"):
      if "model" not in config:
        raise ValueError("Predictor: pass `info` (num_semantic_classes, ...) with a model config; only an "
                         "experiment config names the data set it was trained on")
      from segjax.data import pipeline  # pylint: disable=g-import-not-at-top  (TensorFlow only when needed)
      info = pipeline.dataset_info(config)
    self.model_lib = get_model(model_config.name)
    self.task = self.model_lib.TASK
    if self.task != "semantic" and (tuple(scales) != (1.0,) or flip):
      raise ValueError(f"Predictor: scales and flip are for semantic models; {model_config.name} is {self.task}")
    if not scales or any(s <= 0 for s in scales):
      raise ValueError(f"Predictor: scales must be positive; got {scales}")
    self.module = self.model_lib.build(model_config, info)
    self.variables = variables
    self.scales, self.flip = tuple(float(s) for s in scales), bool(flip)
    self._predict = jax.jit(self._semantic if self.task == "semantic" else self._instance)

  @classmethod
  def from_workdir(cls, workdir, step=None, **kwargs):
    """The model of a workdir written by segjax.main, at checkpoint `step` (default the latest); `kwargs` as
    __init__'s (info, scales, flip)."""
    config, variables = workdir_lib.load(workdir, step)
    return cls(config, variables, **kwargs)

  def _forward(self, variables, images):
    return self.module.apply(variables, images, train=False)

  def _semantic(self, variables, images):
    return tta.semantic_tta(functools.partial(self._forward, variables), images, self.scales, self.flip)

  def _instance(self, variables, images):
    return self.model_lib.predict(self._forward(variables, images))

  def __call__(self, images):
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"Predictor: images must be [N, H, W, 3] floats in [0, 1]; got shape {images.shape}")
    outputs = jax.device_get(self._predict(self.variables, images))
    if self.task == "semantic":
      return [{"logits": outputs["logits"][i], "labels": outputs["labels"][i]} for i in range(len(images))]
    return [{k: outputs[k][i][outputs["valid"][i]] for k in ("boxes", "scores", "labels", "masks")}
            for i in range(len(images))]
