"""Losses that shape per-pixel embeddings for bottom-up (proposal-free) instance segmentation.

- `discriminative_loss`: De Brabandere et al. 2017, "Semantic Instance Segmentation with a Discriminative Loss
  Function", Eqs. 1-4 (variance, distance and regularisation terms).
- `pairwise_embedding_loss`, `seediness_targets`, `seediness_loss`: Fathi et al. 2017, "Semantic Instance
  Segmentation via Deep Metric Learning" (Sec. 3: the similarity sigma(p, q) = 2 / (1 + exp(||e_p - e_q||^2)), the
  sigmoid cross entropy over pairs of sampled pixels, and the seediness head).
- `foreground_loss`: the class-agnostic foreground sigmoid cross entropy that the bottom-up models train beside
  their embeddings.
- `intra_cluster_loss`, `inter_cluster_loss`: Xiang et al. 2020, "Learning RGB-D Feature Embeddings for Unseen Object
  Instance Segmentation" (the Unseen Clustering Network: spherical means, cosine distance d = (1 - mu . x) / 2).

All take one image: embeddings [H, W, E] and ground-truth instances padded to K, masks [K, H, W] (bool or {0, 1})
with valid [K]; pixels in no valid instance are ignored. Shapes are static, so an image with another number of
instances reuses the compiled program. `batched` averages a per-image loss over a batch.
"""
import jax
import jax.numpy as jnp

# De Brabandere et al. 2017, Sec. 4.2 (CVPPP and Cityscapes).
DELTA_V, DELTA_D, ALPHA, BETA, GAMMA = 0.5, 1.5, 1.0, 1.0, 0.001
# Xiang et al. 2020, Sec. 4 (their implementation's defaults): intra margin alpha, inter margin delta.
UCN_ALPHA, UCN_DELTA = 0.02, 0.5


def _flatten(embeddings, masks, valid):
  """[N, E] pixels, [K, N] float instance indicators of the valid instances, [K] float validity."""
  e = embeddings.shape[-1]
  if embeddings.ndim != 3 or masks.ndim != 3 or masks.shape[1:] != embeddings.shape[:2] or valid.shape != masks.shape[:1]:
    raise ValueError(f"need embeddings [H, W, E], masks [K, H, W], valid [K]; got {embeddings.shape}, "
                     f"{masks.shape}, {valid.shape}")
  v = valid.astype(embeddings.dtype)
  m = masks.reshape(masks.shape[0], -1).astype(embeddings.dtype) * v[:, None]
  return embeddings.reshape(-1, e), m, v * (m.sum(1) > 0)


def _safe_norm(x, axis=-1):
  """||x|| with a zero (not NaN) gradient at x = 0."""
  sq = jnp.sum(x * x, axis=axis)
  positive = sq > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def _squared_distances(a, b):
  """||a_i - b_j||^2 [I, J] by expansion (no [I, J, E] intermediate), clamped at 0."""
  sq = jnp.sum(a * a, -1)[:, None] - 2 * a @ b.T + jnp.sum(b * b, -1)[None, :]
  return jnp.maximum(sq, 0.0)


def _instance_means(x, m):
  """mu_c = sum_i x_i^c / N_c [K, E] (zero rows for empty instances)."""
  return (m @ x) / jnp.maximum(m.sum(1), 1.0)[:, None]


def discriminative_loss(embeddings, masks, valid, delta_v=DELTA_V, delta_d=DELTA_D, alpha=ALPHA, beta=BETA,
                        gamma=GAMMA):
  """De Brabandere et al. 2017, Eqs. 1-4: alpha L_var + beta L_dist + gamma L_reg of one image.

    L_var  = 1/C sum_c 1/N_c sum_i [||mu_c - x_i|| - delta_v]_+^2
    L_dist = 1/(C (C - 1)) sum_{cA != cB} [2 delta_d - ||mu_cA - mu_cB||]_+^2
    L_reg  = 1/C sum_c ||mu_c||

  C counts the valid, non-empty instances; with C = 0 every term is 0 and with C = 1 L_dist is 0.
  Returns (loss, {"loss_var", "loss_dist", "loss_reg"}).
  """
  x, m, v = _flatten(embeddings, masks, valid)
  count = v.sum()
  mu = _instance_means(x, m)
  distance = jnp.sqrt(_squared_distances(mu, x) + 1e-12)  # [K, N]; the hinge makes the 1e-12 immaterial
  hinge = jnp.square(jnp.maximum(distance - delta_v, 0.0)) * m
  l_var = jnp.sum(v * hinge.sum(1) / jnp.maximum(m.sum(1), 1.0)) / jnp.maximum(count, 1.0)
  pair = v[:, None] * v[None, :] * (1.0 - jnp.eye(v.shape[0], dtype=v.dtype))
  between = _safe_norm(mu[:, None, :] - mu[None, :, :])
  l_dist = jnp.sum(pair * jnp.square(jnp.maximum(2 * delta_d - between, 0.0))) / jnp.maximum(
      count * (count - 1), 1.0)
  l_reg = jnp.sum(v * _safe_norm(mu)) / jnp.maximum(count, 1.0)
  loss = alpha * l_var + beta * l_dist + gamma * l_reg
  return loss, {"loss_var": l_var, "loss_dist": l_dist, "loss_reg": l_reg}


