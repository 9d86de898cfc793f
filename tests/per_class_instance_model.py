"""A test-only instance model for the loop tests: one detection per thing class, its mask a per-pixel sigmoid.

Small enough to train in seconds, it exercises the instance path of the loop (evaluator, pictures, FORWARD_KEYS
and the "sampling" rng) without a real detector.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax.ops.masks import masks_to_boxes

TASK = "instance"
BATCH_KEYS = ("image", "masks", "classes", "instance_valid")
FORWARD_KEYS = ("classes",)


class PerClassMasks(nn.Module):
  num_classes: int

  @nn.compact
  def __call__(self, images, train=False, targets=None):
    x = nn.relu(nn.Conv(8, (3, 3))(images))
    logits = nn.Conv(self.num_classes, (3, 3))(x)
    outputs = {"mask_logits": jnp.moveaxis(logits, -1, 1)}  # [B, K, H, W]
    if train:  # proves the train step hands over the targets and the sampling rng
      outputs["num_targets"] = (targets["classes"] > 0).sum()
      outputs["sample"] = jax.random.uniform(self.make_rng("sampling"))
    return outputs


def build(model_config, info):
  del model_config
  return PerClassMasks(info.num_thing_classes)


def loss(outputs, batch, model_config):
  del model_config
  k = outputs["mask_logits"].shape[1]
  per_class = (batch["classes"][..., None] == jnp.arange(1, k + 1)) & batch["instance_valid"][..., None]
  union = jnp.einsum("bmk,bmhw->bkhw", per_class.astype(jnp.float32), batch["masks"].astype(jnp.float32)) > 0
  value = jnp.mean(jnp.logaddexp(0.0, outputs["mask_logits"]) - union * outputs["mask_logits"])
  return value, {"num_targets": outputs["num_targets"].astype(jnp.float32), "sample": outputs["sample"]}


def predict(outputs, model_config):
  del model_config
  masks = jax.nn.sigmoid(outputs["mask_logits"])
  binary = masks > 0.5
  area = binary.sum((2, 3))
  scores = jnp.where(area > 0, (masks * binary).sum((2, 3)) / jnp.maximum(area, 1), 0.0)
  b, k = scores.shape
  labels = jnp.broadcast_to(jnp.arange(1, k + 1, dtype=jnp.int32), (b, k))
  boxes = jax.vmap(masks_to_boxes)(binary)
  return {"boxes": boxes, "scores": scores, "labels": labels, "masks": masks, "valid": area > 0}
