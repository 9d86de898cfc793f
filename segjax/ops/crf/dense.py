"""Mean-field inference in a fully connected CRF with Gaussian edge potentials (Krähenbühl & Koltun 2011),
with the exact dense filter: O((HW)^2) memory, for small images and as the reference of faster filters.
"""
import jax
import jax.numpy as jnp

NORMALIZATIONS = ("none", "symmetric", "after")


def _features(image, theta_position, theta_colour=None):
  """[N, HW, D] features: pixel positions / theta_position (and colours / theta_colour)."""
  n, h, w, _ = image.shape
  ys, xs = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij")
  position = jnp.broadcast_to(jnp.stack([ys, xs], -1) / theta_position, (n, h, w, 2))
  parts = [position] if theta_colour is None else [position, image.astype(jnp.float32) / theta_colour]
  return jnp.concatenate(parts, -1).reshape(n, h * w, -1)


def dense_gaussian_filter(features, values):
  """sum_j exp(-|f_i - f_j|^2 / 2) v_j over all j (i included): features [N, P, D], values [N, P, L]."""
  sq = jnp.sum(features**2, -1)
  distance = sq[:, :, None] + sq[:, None, :] - 2 * jnp.einsum("npd,nqd->npq", features, features)
  return jnp.einsum("npq,nql->npl", jnp.exp(-0.5 * jnp.maximum(distance, 0.0)), values)


def _message(features, q, normalization):
  """K Q normalised: "none"; "symmetric" D^-1/2 K D^-1/2 Q with D = K 1; "after" K Q / K 1."""
  if normalization == "none":
    return dense_gaussian_filter(features, q)
  degree = dense_gaussian_filter(features, jnp.ones(q.shape[:2] + (1,), q.dtype))
  if normalization == "after":
    return dense_gaussian_filter(features, q) / degree
  scale = jax.lax.rsqrt(degree)
  return scale * dense_gaussian_filter(features, scale * q)


def dense_crf(unary_logits, image, *, num_iterations=10, theta_alpha=80.0, theta_beta=13.0, theta_gamma=3.0,
              w_bilateral=10.0, w_spatial=3.0, compatibility=None, normalization="symmetric"):
  """Mean-field marginals Q [N, H, W, L] from unary logits [N, H, W, L] and an image [N, H, W, 3] in 0..255.

  Q_0 = softmax(unary); each iteration Q = softmax(unary - mu(w_b m_b + w_s m_s)) (Sec. 4), with m the
  normalised messages of the bilateral kernel (positions / theta_alpha, colours / theta_beta) and the spatial
  kernel (positions / theta_gamma), and mu the Potts compatibility [l != l'] or the given L x L matrix.
  """
  if unary_logits.ndim != 4 or image.shape != unary_logits.shape[:3] + (3,):
    raise ValueError(f"unary_logits must be [N, H, W, L] and image [N, H, W, 3]; got {unary_logits.shape} and "
                     f"{image.shape}")
  if normalization not in NORMALIZATIONS:
    raise ValueError(f"normalization must be one of {NORMALIZATIONS}; got {normalization!r}")
  n, h, w, num_labels = unary_logits.shape
  if compatibility is None:
    compatibility = 1.0 - jnp.eye(num_labels)
  elif jnp.shape(compatibility) != (num_labels, num_labels):
    raise ValueError(f"compatibility must be [{num_labels}, {num_labels}]; got {jnp.shape(compatibility)}")
  dtype = jnp.result_type(unary_logits, jnp.float32)
  unary = unary_logits.astype(dtype).reshape(n, h * w, num_labels)
  bilateral = _features(image.astype(dtype), theta_alpha, theta_beta).astype(dtype)
  spatial = _features(image.astype(dtype), theta_gamma).astype(dtype)
  q = jax.nn.softmax(unary, -1)
  for _ in range(num_iterations):
    message = (w_bilateral * _message(bilateral, q, normalization)
               + w_spatial * _message(spatial, q, normalization))
    q = jax.nn.softmax(unary - message @ jnp.asarray(compatibility, dtype).T, -1)
  return q.reshape(n, h, w, num_labels)
