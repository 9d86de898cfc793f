"""Per-pixel classification, the loss and prediction every semantic model shares.

loss: softmax cross entropy averaged over the pixels not labelled 255 (FCN, Long et al. 2015, Sec. 3), each class
optionally weighted by `class_weights` (SegNet, Sec. 3.2: median frequency balancing), plus `aux_weight` times the
same loss of an auxiliary head's "aux_logits" where the model has one (PSPNet Sec. 3.4; torchvision's DeepLab v3).
predict: the argmax of the logits.
"""
import jax.numpy as jnp

from segjax.ops.losses import softmax_cross_entropy

IGNORE_LABEL = 255


def loss(outputs, batch, model_config):
  """(cross entropy [+ aux_weight x the auxiliary head's], {"main_loss", "aux_loss"} with an auxiliary head)."""
  weights = tuple(model_config.get("class_weights", ())) or None
  num_classes = outputs["logits"].shape[-1]
  if weights is not None and len(weights) != num_classes:
    raise ValueError(f"config.model.class_weights: {len(weights)} weights for {num_classes} classes")
  cross_entropy = lambda logits: softmax_cross_entropy(logits, batch["semantic"], ignore_index=IGNORE_LABEL,
                                                       weights=weights)
  main = cross_entropy(outputs["logits"])
  if "aux_logits" not in outputs:
    return main, {}
  aux = cross_entropy(outputs["aux_logits"])
  return main + model_config.aux_weight * aux, {"main_loss": main, "aux_loss": aux}


def predict(outputs, model_config):
  """{"labels" [N, H, W] int32}: the argmax of the logits."""
  del model_config
  return {"labels": jnp.argmax(outputs["logits"], axis=-1).astype(jnp.int32)}
