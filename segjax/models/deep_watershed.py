"""Deep Watershed Transform (Bai & Urtasun, CVPR 2017, "Deep Watershed Transform for Instance Segmentation").

Three stages, each a U-Net with "same" padding (`segjax.models.unet.UNet`):
  - semantic: a foreground logit per pixel (the paper takes a PSPNet semantic segmentation; here a class-agnostic
    thing/background trunk trained with a sigmoid cross entropy, as `embedding.py`'s);
  - Direction Network (Sec. 3.2): input the RGB image gated by the semantic segmentation (image * s and s, with
    s the foreground probability, gradient stopped: the segmentation is an input, not trained through it);
    output the direction u_p to the nearest boundary, 2 channels;
  - Watershed Transform Network (Sec. 3.3): input the gated, normalised direction field (u * s and s); output 16
    logits of the quantised energy (the distance to the instance boundary, `segjax.ops.watershed`).
Training: the paper's losses (`segjax.ops.watershed`: angular loss on the objects' pixels with w_p = 200 /
sqrt(instance area); the level-weighted cross entropy) each divided by the object pixel count + 1 (the sum of
w_p + 1 for the energy) as in the authors' code (repository min2209/dwt, DN/ and WTN/lossFunction.py), plus the
foreground cross entropy; crowd regions bound the instances but carry no target. Targets are computed from the
batch's instance masks in the train step (exact distance transforms, static shapes: any instance count reuses one
program).

Inference (Sec. 3.4, `predict`): the energy level is the argmax of the 16 logits, forced to 0 off the foreground
(s <= foreground_threshold); instances are the 8-connected components of level > cut_level with at least
`min_area` pixels, each grown back over the foreground band the cut removed (the authors' post_process.py dilates
each component by the cut's width); the `max_detections` largest are kept. Score: the mean foreground probability
over the mask times the mean probability of a level above the cut over the component. Instances are
class-agnostic (label 1); evaluate with mask_AP_agnostic.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from segjax.models.unet import UNet
from segjax.models.validation import validated
from segjax.ops import grouping
from segjax.ops import watershed
from segjax.ops.masks import masks_to_boxes

TASK = "instance"
BATCH_KEYS = ("image", "masks", "is_crowd", "instance_valid")
CLASS_AGNOSTIC = True  # predicted labels are all 1 (one "object" class); the evaluator scores mask_AP_agnostic
PREDICT_DEFAULTS = {"cut_level": 1, "min_area": 8, "max_detections": 32, "foreground_threshold": 0.5}
LOSS_DEFAULTS = {"direction_weight": 1.0, "energy_weight": 1.0, "foreground_weight": 1.0}
INFERENCE_KEYS = frozenset(PREDICT_DEFAULTS)


class DeepWatershed(nn.Module):
  """Semantic trunk -> gated Direction Network -> Watershed Transform Network."""
  width: int = 16
  head_width: int = 8
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, images, train: bool = False):
    fg = UNet(num_classes=1, width=self.width, padding="same", dtype=self.dtype, name="semantic")(
        images, train)["logits"][..., 0]
    gate = jax.lax.stop_gradient(jax.nn.sigmoid(fg))[..., None]
    direction = UNet(num_classes=2, width=self.head_width, padding="same", dtype=self.dtype, name="direction")(
        jnp.concatenate([images * gate, gate], -1), train)["logits"]
    unit = watershed.unit_vectors(direction)
    energy = UNet(num_classes=watershed.NUM_LEVELS, width=self.head_width, padding="same", dtype=self.dtype,
                  name="watershed")(jnp.concatenate([unit * gate, gate], -1), train)["logits"]
    return {"foreground_logits": fg, "direction": direction, "energy_logits": energy}


def model_config() -> ml_collections.ConfigDict:
  """A width-16 semantic U-Net, width-8 direction and watershed U-Nets, the paper's losses, cut above level 1."""
  return ml_collections.ConfigDict({"name": "deep_watershed", "width": 16, "head_width": 8, "dtype": "float32",
                                    **LOSS_DEFAULTS, **PREDICT_DEFAULTS})


