"""A test-only panoptic model for the synthetic set: each pixel takes the category of the nearest colour family
centre (segjax.data.synthetic); each thing class present is one instance, merged with the stuff by panoptic_merge.

No learning is needed for a PQ well above zero, so a Predictor and the loop's evaluator can be compared on it.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from segjax.data import synthetic
from segjax.ops.masks import masks_to_boxes
from segjax.ops.panoptic import panoptic_merge

TASK = "panoptic"
BATCH_KEYS = ("image",)
_COLOURS = np.array([c for _, _, c in synthetic.THINGS + synthetic.STUFF], np.float32)  # by train id
_NUM_THINGS = len(synthetic.THINGS)


class NearestColour(nn.Module):
  @nn.compact
  def __call__(self, images, train=False):
    scale = self.param("scale", nn.initializers.ones, ())
    distance = ((255 * images[..., None, :] - _COLOURS) ** 2).sum(-1)
    return {"logits": -scale * distance}


def build(model_config, info):
  del model_config, info
  return NearestColour()


def loss(outputs, batch, model_config):
  del batch, model_config
  return jnp.mean(outputs["logits"]) * 0.0, {}


def predict(outputs, model_config):
  train_id = jnp.argmax(outputs["logits"], -1)
  masks = (train_id[:, None] == jnp.arange(_NUM_THINGS)[None, :, None, None]).astype(jnp.float32)
  valid = masks.any((2, 3))
  b = masks.shape[0]
  scores = jnp.where(valid, 0.9, 0.0)
  labels = jnp.broadcast_to(jnp.arange(1, _NUM_THINGS + 1, dtype=jnp.int32), (b, _NUM_THINGS))
  semantic = jnp.where(train_id >= _NUM_THINGS, train_id - _NUM_THINGS + 1, 0)
  merge = lambda m, s, l, v, sem: panoptic_merge(m > 0.5, s, l, v, sem, len(synthetic.STUFF),
                                                 stuff_area_threshold=model_config.get("stuff_area_threshold", 16))
  panoptic, segments = jax.vmap(merge)(masks, scores, labels, valid, semantic)
  return {"boxes": jax.vmap(masks_to_boxes)(masks > 0.5), "scores": scores, "labels": labels, "masks": masks,
          "valid": valid, "panoptic": panoptic, **{f"segment_{k}": v for k, v in segments.items()}}
