"""Gaussian filtering on the permutohedral lattice (Adams, Baek & Davis 2010) with static shapes, in the conventions
of Krähenbühl's densecrf (pydensecrf): the lattice is built once per image (embed, sort, dedupe, neighbour search)
and applied to any number of value arrays (splat, blur, slice), as mean field does once per iteration.

Lattice points are packed into one int32 key, r * prod(radix) + mixed-radix(q), where every coordinate of a point of
the (d+1)-scaled A*_d lattice is (d+1) q_i + r and the radices span this image's range of q. The points are deduplicated
by sorting the keys into at most `capacity` rows; `overflow` flags an image with more lattice points than that or a
key range beyond int32 (filtered values are then wrong and must not be used).
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

_MAX_KEYS = 2.0**31 * 0.999  # the radix product is computed in float32: keep clear of int32 wrap-around


class Lattice(NamedTuple):
  offsets: jax.Array  # [N, P, d+1] int32 row of each enclosing-simplex vertex; capacity: the zero row (dropped)
  weights: jax.Array  # [N, P, d+1] barycentric weights of the vertices
  neighbours: jax.Array  # [N, d+1, 2, capacity+1] int32 rows of the two blur neighbours along each lattice axis
  overflow: jax.Array  # [N] bool: more than capacity lattice points, or keys beyond int32


def default_capacity(num_points, dim):
  """P (d+1) / 4 lattice points, at least 1024: an image has up to P (d+1) (one per simplex vertex); natural images
  at the usual CRF bandwidths use well under a tenth of that (scripts/bench_crf.py prints the counts)."""
  return max(1024, num_points * (dim + 1) // 4)


def _elevation(dim):
  """E [d+1, d] of Adams et al. p. 5 times the scale sqrt(2/3) (d+1) that makes the blurred lattice a unit Gaussian."""
  e = np.zeros((dim + 1, dim))
  for i in range(dim):
    e[:i + 1, i] = 1.0
    e[i + 1, i] = -(i + 1.0)
  return e / np.sqrt((np.arange(dim) + 1.0) * (np.arange(dim) + 2.0)) * np.sqrt(2.0 / 3.0) * (dim + 1)


def _build(features, capacity):
  """The lattice of one image: features [P, d] -> Lattice fields without the batch axis."""
  num_points, dim = features.shape
  d1 = dim + 1
  elevated = features @ jnp.asarray(_elevation(dim).T, features.dtype)  # [P, d+1], coordinates sum to 0
  # Nearest remainder-0 lattice point, then the permutation (rank) sorting the differences (Adams et al. p. 10).
  nearest = jnp.round(elevated / d1)
  rem0 = (nearest * d1).astype(jnp.int32)
  diff = elevated - rem0
  after = jnp.arange(d1)[None, :] < jnp.arange(d1)[:, None]  # after[i, j]: j < i wins ties, as densecrf
  rank = jnp.sum((diff[:, None, :] > diff[:, :, None]) | ((diff[:, None, :] == diff[:, :, None]) & after), -1)
  rank = rank + jnp.sum(nearest, -1, keepdims=True).astype(jnp.int32)
  wrap = (rank < 0).astype(jnp.int32) - (rank > dim).astype(jnp.int32)  # back onto the plane sum(x) = 0
  rank, rem0 = rank + d1 * wrap, rem0 + d1 * wrap
  # Barycentric weights: b[d - rank_i] += u_i, b[d - rank_i + 1] -= u_i, b[0] += 1 + b[d+1].
  u = (elevated - rem0) / d1
  slots = jax.nn.one_hot(dim - rank, dim + 2, dtype=u.dtype) - jax.nn.one_hot(dim - rank + 1, dim + 2, dtype=u.dtype)
  b = jnp.einsum("pi,pis->ps", u, slots)
  weights = b[:, :d1].at[:, 0].add(1.0 + b[:, d1])
  # Vertex r of the simplex: rem0 + canonical[r, rank], i.e. coordinates (d+1) q_i + r with q below.
  r = jnp.arange(d1)
  q = rem0[:, None, :dim] // d1 - (rank[:, None, :dim] > dim - r[None, :, None]).astype(jnp.int32)  # [P, d+1, d]
  low = jnp.min(q, (0, 1)) - 1  # a margin of one so that every blur neighbour has a key
  radix = jnp.max(q, (0, 1)) - low + 2
  stride = jnp.concatenate([jnp.ones((1,), jnp.int32), jnp.cumprod(radix)[:-1]])
  volume = stride[-1] * radix[-1]
  key_range_overflow = d1 * jnp.prod(radix.astype(jnp.float32)) > _MAX_KEYS
  keys = (r[None, :] * volume + jnp.sum((q - low) * stride, -1)).reshape(-1)  # [P (d+1)], grouped by remainder
  # Dedupe: sort, flag the first of each run, compact the first `capacity` distinct keys (padding sorts last).
  sorted_keys = jnp.sort(keys)
  first = jnp.concatenate([jnp.ones((1,), bool), sorted_keys[1:] != sorted_keys[:-1]])
  row = jnp.cumsum(first) - 1
  count = row[-1] + 1
  lattice_keys = jnp.full((capacity,), jnp.iinfo(jnp.int32).max, jnp.int32)
  lattice_keys = lattice_keys.at[jnp.where(first, row, capacity)].set(sorted_keys, mode="drop")

  def lookup(query):
    found = jnp.minimum(jnp.searchsorted(lattice_keys, query), capacity - 1)
    return jnp.where(lattice_keys[found] == query, found, capacity)

  offsets = lookup(keys).reshape(num_points, d1)
  # Blur neighbour n1 along axis j, x - 1 + (d+1) e_j: remainder r - 1 (mod d+1), q_j + 1 (j < d), and every q_i - 1
  # when the remainder wraps. The other neighbour, x + 1 - (d+1) e_j, is found by inverting n1.
  wraps = lattice_keys < volume
  unit = jnp.concatenate([stride, jnp.zeros((1,), jnp.int32)])  # axis d moves no packed coordinate
  n1 = lookup(lattice_keys + jnp.where(wraps, dim * volume - jnp.sum(stride), -volume) + unit[:, None])
  n1 = jnp.where(jnp.arange(capacity) < count, n1, capacity)  # [d+1, capacity]
  missing = jnp.full((d1, capacity + 1), capacity, jnp.int32)
  n2 = missing.at[jnp.arange(d1)[:, None], jnp.where(n1 < capacity, n1, capacity + 1)].set(
      jnp.arange(capacity, dtype=jnp.int32), mode="drop")
  neighbours = jnp.stack([missing.at[:, :capacity].set(n1), n2], 1)  # [d+1, 2, capacity+1]
  return offsets, weights, neighbours, (count > capacity) | key_range_overflow


def build_lattice(features, capacity):
  """The permutohedral lattice of features [N, P, d] (unit-bandwidth Gaussian), with at most `capacity` points."""
  features = jax.lax.stop_gradient(jnp.asarray(features, jnp.result_type(features, jnp.float32)))
  return Lattice(*jax.vmap(lambda f: _build(f, capacity))(features))


def apply_lattice(lattice, values):
  """sum_j k(f_i, f_j) v_j approximated on the lattice, for values [N, P, L]: splat, blur, slice (densecrf scale)."""
  dim = lattice.offsets.shape[-1] - 1
  capacity = lattice.neighbours.shape[-1] - 1

  def one(offsets, weights, neighbours, v):
    splat = jax.ops.segment_sum((weights[..., None] * v[:, None, :]).reshape(-1, v.shape[-1]), offsets.reshape(-1),
                                capacity)  # vertices dropped at overflow (offset capacity) fall out
    grid = jnp.concatenate([splat, jnp.zeros_like(splat[:1])])
    for j in range(dim + 1):  # [1/2, 1, 1/2] along each lattice axis; missing neighbours read the zero row
      grid = grid + 0.5 * (grid[neighbours[j, 0]] + grid[neighbours[j, 1]])
    alpha = 1.0 / (1.0 + 2.0**-dim)  # densecrf's slice scale
    return alpha * jnp.einsum("pr,prl->pl", weights, grid[offsets])

  return jax.vmap(one)(lattice.offsets, lattice.weights.astype(values.dtype), lattice.neighbours, values)


def permutohedral_filter(features, values, capacity):
  """(filtered [N, P, L], overflow [N]): values [N, P, L] filtered with exp(-|f_i - f_j|^2 / 2) for features
  [N, P, d] on a lattice of at most `capacity` points, about a constant times the exact filter (densecrf's scale)."""
  lattice = build_lattice(features, capacity)
  return apply_lattice(lattice, values), lattice.overflow
