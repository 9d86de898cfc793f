"""Test-time augmentation of semantic models: multi-scale and left-right flipped inputs (DeepLab v3 Sec. 4.3).

Every pass's logits are resized back to the input size (bilinear) and their softmax probabilities averaged, as
DeepLab's reference code does (research/deeplab/model.py, predict_labels_multi_scale); "logits" is the log of the
average. A model with a CRF on top contributes the log of the CRF's marginals as its logits. Without augmentation
(scales (1.0,), no flip) the model runs once and "logits" is its own output. One function serves the training loop's
evaluation and `segjax.inference.Predictor`.
"""
import jax
import jax.numpy as jnp


def check_options(scales, flip, task="semantic", source="config.eval"):
  """(scales as a tuple of floats, flip as a bool); an error naming `source` for bad values or a non-semantic model."""
  try:
    values = tuple(float(s) for s in scales)
  except (TypeError, ValueError):
    values = ()
  if not values or min(values) <= 0:
    raise ValueError(f"{source}.scales: a non-empty sequence of positive numbers; got {scales!r}")
  scales = values
  if not isinstance(flip, bool):
    raise ValueError(f"{source}.flip: True or False; got {flip!r}")
  if task != "semantic" and (scales != (1.0,) or flip):
    raise ValueError(f"{source}.scales / flip: test-time augmentation is for semantic models; this model is {task}")
  return scales, flip


def class_logits(outputs):
  """A semantic model's class scores [N, H, W, L]: the log of the CRF's marginals where it has them, else its logits."""
  if "crf_probabilities" in outputs:
    return jnp.log(outputs["crf_probabilities"])
  return outputs["logits"]


def semantic_tta(forward, images, scales=(1.0,), flip=False):
  """forward(images [N, h, w, 3]) -> a semantic model's outputs; returns {"logits" [N, H, W, L], "labels" [N, H, W]}.

  Each scale s runs the model on the images resized to round(s * H) x round(s * W) (bilinear), and with `flip` also on
  their mirror image, whose output is mirrored back.
  """
  n, h, w, _ = images.shape
  if tuple(scales) == (1.0,) and not flip:
    logits = class_logits(forward(images))
    return {"logits": logits, "labels": jnp.argmax(logits, -1).astype(jnp.int32)}
  total = 0.0
  for scale in scales:
    size = (n, max(round(h * scale), 1), max(round(w * scale), 1), images.shape[-1])
    scaled = jax.image.resize(images, size, "linear") if size != images.shape else images
    for flipped in (False, True) if flip else (False,):
      logits = class_logits(forward(scaled[:, :, ::-1] if flipped else scaled))
      logits = logits[:, :, ::-1] if flipped else logits
      logits = jax.image.resize(logits, (n, h, w, logits.shape[-1]), "linear")
      total += jax.nn.softmax(logits.astype(jnp.float32), -1)
  probabilities = total / (len(scales) * (2 if flip else 1))
  return {"logits": jnp.log(probabilities), "labels": jnp.argmax(probabilities, -1).astype(jnp.int32)}
