"""Bottom-up instance segmentation by deep metric learning (Fathi et al. 2017, "Semantic Instance Segmentation via
Deep Metric Learning").

A trunk (segjax's U-Net with "same" padding) predicts at every pixel an embedding of `embedding_dim` channels, a
seediness logit and a class-agnostic foreground logit (the paper's per-class classification and seediness heads,
with one "object" class here).

Training (segjax.ops.embedding_losses), per image:
  - `points_per_instance` pixels drawn uniformly from every valid non-crowd instance (`sample_instance_pixels`, the
    same number per instance so that each instance weighs the same whatever its size), and as many from the
    background (the pixels in no instance, crowds included) as one more group, so that a seed's similar pixels do
    not spill onto the background;
  - the pairwise loss over the pairs of distinct sampled points (Eq. 2 with the similarity
    sigma(p, q) = 2 / (1 + exp(||e_p - e_q||^2)) of Eq. 1), weight `embedding_weight`;
  - the seediness loss: a sigmoid cross entropy of the seediness logit at the instances' sampled points against the
    IoU of the mask {q: sigma(p, q) >= 0.5} that the point grows with its instance (`seediness_targets`, no gradient
    into the embeddings), weight `seediness_weight`;
  - the foreground sigmoid cross entropy (crowd pixels ignored), weight `foreground_weight`.
The points are drawn with the train step's "sampling" rng (the module returns its key in training as
outputs["sampling_key"]; a loss called without one draws with key 0).

Inference (`predict`), per image with static shapes: `num_seeds` seeds among the foreground pixels
(probability > foreground_threshold) by the paper's sequential rule p_t = argmax log S_p + seed_alpha log D(p,
p_1:t-1) (segjax.ops.grouping.sequential_seeds, S the seediness probability); seed t's mask is the foreground pixels
q with sigma(p_t, q) > similarity_threshold (0.5, the paper's); a seed that lies inside the mask of an earlier kept
seed repeats that object and is dropped; a mask of at least `min_area` pixels is an instance, scored by its seed's
seediness (the paper scores a mask by its seed's classification score). Masks may overlap. Instances are
class-agnostic (label 1); evaluate with mask_AP_agnostic.

With `recentre_masks` (a departure from the paper, off by default): each seed's mask M0_t is grown once more, from
the mean embedding c_t of M0_t's pixels (one flat-kernel mean-shift step of radius sqrt(log(2 / threshold - 1)),
the distance at which sigma falls to the threshold), M_t = {q foreground: sigma(c_t, q) > similarity_threshold},
and M_t is scored S_{p_t} IoU(M0_t, M_t). A single seed pixel's embedding lies off the centre of its object's
cluster, so its similarity ball cuts off the far side of the cluster or reaches into a neighbour's; the mean of the
mask lies nearer the centre and its ball covers more of the object. A seed inside a compact cluster grows about the
same mask from itself and from the mean (IoU near 1), while a seed on a cluster's rim or between two clusters grows a
fragment or a union that moves when re-grown from its mean (IoU well below 1): the IoU ranks such masks below whole
objects in the precision-recall order that mask AP integrates, which the seediness of one pixel (regressed at a few
sampled points per instance) does not do alone.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from segjax.models.unet import UNet
from segjax.models.validation import validated
from segjax.ops import embedding_losses
from segjax.ops import grouping

TASK = "instance"
BATCH_KEYS = ("image", "masks", "is_crowd", "instance_valid")
CLASS_AGNOSTIC = True  # predicted labels are all 1; the evaluator scores mask_AP_agnostic and the overlap F-measure
PREDICT_DEFAULTS = {"num_seeds": 32, "seed_alpha": 1.0, "similarity_threshold": 0.5, "foreground_threshold": 0.5,
                    "min_area": 4, "recentre_masks": False}
LOSS_DEFAULTS = {"points_per_instance": 16, "embedding_weight": 1.0, "seediness_weight": 1.0,
                 "foreground_weight": 1.0}
INFERENCE_KEYS = frozenset(PREDICT_DEFAULTS)


class MetricLearningNet(nn.Module):
  """The trunk's last 1x1 convolution gives embedding_dim + 2 channels: embeddings, seediness and foreground
  logits."""
  embedding_dim: int
  width: int = 16
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, images, train: bool = False):
    out = UNet(num_classes=self.embedding_dim + 2, width=self.width, padding="same", dtype=self.dtype,
               name="trunk")(images, train)["logits"]
    e = self.embedding_dim
    outputs = {"embeddings": out[..., :e], "seediness_logits": out[..., e], "foreground_logits": out[..., e + 1]}
    if train and self.has_rng("sampling"):
      outputs["sampling_key"] = self.make_rng("sampling")
    return outputs


def model_config() -> ml_collections.ConfigDict:
  """8-dimensional embeddings on a width-16 U-Net, 16 points per instance, the paper's 0.5 similarity threshold."""
  return ml_collections.ConfigDict({"name": "metric_learning", "width": 16, "embedding_dim": 8, "dtype": "float32",
                                    **LOSS_DEFAULTS, **PREDICT_DEFAULTS})


