"""Mean-field inference in a fully connected CRF with Gaussian edge potentials (Krähenbühl & Koltun 2011), with
the permutohedral lattice filter (O(HW) memory, as densecrf) or the exact dense filter (O((HW)^2) memory, for small
images and as the reference of the lattice).
"""
import inspect

import jax
import jax.numpy as jnp

from segjax.ops.crf import permutohedral

NORMALIZATIONS = ("none", "symmetric", "after")
FILTERS = ("lattice", "exact")


def _features(image, theta_position, theta_colour=None):
  """[N, HW, D] features: pixel positions (x, y) / theta_position (and colours / theta_colour), densecrf's order.

  In the image's precision, at least float32: the exact filter recomputes its kernel wherever it is applied (in the
  mean-field loop and again in the backward pass), and float32 kernels there need not round alike, which puts a
  float64 gradient about 1e-5 away from the function's difference quotient."""
  n, h, w, _ = image.shape
  dtype = jnp.result_type(image.dtype, jnp.float32)
  ys, xs = jnp.meshgrid(jnp.arange(h, dtype=dtype), jnp.arange(w, dtype=dtype), indexing="ij")
  position = jnp.broadcast_to(jnp.stack([xs, ys], -1) / theta_position, (n, h, w, 2))
  parts = [position] if theta_colour is None else [position, image.astype(dtype) / theta_colour]
  return jnp.concatenate(parts, -1).reshape(n, h * w, -1)


def dense_gaussian_filter(features, values):
  """sum_j exp(-|f_i - f_j|^2 / 2) v_j over all j (i included): features [N, P, D], values [N, P, L]."""
  sq = jnp.sum(features**2, -1)
  distance = sq[:, :, None] + sq[:, None, :] - 2 * jnp.einsum("npd,nqd->npq", features, features)
  return jnp.einsum("npq,nql->npl", jnp.exp(-0.5 * jnp.maximum(distance, 0.0)), values)


def _message(features, weight, normalization, filter, capacity):
  """(Q -> weight x K Q normalised, overflow [N]), K the exact dense filter or a permutohedral lattice built once for
  every iteration, D = K 1 computed once: "none"; "symmetric" D^-1/2 K D^-1/2 Q; "after" K Q / D. The lattice folds
  the scales into its splat and slice weights."""
  if filter == "exact":
    kernel, overflow = lambda q: dense_gaussian_filter(features, q), jnp.zeros(features.shape[:1], bool)
  else:
    lattice = permutohedral.build_lattice(features, capacity or permutohedral.default_capacity(*features.shape[1:]))
    kernel, overflow = lambda q: permutohedral.apply_lattice(lattice, q), lattice.overflow
  splat_scale, slice_scale = 1.0, weight
  if normalization != "none":
    degree = kernel(jnp.ones(features.shape[:2] + (1,), features.dtype))
    splat_scale = jax.lax.rsqrt(degree) if normalization == "symmetric" else 1.0
    slice_scale = weight * (splat_scale if normalization == "symmetric" else 1.0 / degree)
  if filter == "exact":
    return lambda q: slice_scale * kernel(splat_scale * q), overflow
  lattice = lattice._replace(weights=lattice.weights * splat_scale, slice_weights=lattice.slice_weights * slice_scale)
  return lambda q: permutohedral.apply_lattice(lattice, q), overflow


def _check(normalization, filter):
  if normalization not in NORMALIZATIONS:
    raise ValueError(f"normalization must be one of {NORMALIZATIONS}; got {normalization!r}")
  if filter not in FILTERS:
    raise ValueError(f"filter must be one of {FILTERS}; got {filter!r}")


def crf_messages(image, *, theta_alpha, theta_beta, theta_gamma, w_bilateral=1.0, w_spatial=1.0,
                 normalization="symmetric", filter="lattice", lattice_capacity=None):
  """(bilateral, spatial, overflow [N]) for an image [N, H, W, 3] in 0..255: functions Q [N, HW, L] -> w m, the
  weighted, normalised messages of the bilateral kernel (positions / theta_alpha, colours / theta_beta) and of the
  spatial kernel (positions / theta_gamma), their filters built once for every mean-field iteration."""
  _check(normalization, filter)
  n, h, w, _ = image.shape
  bilateral, bilateral_overflow = _message(_features(image, theta_alpha, theta_beta), w_bilateral, normalization,
                                           filter, lattice_capacity)
  # The spatial kernel depends on positions only: one filter for the batch, the images' labels side by side.
  spatial_side, spatial_overflow = _message(_features(image[:1], theta_gamma), w_spatial, normalization, filter,
                                            lattice_capacity)
  spatial = lambda q: spatial_side(q.transpose(1, 0, 2).reshape(1, h * w, -1)).reshape(h * w, n, -1).transpose(1, 0, 2)
  return bilateral, spatial, bilateral_overflow | spatial_overflow