def similarity(squared_distance):
  """Fathi et al. 2017, Eq. 1: sigma(p, q) = 2 / (1 + exp(||e_p - e_q||^2)), in (0, 1]."""
  return 2.0 / (1.0 + jnp.exp(squared_distance))


def _log_similarity(d):
  """(log sigma, log(1 - sigma)) of squared distances d >= 0, stable for small and large d."""
  log_sigma = jnp.log(2.0) - jnp.logaddexp(0.0, d)
  # 1 - sigma = (1 - exp(-d)) / (1 + exp(-d)); d is floored so that coinciding pixels give a finite loss.
  d = jnp.maximum(d, 1e-6)
  log_one_minus = jnp.log(-jnp.expm1(-d)) - jnp.log1p(jnp.exp(-d))
  return log_sigma, log_one_minus


def sample_instance_pixels(key, masks, valid, points_per_instance):
  """Pixel indices [K, P] (into the flattened H x W image) drawn uniformly with replacement from each instance,
  and their validity [K, P]: the same number of points per instance, so that every instance weighs the same in the
  pairwise loss whatever its size (Fathi et al. 2017, Sec. 3.1).

  By inversion: a uniform rank r in [0, count) per point and the pixel where the instance's running pixel count
  reaches r + 1, so that the draw costs [K, P] random numbers rather than one per pixel and point.
  """
  m = masks.reshape(masks.shape[0], -1) > 0
  counts = m.sum(1)
  present = valid & (counts > 0)
  rank = jax.random.randint(key, (m.shape[0], points_per_instance), 0, jnp.maximum(counts, 1)[:, None])
  running = jnp.cumsum(m, axis=1, dtype=jnp.int32)
  index = jax.vmap(lambda c, r: jnp.searchsorted(c, r + 1, side="left"))(running, rank)
  index = jnp.minimum(index, m.shape[1] - 1)  # absent instances: any pixel, marked invalid
  return index.astype(jnp.int32), jnp.broadcast_to(present[:, None], index.shape)


def pairwise_embedding_loss(embeddings, masks, valid, points, point_valid):
  """Fathi et al. 2017, Eq. 2: mean over the pairs of distinct sampled points (p, q) of
  -[1{y_p = y_q} log sigma(p, q) + 1{y_p != y_q} log(1 - sigma(p, q))].

  points [K, P] are flat pixel indices sampled from each instance (`sample_instance_pixels`), point_valid [K, P].
  A point's label is the instance it was drawn from. Returns the scalar loss (0 without pairs).
  """
  x = embeddings.reshape(-1, embeddings.shape[-1])
  k, p = points.shape
  e = x[points.reshape(-1)]
  labels = jnp.repeat(jnp.arange(k), p)
  ok = (point_valid & valid[:, None]).reshape(-1).astype(x.dtype)
  pair = ok[:, None] * ok[None, :] * (1.0 - jnp.eye(k * p, dtype=x.dtype))
  log_sigma, log_one_minus = _log_similarity(_squared_distances(e, e))
  same = labels[:, None] == labels[None, :]
  nll = -jnp.where(same, log_sigma, log_one_minus)
  return jnp.sum(pair * nll) / jnp.maximum(pair.sum(), 1.0)


def seediness_targets(embeddings, masks, valid, points, point_valid, threshold=0.5):
  """Seediness targets of the sampled points [K, P]: the IoU between the mask that point p grows, {q: sigma(p, q) >=
  threshold} over the image's pixels, and p's ground-truth instance (Fathi et al. 2017, Sec. 3.2: a good seed is a
  pixel whose similar pixels form its object). No gradient flows into the embeddings."""
  x = jax.lax.stop_gradient(embeddings).reshape(-1, embeddings.shape[-1]).astype(jnp.float32)
  m = (masks.reshape(masks.shape[0], -1) > 0).astype(jnp.float32)  # pixel counts, exact in float32
  e, x_t = x[points], x.T  # [K, P, E], [E, N]
  # ||e_p - e_q||^2 [K, P, N] summed one embedding dimension at a time: the differences, not |e_p|^2 - 2 e_p.e_q +
  # |e_q|^2, whose cancellation moves pixels across the threshold; one fused elementwise pass over the pairs.
  squared = sum(jnp.square(e[:, :, d, None] - x_t[d]) for d in range(x.shape[1]))
  # sigma(p, q) >= t  <=>  ||e_p - e_q||^2 <= log(2 / t - 1): the threshold on distances, no exp per pixel pair.
  grown = (squared <= jnp.log(2.0 / threshold - 1.0)).astype(jnp.float32)
  inter = jnp.einsum("kpn,kn->kp", grown, m)  # |grown & truth|, each point with its own instance
  union = grown.sum(2) + m.sum(1)[:, None] - inter
  iou = inter / jnp.maximum(union, 1.0)
  return jnp.where(point_valid & valid[:, None], iou, 0.0).astype(embeddings.dtype)


