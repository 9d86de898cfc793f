"""Bottom-up instance segmentation with per-pixel embeddings (De Brabandere et al. 2017, "Semantic Instance
Segmentation with a Discriminative Loss Function").

A semantic trunk (a U-Net with "same" padding, `segjax.models.unet.UNet`) predicts at every pixel an embedding of
`embedding_dim` channels and a foreground logit. Training: the discriminative loss (Eqs. 1-4, delta_v 0.5, delta_d
1.5, alpha = beta = 1, gamma = 0.001) over the ground-truth instances of each image, plus a sigmoid cross entropy
for the foreground (the paper takes its foreground from a separate semantic segmentation, Sec. 4.2; here one trunk
predicts both, a class-agnostic thing/background mask).

Inference (`predict`), per image with static shapes (Sec. 3.3, mean-shift clustering of the foreground embeddings):
`num_seeds` seeds by the sequential rule of Fathi et al. 2017 (p_t = argmax log S_p + alpha log D(p, p_1:t-1), with
the foreground probability as S_p, so that seeds spread over the embedding space of the foreground), mean shift from
them (`kernel`, `bandwidth`, `mean_shift_iterations`), the modes merged as scikit-learn's MeanShift does, every
foreground pixel assigned to its nearest mode; a cluster of at least `min_area` pixels is an instance, scored by its
mean foreground probability times the fraction of its pixels within delta_v of its mode. The variance term (Eq. 2)
pulls every pixel of an instance to within delta_v of its centre, so a whole instance scores about its foreground
probability, while a cluster made of pixels that only fell to their nearest mode (stray boundary pixels, a fragment
of an instance split between modes) scores lower and ranks below the whole instances in the precision-recall order
that mask AP integrates; a mean foreground probability alone is near 1 for every cluster and cannot rank them.
Instances are class-agnostic: label 1; evaluate with mask_AP_agnostic.
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
CLASS_AGNOSTIC = True  # predicted labels are all 1 (one "object" class); the evaluator scores mask_AP_agnostic
PREDICT_DEFAULTS = {"num_seeds": 32, "seed_alpha": 1.0, "kernel": "flat", "bandwidth": 0.5, "kappa": 10.0,
                    "mean_shift_iterations": 10, "foreground_threshold": 0.5, "min_area": 4}
LOSS_DEFAULTS = {"delta_v": embedding_losses.DELTA_V, "delta_d": embedding_losses.DELTA_D,
                 "alpha": embedding_losses.ALPHA, "beta": embedding_losses.BETA, "gamma": embedding_losses.GAMMA,
                 "foreground_weight": 1.0}
INFERENCE_KEYS = frozenset(PREDICT_DEFAULTS)


class EmbeddingNet(nn.Module):
  """The trunk's last 1x1 convolution gives embedding_dim + 1 channels: embeddings and the foreground logit."""
  embedding_dim: int
  width: int = 16
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, images, train: bool = False):
    out = UNet(num_classes=self.embedding_dim + 1, width=self.width, padding="same", dtype=self.dtype,
               name="trunk")(images, train)["logits"]
    return {"embeddings": out[..., :self.embedding_dim], "foreground_logits": out[..., self.embedding_dim]}


def model_config() -> ml_collections.ConfigDict:
  """8-dimensional embeddings on a width-16 U-Net, the paper's loss settings, flat-kernel mean shift."""
  return ml_collections.ConfigDict({"name": "discriminative_embedding", "width": 16, "embedding_dim": 8,
                                    "dtype": "float32", **LOSS_DEFAULTS, **PREDICT_DEFAULTS})


def build(config, info):
  del info  # class-agnostic
  c = validated(config, model_config())
  return EmbeddingNet(embedding_dim=c.embedding_dim, width=c.width, dtype=jnp.dtype(c.dtype))


def _settings(model_config, defaults):
  return {k: model_config.get(k, default) for k, default in defaults.items()}


def loss(outputs, batch, model_config):
  """Discriminative loss over the non-crowd instances + foreground sigmoid cross entropy (crowd pixels ignored)."""
  s = _settings(model_config, LOSS_DEFAULTS)
  valid = batch["instance_valid"] & ~batch["is_crowd"]
  masks = batch["masks"].astype(bool)
  embeddings = outputs["embeddings"].astype(jnp.float32)
  disc, terms = embedding_losses.batched(embedding_losses.discriminative_loss, embeddings, masks, valid,
                                         delta_v=s["delta_v"], delta_d=s["delta_d"], alpha=s["alpha"],
                                         beta=s["beta"], gamma=s["gamma"])
  loss_fg = embedding_losses.foreground_loss(outputs["foreground_logits"], masks, batch["instance_valid"],
                                             batch["is_crowd"])
  total = disc + s["foreground_weight"] * loss_fg
  return total, {"loss_discriminative": disc, "loss_foreground": loss_fg, **terms}


def _predict_single(embeddings, foreground_logits, s):
  h, w, e = embeddings.shape
  x = embeddings.reshape(-1, e).astype(jnp.float32)
  probability = jax.nn.sigmoid(foreground_logits.reshape(-1).astype(jnp.float32))
  foreground = probability > s["foreground_threshold"]
  points = x if s["kernel"] != "vmf" else x / jnp.maximum(jnp.linalg.norm(x, axis=1, keepdims=True), 1e-12)
  cluster, modes, keep = grouping.mean_shift_clusters(points, foreground, probability, s["num_seeds"],
                                                      s["seed_alpha"], s["bandwidth"], s["mean_shift_iterations"],
                                                      s["kernel"], kappa=s["kappa"])
  masks = (cluster[None, :] == jnp.arange(modes.shape[0])[:, None]) & foreground[None, :]  # [T, N]
  area = jnp.maximum(masks.sum(1), 1)
  # Compactness: the fraction of the cluster's pixels within delta_v of its mode, where the variance term (Eq. 2)
  # pulls every pixel of a trained instance; pixels that only fell to the nearest mode lie farther out.
  near = jnp.linalg.norm(points - modes[cluster], axis=1) <= s["delta_v"]
  scores = (masks * probability[None, :]).sum(1) / area * (masks & near[None, :]).sum(1) / area
  return grouping.instances_from_masks(masks, keep, scores, s["min_area"], h, w)


def predict(outputs, model_config):
  """Seeds, mean shift and nearest-mode assignment of the foreground pixels -> up to num_seeds instances per image
  (settings: config.model's, else PREDICT_DEFAULTS; delta_v: the loss's)."""
  s = {**_settings(model_config, PREDICT_DEFAULTS), "delta_v": model_config.get("delta_v", LOSS_DEFAULTS["delta_v"])}
  if s["kernel"] not in grouping.KERNELS:
    raise ValueError(f"config.model.kernel must be one of {grouping.KERNELS}; got {s['kernel']!r}")
  return jax.vmap(lambda e, f: _predict_single(e, f, s))(outputs["embeddings"], outputs["foreground_logits"])