def build(config, info):
  del info  # class-agnostic
  c = validated(config, model_config())
  return DeepWatershed(width=c.width, head_width=c.head_width, dtype=jnp.dtype(c.dtype))


def _settings(model_config, defaults):
  return {k: model_config.get(k, default) for k, default in defaults.items()}


def loss(outputs, batch, model_config):
  """Angular + weighted energy cross entropy over the non-crowd instances' pixels + foreground cross entropy."""
  s = _settings(model_config, LOSS_DEFAULTS)
  t = jax.vmap(watershed.targets)(batch["masks"], batch["instance_valid"], batch["is_crowd"])
  count = jnp.sum(t["object"]).astype(jnp.float32)
  loss_direction = watershed.angular_loss(outputs["direction"].astype(jnp.float32), t["direction"],
                                          t["weight"] * t["direction_valid"]) / (count + 1.0)
  loss_energy = watershed.watershed_loss(outputs["energy_logits"].astype(jnp.float32), t["level"],
                                         t["weight"]) / (jnp.sum(t["weight"]) + 1.0)
  masks = batch["masks"].astype(bool)
  valid = batch["instance_valid"] & ~batch["is_crowd"]
  foreground = jnp.any(masks & valid[..., None, None], axis=1).astype(jnp.float32)
  crowd = jnp.any(masks & (batch["instance_valid"] & batch["is_crowd"])[..., None, None], axis=1)
  weight = jnp.where(crowd & (foreground == 0), 0.0, 1.0)
  z = outputs["foreground_logits"].astype(jnp.float32)
  ce = jnp.maximum(z, 0) - z * foreground + jnp.log1p(jnp.exp(-jnp.abs(z)))
  loss_fg = jnp.sum(weight * ce) / jnp.maximum(weight.sum(), 1.0)
  total = s["direction_weight"] * loss_direction + s["energy_weight"] * loss_energy + s["foreground_weight"] * loss_fg
  return total, {"loss_direction": loss_direction, "loss_energy": loss_energy, "loss_foreground": loss_fg}


def _predict_single(energy_logits, foreground_logits, s):
  h, w, _ = energy_logits.shape
  probability = jax.nn.sigmoid(foreground_logits.astype(jnp.float32))
  foreground = probability > s["foreground_threshold"]
  level = jnp.where(foreground, jnp.argmax(energy_logits, axis=-1), 0)
  labels, ids, valid = watershed.cut(level, foreground, s["cut_level"], s["min_area"], s["max_detections"],
                                     grouping.connected_components)
  masks = (labels[None] == ids[:, None, None]) & valid[:, None, None]
  above = jnp.sum(jax.nn.softmax(energy_logits.astype(jnp.float32), -1)[..., s["cut_level"] + 1:], -1)
  core = masks & (level > s["cut_level"])[None]
  area = jnp.maximum(masks.sum((1, 2)), 1)
  scores = (masks * probability).sum((1, 2)) / area * (core * above).sum((1, 2)) / jnp.maximum(core.sum((1, 2)), 1)
  scores = jnp.where(valid, scores, 0.0)
  boxes = jnp.where(valid[:, None], masks_to_boxes(masks) + jnp.array([0, 0, 1, 1], jnp.float32), 0.0)
  return {"boxes": boxes, "scores": scores, "labels": valid.astype(jnp.int32), "masks": masks.astype(jnp.float32),
          "valid": valid}


def predict(outputs, model_config):
  """The energy cut -> up to max_detections class-agnostic instances per image (settings: config.model's, else
  PREDICT_DEFAULTS)."""
  s = _settings(model_config, PREDICT_DEFAULTS)
  if not 0 <= s["cut_level"] < watershed.NUM_LEVELS - 1:
    raise ValueError(f"config.model.cut_level must be in [0, {watershed.NUM_LEVELS - 2}]; got {s['cut_level']}")
  return jax.vmap(lambda e, f: _predict_single(e, f, s))(outputs["energy_logits"], outputs["foreground_logits"])
