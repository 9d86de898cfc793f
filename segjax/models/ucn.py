"""The Unseen Clustering Network (Xiang et al. 2020, "Learning RGB-D Feature Embeddings for Unseen Object Instance
Segmentation"), its RGB, depth and RGB-D variants, first stage (no second-stage crop refinement).

A trunk (segjax's U-Net with "same" padding) predicts at every pixel an `embedding_dim`-channel feature, normalised to
a unit vector (spherical embeddings). `input` "rgb" reads the image only. `input` "rgbd" is the paper's RGB-D network
with late fusion by addition, as the authors' SEGNET with INPUT "RGBD" and FUSION_TYPE "add"
(github.com/NVlabs/UnseenObjectClustering, lib/networks/SEG.py, commit 2600526d9159b020a73da421970b6e867d4007ee): the
depth map is backprojected to an ordered point cloud with the camera intrinsics (segjax.ops.depth.backproject, their
compute_xyz: X, Y, Z in metres per pixel), a second network of the same architecture (`trunk_depth`, its own weights)
maps the XYZ image to embedding_dim features, and the two feature maps are summed before the normalisation. The batch
then carries "depth" (metres) and "intrinsics" (config.dataset.depth, segjax/data/pipeline.py). `input` "depth" is
that second network alone on the XYZ image, the authors' INPUT "DEPTH"
(experiments/cfgs/seg_resnet34_8s_embedding_cosine_depth_tabletop.yml, commit
db7d2da945a6d41a4274e487ce1dbcb245b5541f), the paper's depth-only rows.

The background is one more cluster beside the objects, as the authors' code does (the table merged into the
background; github.com/NVlabs/UnseenObjectClustering, lib/datasets/tabletop_object.py, commit
f5a00c78f61eff70a2477ab77475c12ef821d739).

Training (segjax.ops.embedding_losses): lambda_intra l_intra + lambda_inter l_inter over the valid non-crowd
instances and the background (pixels in no instance; a crowd's pixels are in no cluster), with the spherical means
mu^k = sum x / ||sum x|| and the cosine distance d = (1 - mu . x) / 2: l_intra averages over the clusters the mean
d^2 of the pixels farther than alpha from their mean, l_inter the hinge [delta - d(mu^k, mu^k')]_+^2 over pairs.
Defaults: the paper's alpha 0.02, delta 0.5 and the authors' configs' lambda_intra = lambda_inter = 10. Every pixel
of a cluster enters the loss (the authors' configs sample 1000 pixels per cluster instead).

Inference (`predict`), per image with static shapes, as the authors' mean_shift_smart_init: `num_seeds` seeds by
farthest-point selection over all pixels (segjax.ops.grouping.sequential_seeds with a uniform score: p_t =
argmax min_q ||x_p - x_q||^2; the first seed is pixel 0 where the authors draw one at random), `mean_shift_iterations`
steps of von Mises-Fisher mean shift with concentration `kappa` (20 in their test code), the modes merged within
`bandwidth` (0.4, the Euclidean distance of unit vectors at cosine distance 2 alpha = 0.04, their merge radius; the
merge keeps modes by decreasing window count as scikit-learn's MeanShift where they label connected components), and
every pixel labelled by its nearest mode. The largest cluster is the background; every other cluster of at least
`min_area` pixels is an object, scored by 1 minus the mean cosine distance of its pixels to its mode (the paper gives
no score; this one ranks tight clusters first for AP). Instances are class-agnostic (label 1).

With `split_components` each object cluster becomes its 4-connected components in the image instead
(segjax.ops.grouping.connected_components within clusters; the num_seeds largest are kept), each scored by 1 minus
the mean cosine distance of its pixels to the cluster's mode: a step the authors' first stage does not have (their
test code labels the clusters only), for unseen objects whose embeddings fall together although they lie apart.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from segjax.models.unet import UNet
from segjax.models.validation import validated
from segjax.ops import depth as depth_ops
from segjax.ops import embedding_losses
from segjax.ops import grouping

TASK = "instance"
BATCH_KEYS = ("image", "masks", "is_crowd", "instance_valid", "depth", "intrinsics")  # depth: DEPTH_INPUTS only
INPUTS = ("rgb", "depth", "rgbd")
DEPTH_INPUTS = ("depth", "rgbd")  # the inputs that read the batch's depth and intrinsics
CLASS_AGNOSTIC = True  # predicted labels are all 1; the evaluator scores mask_AP_agnostic and the overlap F-measure
PREDICT_DEFAULTS = {"num_seeds": 32, "kappa": 20.0, "bandwidth": 0.4, "mean_shift_iterations": 10, "min_area": 4,
                    "split_components": False}
LOSS_DEFAULTS = {"alpha": embedding_losses.UCN_ALPHA, "delta": embedding_losses.UCN_DELTA, "lambda_intra": 10.0,
                 "lambda_inter": 10.0}
INFERENCE_KEYS = frozenset(PREDICT_DEFAULTS)


class UnseenClusteringNet(nn.Module):
  """The image trunk's last 1x1 convolution gives embedding_dim channels (input "rgb"; "rgbd" adds those of the
  depth trunk on the backprojected point cloud, which "depth" uses alone), L2-normalised per pixel."""
  embedding_dim: int
  width: int = 16
  input: str = "rgb"
  dtype: jnp.dtype = jnp.float32

  def _trunk(self, x, train, name):
    return UNet(num_classes=self.embedding_dim, width=self.width, padding="same", dtype=self.dtype,
                name=name)(x, train)["logits"].astype(jnp.float32)

  @nn.compact
  def __call__(self, images, train: bool = False, depth=None, intrinsics=None):
    out = self._trunk(images, train, "trunk") if self.input != "depth" else 0.0
    if self.input in DEPTH_INPUTS:
      if (depth is None or intrinsics is None) and self.is_initializing():  # the loop initialises from an image
        depth, intrinsics = jnp.zeros(images.shape[:3]), jnp.ones((images.shape[0], 4))  # only: shapes suffice
      if depth is None or intrinsics is None:
        raise ValueError(f"UCN with input {self.input!r} reads the batch's depth and intrinsics: set "
                         "config.dataset.depth")
      out = out + self._trunk(depth_ops.backproject(depth, intrinsics), train, "trunk_depth")
    norm = jnp.sqrt(jnp.sum(out * out, -1, keepdims=True) + 1e-12)
    return {"embeddings": out / norm}


def model_config() -> ml_collections.ConfigDict:
  """8-dimensional unit embeddings on a width-16 U-Net, the paper's margins, the authors' inference settings."""
  return ml_collections.ConfigDict({"name": "ucn", "input": "rgb", "width": 16, "embedding_dim": 8,
                                    "dtype": "float32", **LOSS_DEFAULTS, **PREDICT_DEFAULTS})


def input_keys(model_config):
  """The batch entries the forward pass reads besides the image: depth and intrinsics with input "depth" or
  "rgbd"."""
  return ("depth", "intrinsics") if model_config.get("input", "rgb") in DEPTH_INPUTS else ()


def build(config, info):
  del info  # class-agnostic
  c = validated(config, model_config())
  if c.input not in INPUTS:
    raise ValueError(f"config.model.input: {c.input!r} not in {INPUTS}")
  return UnseenClusteringNet(embedding_dim=c.embedding_dim, width=c.width, input=c.input, dtype=jnp.dtype(c.dtype))


def _settings(model_config, defaults):
  return {k: model_config.get(k, default) for k, default in defaults.items()}


def _image_loss(embeddings, masks, valid, instance_valid, alpha, delta):
  groups, group_valid = embedding_losses.with_background(masks, valid, instance_valid)
  return (embedding_losses.intra_cluster_loss(embeddings, groups, group_valid, alpha),
          embedding_losses.inter_cluster_loss(embeddings, groups, group_valid, delta))


def loss(outputs, batch, model_config):
  """lambda_intra l_intra + lambda_inter l_inter over the instances and the background (module docstring)."""
  s = _settings(model_config, LOSS_DEFAULTS)
  masks = batch["masks"].astype(bool)
  valid = batch["instance_valid"] & ~batch["is_crowd"]
  intra, inter = jax.vmap(lambda e, m, v, iv: _image_loss(e, m, v, iv, s["alpha"], s["delta"]))(
      outputs["embeddings"].astype(jnp.float32), masks, valid, batch["instance_valid"])
  intra, inter = jnp.mean(intra), jnp.mean(inter)
  total = s["lambda_intra"] * intra + s["lambda_inter"] * inter
  return total, {"loss_intra": intra, "loss_inter": inter}


def _predict_single(embeddings, s):
  h, w, e = embeddings.shape
  x = embeddings.reshape(-1, e).astype(jnp.float32)
  everywhere = jnp.ones(x.shape[0], bool)
  cluster, modes, keep = grouping.mean_shift_clusters(x, everywhere, jnp.ones(x.shape[0]), s["num_seeds"], 1.0,
                                                      s["bandwidth"], s["mean_shift_iterations"], "vmf",
                                                      kappa=s["kappa"])
  masks = cluster[None, :] == jnp.arange(modes.shape[0])[:, None]  # [T, N]
  area = jnp.where(keep, masks.sum(1), -1)
  objects = keep & (jnp.arange(modes.shape[0]) != jnp.argmax(area))  # the largest cluster is the background
  distance = embedding_losses.cosine_distance(modes, x)  # [T, N]
  if s["split_components"]:
    return _components(cluster, jnp.take_along_axis(distance, cluster[None], 0)[0], jnp.argmax(area), s, h, w)
  scores = 1.0 - jnp.sum(masks * distance, 1) / jnp.maximum(masks.sum(1), 1)
  return grouping.instances_from_masks(masks, objects, scores, s["min_area"], h, w)


def _components(cluster, distance, background, s, h, w):
  """The 4-connected components of every object cluster (cluster [N] labels, distance [N] of each pixel to its
  cluster's mode): the num_seeds largest are the candidates, each scored by 1 minus its pixels' mean distance."""
  regions = cluster.reshape(h, w)
  components, _ = grouping.connected_components(regions != background, 4, regions)
  flat = components.reshape(-1)
  area = jnp.zeros(h * w + 1).at[flat].add(1.0).at[0].set(0.0)
  area, ids = jax.lax.top_k(area, s["num_seeds"])
  masks = flat[None, :] == ids[:, None]  # [T, N]
  scores = 1.0 - jnp.sum(masks * distance, 1) / jnp.maximum(area, 1.0)
  return grouping.instances_from_masks(masks, area > 0, scores, s["min_area"], h, w)


def predict(outputs, model_config):
  """Farthest-point seeds, von Mises-Fisher mean shift, nearest-mode labels, the largest cluster as background ->
  up to num_seeds - 1 instances per image (settings: config.model's, else PREDICT_DEFAULTS)."""
  s = _settings(model_config, PREDICT_DEFAULTS)
  return jax.vmap(lambda e: _predict_single(e, s))(outputs["embeddings"])
