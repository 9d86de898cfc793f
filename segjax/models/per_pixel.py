"""Per-pixel classification, the loss and prediction every semantic model shares.

loss: softmax cross entropy averaged over the pixels not labelled 255 (FCN, Long et al. 2015, Sec. 3), each class
optionally weighted by `class_weights` (SegNet, Sec. 3.2: median frequency balancing), plus `aux_weight` times the
same loss of an auxiliary head's "aux_logits" where the model has one (PSPNet Sec. 3.4; torchvision's DeepLab v3),
plus the same loss of each scale's "scale_logits" with multi-scale inputs (DeepLab-MSC, attention to scale: the
extra supervision, segjax.layers.multiscale). A batch with "pixel_weights" (U-Net's weight map, Eq. 2, made by the
input pipeline with config.dataset.unet_weight_map) weights each pixel's cross entropy by it: U-Net's energy (Eq. 1)
per labelled pixel (segjax.ops.losses.pixel_weighted_cross_entropy).
predict: the argmax of the logits.
"""
import jax.numpy as jnp

from segjax.constants import IGNORE_LABEL
from segjax.ops.losses import pixel_weighted_cross_entropy, softmax_cross_entropy


def loss(outputs, batch, model_config):
  """(cross entropy [+ aux_weight x the auxiliary head's], {"main_loss", "aux_loss"} with an auxiliary head)."""
  model_config = model_config or {}
  weights = tuple(model_config.get("class_weights", ())) or None
  num_classes = outputs["logits"].shape[-1]
  if weights is not None and len(weights) != num_classes:
    raise ValueError(f"config.model.class_weights: {len(weights)} weights for {num_classes} classes")
  if "pixel_weights" in batch:
    if weights is not None:
      raise ValueError("config.model.class_weights with pixel_weights (config.dataset.unet_weight_map): use one")
    cross_entropy = lambda logits: pixel_weighted_cross_entropy(logits, batch["semantic"], batch["pixel_weights"],
                                                                ignore_index=IGNORE_LABEL)
  else:
    cross_entropy = lambda logits: softmax_cross_entropy(logits, batch["semantic"], ignore_index=IGNORE_LABEL,
                                                         weights=weights)
  main = cross_entropy(outputs["logits"])
  value, metrics = main, {}
  if "aux_logits" in outputs:
    aux = cross_entropy(outputs["aux_logits"])
    value, metrics = value + model_config.aux_weight * aux, {"main_loss": main, "aux_loss": aux}
  for i, logits in enumerate(outputs.get("scale_logits", ())):
    metrics[f"scale{i}_loss"] = cross_entropy(logits)
    value += metrics[f"scale{i}_loss"]
  return value, metrics


def predict(outputs, model_config):
  """{"labels" [N, H, W] int32}: the argmax of the logits."""
  del model_config
  return {"labels": jnp.argmax(outputs["logits"], axis=-1).astype(jnp.int32)}