def seediness_loss(seediness_logits, points, point_valid, targets):
  """Sigmoid cross entropy of the seediness logits [H, W] at the sampled points against `seediness_targets`,
  averaged over the valid points."""
  z = seediness_logits.reshape(-1)[points]
  ce = jnp.maximum(z, 0) - z * targets + jnp.log1p(jnp.exp(-jnp.abs(z)))
  w = point_valid.astype(z.dtype)
  return jnp.sum(w * ce) / jnp.maximum(w.sum(), 1.0)


def spherical_means(x, m):
  """Xiang et al. 2020: mu^k = sum_i x_i^k / ||sum_i x_i^k|| [K, E]."""
  total = m @ x
  return total / jnp.maximum(_safe_norm(total), 1e-12)[:, None]


def cosine_distance(mu, x):
  """d(mu, x) = (1 - mu . x) / 2 for unit vectors, [K, N]."""
  return 0.5 * (1.0 - mu @ x.T)


def intra_cluster_loss(embeddings, masks, valid, alpha=UCN_ALPHA):
  """Xiang et al. 2020: l_intra = 1/K sum_k [sum_i 1{d(mu^k, x_i^k) - alpha >= 0} d^2(mu^k, x_i^k)]
  / [sum_i 1{d(mu^k, x_i^k) - alpha >= 0}], over the K valid instances; embeddings are unit vectors. An instance
  with no pixel past the margin contributes 0 (its 0 / 0)."""
  x, m, v = _flatten(embeddings, masks, valid)
  d = cosine_distance(spherical_means(x, m), x)
  hard = m * (d - alpha >= 0)
  per_instance = jnp.sum(hard * d * d, 1) / jnp.maximum(hard.sum(1), 1.0)
  return jnp.sum(v * per_instance) / jnp.maximum(v.sum(), 1.0)


def inter_cluster_loss(embeddings, masks, valid, delta=UCN_DELTA):
  """Xiang et al. 2020: l_inter = 2 / (K (K - 1)) sum_{k < k'} [delta - d(mu^k, mu^k')]_+^2 (0 for K < 2)."""
  x, m, v = _flatten(embeddings, masks, valid)
  mu = spherical_means(x, m)
  pair = jnp.triu(v[:, None] * v[None, :], 1)
  hinge = jnp.square(jnp.maximum(delta - cosine_distance(mu, mu), 0.0))
  count = v.sum()
  return 2.0 * jnp.sum(pair * hinge) / jnp.maximum(count * (count - 1), 1.0)


def foreground_loss(foreground_logits, masks, instance_valid, is_crowd):
  """Sigmoid cross entropy of class-agnostic foreground logits [B, H, W]: target 1 on the pixels of the valid
  non-crowd instances (masks [B, K, H, W], instance_valid and is_crowd [B, K]), 0 elsewhere, averaged over the
  pixels; a crowd's pixels outside every non-crowd instance are ignored (neither object nor background)."""
  masks = masks.astype(bool)
  foreground = jnp.any(masks & (instance_valid & ~is_crowd)[..., None, None], axis=1).astype(jnp.float32)
  crowd = jnp.any(masks & (instance_valid & is_crowd)[..., None, None], axis=1)
  weight = jnp.where(crowd & (foreground == 0), 0.0, 1.0)
  z = foreground_logits.astype(jnp.float32)
  ce = jnp.maximum(z, 0) - z * foreground + jnp.log1p(jnp.exp(-jnp.abs(z)))
  return jnp.sum(weight * ce) / jnp.maximum(weight.sum(), 1.0)


def with_background(masks, valid, instance_valid):
  """One image's instance masks [K, H, W] (bool) and their validity [K] with the background appended as group K:
  the pixels in none of the `instance_valid` masks (crowds included, so a crowd's pixels are in no group). It is
  valid where it has a pixel. The metric-learning model samples it as one more group and the Unseen Clustering
  Network clusters it as one more object (Xiang et al. 2020 treat the background as a cluster)."""
  background = ~jnp.any(masks & instance_valid[:, None, None], axis=0)
  return (jnp.concatenate([masks, background[None]], 0),
          jnp.concatenate([valid, jnp.any(background)[None]], 0))


def batched(loss_fn, *arrays, **kwargs):
  """The mean over the batch of loss_fn on each image (arrays batched on axis 0); dict outputs are averaged too."""
  return jax.tree.map(lambda t: jnp.mean(t, 0), jax.vmap(lambda *a: loss_fn(*a, **kwargs))(*arrays))