def build(config, info):
  del info  # class-agnostic
  c = validated(config, model_config())
  return MetricLearningNet(embedding_dim=c.embedding_dim, width=c.width, dtype=jnp.dtype(c.dtype))


def _settings(model_config, defaults):
  return {k: model_config.get(k, default) for k, default in defaults.items()}


def _image_loss(key, embeddings, seediness_logits, masks, valid, instance_valid, points_per_instance):
  """(pairwise loss, seediness loss) of one image."""
  groups, group_valid = embedding_losses.with_background(masks, valid, instance_valid)
  points, point_valid = embedding_losses.sample_instance_pixels(key, groups, group_valid, points_per_instance)
  pairwise = embedding_losses.pairwise_embedding_loss(embeddings, groups, group_valid, points, point_valid)
  # Seediness at the instances' points only: the background group has no object to grow.
  objects = point_valid & (jnp.arange(groups.shape[0]) < masks.shape[0])[:, None]
  targets = embedding_losses.seediness_targets(embeddings, groups, group_valid, points, objects)
  seediness = embedding_losses.seediness_loss(seediness_logits, points, objects, targets)
  return pairwise, seediness


def loss(outputs, batch, model_config):
  """Pairwise embedding loss + seediness loss + foreground cross entropy (see the module docstring)."""
  s = _settings(model_config, LOSS_DEFAULTS)
  masks = batch["masks"].astype(bool)
  valid = batch["instance_valid"] & ~batch["is_crowd"]
  embeddings = outputs["embeddings"].astype(jnp.float32)
  key = outputs.get("sampling_key")
  keys = jax.random.split(jax.random.key(0) if key is None else key, embeddings.shape[0])
  pairwise, seediness = jax.vmap(
      lambda k, e, z, m, v, iv: _image_loss(k, e, z, m, v, iv, s["points_per_instance"]))(
          keys, embeddings, outputs["seediness_logits"].astype(jnp.float32), masks, valid, batch["instance_valid"])
  pairwise, seediness = jnp.mean(pairwise), jnp.mean(seediness)
  loss_fg = embedding_losses.foreground_loss(outputs["foreground_logits"], masks, batch["instance_valid"],
                                             batch["is_crowd"])
  total = s["embedding_weight"] * pairwise + s["seediness_weight"] * seediness + s["foreground_weight"] * loss_fg
  return total, {"loss_pairwise": pairwise, "loss_seediness": seediness, "loss_foreground": loss_fg}


def _predict_single(embeddings, seediness_logits, foreground_logits, s):
  h, w, e = embeddings.shape
  x = embeddings.reshape(-1, e).astype(jnp.float32)
  seediness = jax.nn.sigmoid(seediness_logits.reshape(-1).astype(jnp.float32))
  foreground = jax.nn.sigmoid(foreground_logits.reshape(-1).astype(jnp.float32)) > s["foreground_threshold"]
  seeds, seed_valid = grouping.sequential_seeds(x, seediness, foreground, s["num_seeds"], s["seed_alpha"])

  def grow(centres):  # [T, D] -> [T, N]: the foreground pixels more similar to each centre than the threshold
    sq = jnp.sum(jnp.square(centres[:, None, :] - x[None, :, :]), -1)
    return (embedding_losses.similarity(sq) > s["similarity_threshold"]) & foreground[None, :]

  masks = grow(x[seeds])
  scores = seediness[seeds]
  if s["recentre_masks"]:  # grown again from each mask's mean embedding, scored by the IoU of the two masks
    grown = masks.astype(jnp.float32)
    masks = grow((grown @ x) / jnp.maximum(grown.sum(1), 1.0)[:, None])
    inter = jnp.sum(grown * masks, 1)
    scores = scores * inter / jnp.maximum(grown.sum(1) + masks.sum(1) - inter, 1.0)

  def body(t, keep):
    repeated = jnp.any(keep & masks[:, seeds[t]] & (jnp.arange(keep.shape[0]) < t))
    return keep.at[t].set(seed_valid[t] & ~repeated)

  keep = jax.lax.fori_loop(0, seeds.shape[0], body, jnp.zeros(seeds.shape[0], bool))
  return grouping.instances_from_masks(masks, keep, scores, s["min_area"], h, w)


def predict(outputs, model_config):
  """Sequential seeds and their similar foreground pixels -> up to num_seeds instances per image (settings:
  config.model's, else PREDICT_DEFAULTS)."""
  s = _settings(model_config, PREDICT_DEFAULTS)
  return jax.vmap(lambda e, z, f: _predict_single(e, z, f, s))(
      outputs["embeddings"], outputs["seediness_logits"], outputs["foreground_logits"])