def dense_crf(unary_logits, image, *, num_iterations=10, theta_alpha=80.0, theta_beta=13.0, theta_gamma=3.0,
              w_bilateral=10.0, w_spatial=3.0, compatibility=None, normalization="symmetric", filter="lattice",
              lattice_capacity=None):
  """Mean-field marginals Q [N, H, W, L] from unary logits [N, H, W, L] and an image [N, H, W, 3] in 0..255.

  Q_0 = softmax(unary); each iteration Q = softmax(unary - mu(w_b m_b + w_s m_s)) (Sec. 4), with m the
  normalised messages of the bilateral kernel (positions / theta_alpha, colours / theta_beta) and the spatial
  kernel (positions / theta_gamma), and mu the Potts compatibility [l != l'] or the given L x L matrix.

  filter "lattice" approximates both kernels on permutohedral lattices of at most lattice_capacity points (default
  permutohedral.default_capacity: HW (d+1) / 2); an image whose lattice overflows (more points, or a key range
  beyond two int32 words) gets NaN marginals. Its
  unnormalised messages ("none") carry densecrf's lattice scale: about 0.55 (bilateral) and 0.88 (spatial) times the
  exact kernel's on 30x40 images.
  filter "exact" sums over all pixel pairs.
  """
  if unary_logits.ndim != 4 or image.shape != unary_logits.shape[:3] + (3,):
    raise ValueError(f"unary_logits must be [N, H, W, L] and image [N, H, W, 3]; got {unary_logits.shape} and "
                     f"{image.shape}")
  n, h, w, num_labels = unary_logits.shape
  if compatibility is not None and jnp.shape(compatibility) != (num_labels, num_labels):
    raise ValueError(f"compatibility must be [{num_labels}, {num_labels}]; got {jnp.shape(compatibility)}")
  _check(normalization, filter)
  dtype = jnp.result_type(unary_logits, jnp.float32)
  unary = unary_logits.astype(dtype).reshape(n, h * w, num_labels)
  image = image.astype(dtype)
  # The spatial kernel depends on positions only: one filter for the whole batch.
  spatial, spatial_overflow = _message(_features(image[:1], theta_gamma), w_spatial, normalization, filter,
                                       lattice_capacity)

  def marginals(inputs):
    """One image's mean field: its bilateral filter, then the iterations."""
    unary, image = inputs[0][None], inputs[1]
    bilateral, overflow = _message(_features(image[None], theta_alpha, theta_beta), w_bilateral, normalization, filter,
                                   lattice_capacity)

    def iteration(_, q):
      message = bilateral(q) + spatial(q)
      if compatibility is None:  # Potts: mu m = sum_l' m_l' - m_l, whose first term the softmax cancels
        return jax.nn.softmax(unary + message, -1)
      return jax.nn.softmax(unary - message @ jnp.asarray(compatibility, dtype).T, -1)

    q = jax.lax.fori_loop(0, num_iterations, iteration, jax.nn.softmax(unary, -1))  # compiles one iteration
    return jnp.where(overflow[0] | spatial_overflow[0], jnp.nan, q[0])

  if n == 1:
    return marginals((unary[0], image[0])).reshape(n, h, w, num_labels)
  # The images one at a time (a loop: one compiled body), so that a batch holds one image's lattice and marginals
  # at a time and costs per image what a single image does, less its share of the spatial filter built once.
  return jax.lax.map(marginals, (unary, image)).reshape(n, h, w, num_labels)


def dense_crf_defaults() -> dict:
  """`dense_crf`'s keyword arguments and their defaults, as models' configs hold them."""
  return {k: p.default for k, p in inspect.signature(dense_crf).parameters.items() if p.kind == p.KEYWORD_ONLY}
