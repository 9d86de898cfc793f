"""Gaussian filtering on the permutohedral lattice (Adams, Baek & Davis 2010) with static shapes, in the conventions
of Krähenbühl's densecrf (pydensecrf): the lattice is built once per image (embed, hash, neighbour search)
and applied to any number of value arrays (splat, blur, slice), as mean field does once per iteration.

Lattice points are packed into a key of two int32 words in mixed radix, where every coordinate of a point of the
(d+1)-scaled A*_d lattice is (d+1) q_i + r and the radices span this image's range of q: the high word holds r and
the leading q_i whose radix product fits, the low word the others (small colour bandwidths such as CRF-as-RNN's
theta_beta = 3 need about 2^35 keys on a 500 x 500 photo). The points are deduplicated in an open-addressing hash
table of static size (every key inserted at once, round by round: no sort, which XLA:CPU runs slowly on several
operands), one image at a time, into at most `capacity` rows per image, numbered in pixel order; `overflow` flags an
image with more lattice points than that or a key range beyond two words (its filtered values are then wrong and
must not be used). The images' points fill whole blocks of rows one image after the other; the neighbour search and
the blur loop over those blocks, and apply_lattice allocates a grid of a few static sizes that holds them, so that
their cost follows the point count, not the capacity (a few percent of it on photos at densecrf's bandwidths); splat
and slice loop over blocks of points, so that no [N P (d+1), L] array is materialised. The filter is linear in the
values and reverse-mode differentiable in them (the blur by a custom VJP: forward mode is not supported); the
features get no gradient.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

_MAX_KEYS = 2.0**31 * 0.999  # radix products are computed in float32: keep clear of int32 wrap-around
_PAD = jnp.iinfo(jnp.int32).max  # the key of unused lattice rows (their neighbour searches are masked out)
BLOCK = 4096  # lattice rows per block
PIXEL_BLOCK = 4096  # points per block of splat and slice


class Lattice(NamedTuple):
  """The lattices of a batch in one grid of rows: image n's points in the rows of its ceil(points / block) blocks,
  the images one after the other; the row after the last used block is the missing row, always zero. Its static
  size, N C (C: the capacity rounded up to whole blocks), only bounds it: apply_lattice allocates the smallest of a
  few grid sizes that holds the used blocks."""
  offsets: jax.Array  # [N, P, d+1] int32 row of each enclosing-simplex vertex (missing if dropped at overflow)
  weights: jax.Array  # [N, P, d+1] barycentric weights of the vertices, for the splat
  slice_weights: jax.Array  # [N, P, d+1] the same times densecrf's scale 1 / (1 + 2^-d); scaling them (or the splat
                            # weights) point by point normalises the filter without a pass over the values
  neighbours: jax.Array  # [d+1, 2, N C / block, block] int32 rows of the two blur neighbours along each lattice axis
  num_blocks: jax.Array  # int32 scalar: blocks in use, rows 0 ... num_blocks * block - 1; the next row is missing
  count: jax.Array  # [N] int32 lattice points of each image
  overflow: jax.Array  # [N] bool: more than C lattice points, or keys beyond int32


def default_capacity(num_points, dim):
  """P (d+1) / 2 lattice points (at least 1024) of the P (d+1) an image can have (one per simplex vertex). Pixels
  close in position and colour share lattice points, so natural images at the usual bandwidths fill a small fraction
  of P (d+1), and the fraction grows as theta_beta (or theta_gamma) shrinks and for colour noise; scripts/bench_crf.py
  prints the points an image uses. Time hardly depends on the capacity, memory does (two [N C, L] grids)."""
  return max(1024, num_points * (dim + 1) // 2)


def _elevation(dim):
  """E [d+1, d] of Adams et al. p. 5 times the scale sqrt(2/3) (d+1) that makes the blurred lattice a unit Gaussian."""
  e = np.zeros((dim + 1, dim))
  for i in range(dim):
    e[:i + 1, i] = 1.0
    e[i + 1, i] = -(i + 1.0)
  return e / np.sqrt((np.arange(dim) + 1.0) * (np.arange(dim) + 2.0)) * np.sqrt(2.0 / 3.0) * (dim + 1)


def _simplices(features):
  """The enclosing simplices of points features [K, d]: the remainder-0 vertex [K, d+1] (int32), the permutation
  rank [K, d+1] and the barycentric weights [K, d+1] (Adams et al. p. 10, in densecrf's tie order)."""
  num_points, dim = features.shape
  d1 = dim + 1
  elevated = features @ jnp.asarray(_elevation(dim).T, features.dtype)  # [P, d+1], coordinates sum to 0
  # Nearest remainder-0 lattice point, then the permutation (rank) sorting the differences (Adams et al. p. 10).
  nearest = jnp.round(elevated / d1)
  rem0 = (nearest * d1).astype(jnp.int32)
  diff = elevated - rem0
  after = jnp.arange(d1)[None, :] < jnp.arange(d1)[:, None]  # after[i, j]: j < i wins ties, as densecrf
  rank = jnp.sum((diff[:, None, :] > diff[:, :, None]) | ((diff[:, None, :] == diff[:, :, None]) & after), -1,
                 dtype=jnp.int32)
  rank = rank + jnp.sum(nearest, -1, keepdims=True).astype(jnp.int32)
  wrap = (rank < 0).astype(jnp.int32) - (rank > dim).astype(jnp.int32)  # back onto the plane sum(x) = 0
  rank, rem0 = rank + d1 * wrap, rem0 + d1 * wrap
  # Barycentric weights: b[d - rank_i] += u_i, b[d - rank_i + 1] -= u_i, b[0] += 1 + b[d+1]; with u sorted by
  # rank that is b[s] = u_(d - s) - u_(d + 1 - s). by_rank [P, d+1]: u_(d), ..., u_(0) (a scatter: rank is a
  # permutation of 0..d).
  u = (elevated - rem0) / d1
  by_rank = jnp.zeros_like(u).at[jnp.arange(num_points)[:, None], dim - rank].set(u, unique_indices=True)
  weights = by_rank - jnp.pad(by_rank[:, :-1], ((0, 0), (1, 0)))
  weights = weights.at[:, 0].add(1.0 - by_rank[:, -1])
  return rem0, rank, weights


def _embed(features):
  """The lattice vertices of a batch, features [N, P, d]: barycentric weights [N, P, d+1], keys ([N, P (d+1)],
  [N, P (d+1)]) of the enclosing simplices' vertices, and per image the key volume, strides [2, d] and whether the
  keys overflow two words."""
  n, num_points, dim = features.shape
  d1 = dim + 1
  rem0, rank, weights = (x.reshape(n, num_points, d1) for x in _simplices(features.reshape(-1, dim)))
  return (weights,) + jax.vmap(_keys)(rem0, rank)


def _keys(rem0, rank):
  """Keys of the vertices of one image's simplices (rem0, rank [P, d+1]), key volume, strides and overflow."""
  d1 = rank.shape[-1]
  dim = d1 - 1
  # Vertex r of the simplex: rem0 + canonical[r, rank], i.e. coordinates (d+1) q_i + r with q below.
  r = jnp.arange(d1, dtype=jnp.int32)
  q = rem0[:, None, :dim] // d1 - (rank[:, None, :dim] > dim - r[None, :, None]).astype(jnp.int32)  # [P, d+1, d]
  low = jnp.min(q, (0, 1)) - 1  # a margin of one so that every blur neighbour has a key
  radix = jnp.max(q, (0, 1)) - low + 2
  # Two int32 words, compared lexicographically: r and the leading coordinates that fit in the high word, the
  # others in the low word (strides 0 where a coordinate is not in the word).
  high = d1 * jnp.cumprod(radix.astype(jnp.float32)) <= _MAX_KEYS
  radix_high, radix_low = jnp.where(high, radix, 1), jnp.where(high, 1, radix)
  exclusive = lambda x: jnp.concatenate([jnp.ones((1,), jnp.int32), jnp.cumprod(x, dtype=jnp.int32)[:-1]])
  strides = jnp.stack([jnp.where(high, exclusive(radix_high), 0), jnp.where(high, 0, exclusive(radix_low))])
  volume = jnp.prod(radix_high, dtype=jnp.int32)  # of the high word's coordinates; r counts in units of it
  key_range_overflow = jnp.prod(radix_low.astype(jnp.float32)) > _MAX_KEYS
  packed = lambda word: jnp.sum((q - low) * strides[word], -1, dtype=jnp.int32)  # [P, d+1]
  keys = ((r * volume + packed(0)).reshape(-1), packed(1).reshape(-1))  # [P (d+1)] each
  return keys, volume, strides, key_range_overflow


def _dedupe(keys, capacity):
  """Rows of the vertex keys ([N, M], [N, M]) of N images: each distinct key's first vertex owns a slot of its
  image's part of a hash table; rows number the owners of an image in vertex order, the first `capacity` of them
  kept. Returns the rows [N, M] (capacity: dropped), the keys of the rows [2, N capacity] (_PAD past the last),
  the point counts [N], and the table (owner, keys, rows, size) for _lookup."""
  n, m = keys[0].shape
  size = _table_size(m)
  flat = tuple(k.reshape(-1) for k in keys)
  base = jnp.repeat(jnp.arange(n, dtype=jnp.int32) * size, m)
  owner, slot = _insert(flat, base, size, n)
  holder = owner[base + slot]
  first = (holder == jnp.arange(n * m, dtype=jnp.int32)).reshape(n, m)
  row = jax.lax.associative_scan(jnp.add, first.astype(jnp.int32), axis=1) - 1  # a cumsum (XLA:CPU's is serial)
  count = row[:, -1] + 1
  vertex_rows = jnp.minimum(row.reshape(-1)[holder], capacity).reshape(n, m)
  at = jnp.where(first & (row < capacity), row + capacity * jnp.arange(n, dtype=jnp.int32)[:, None], n * capacity)
  row_keys = jnp.full((2, n * capacity), _PAD, jnp.int32).at[:, at.reshape(-1)].set(jnp.stack(flat), mode="drop")
  return vertex_rows, row_keys, count, (owner, jnp.stack(flat), row.reshape(-1), size)


_EMPTY = jnp.iinfo(jnp.int32).max  # an unowned slot of the hash table


def _table_size(num_keys):
  """A power of two at least twice the number of keys: linear probing at load <= 1/2, and always a free slot."""
  return 1 << int(np.ceil(np.log2(2 * num_keys)))


def _hash(high, low, size):
  """Slot of a key pair in a table of `size` (a power of two): murmur3's 32-bit finaliser of a mix of both words."""
  h = high.astype(jnp.uint32) * jnp.uint32(0x9E3779B1) ^ low.astype(jnp.uint32) * jnp.uint32(0x85EBCA77)
  h = (h ^ (h >> 16)) * jnp.uint32(0x85EBCA6B)
  h = (h ^ (h >> 13)) * jnp.uint32(0xC2B2AE35)
  return ((h ^ (h >> 16)) & jnp.uint32(size - 1)).astype(jnp.int32)


def _insert(keys, base, size, num_tables):
  """(owner [num_tables size], slot [K]) of key pairs keys ([K], [K]) in open-addressing tables of `size` slots with
  linear probing, key k in the table starting at base[k], all keys at once: each round the unplaced keys that reach
  a free slot claim it (the lowest index wins), and those that then find another key there move on one slot. owner
  holds the first index of each distinct key (_EMPTY where free), slot the slot of every key in its table."""
  items = jnp.arange(keys[0].shape[0], dtype=jnp.int32)

  def probe(state):
    owner, slot, placed = state
    at = base + slot
    owner = owner.at[jnp.where(~placed & (owner[at] == _EMPTY), at, owner.shape[0])].min(items, mode="drop")
    holder = owner[at]
    placed = (keys[0][holder] == keys[0]) & (keys[1][holder] == keys[1])
    return owner, jnp.where(placed, slot, (slot + 1) & (size - 1)), placed

  start = (jnp.full((num_tables * size,), _EMPTY, jnp.int32), _hash(*keys, size), jnp.zeros(items.shape, bool))
  owner, slot, _ = jax.lax.while_loop(lambda state: ~jnp.all(state[2]), probe, start)
  return owner, slot


def _lookup(table, query, image):
  """Rows [...] of the key pairs query [2, ...] in image's table of (owner [N size], keys [2, N M], rows [N M], size),
  the single-image tables of _dedupe one after the other; capacity (dropped) or -1 where a key is absent."""
  owner, keys, row, size = table
  base, first_item = image * size, image * (row.shape[0] // (owner.shape[0] // size))

  def probe(state):
    slot, found, pending = state
    holder = owner[base + slot]
    empty = holder == _EMPTY
    at = jnp.where(empty, 0, holder) + first_item
    hit = pending & ~empty & (keys[0][at] == query[0]) & (keys[1][at] == query[1])
    found = jnp.where(hit, row[at], found)
    pending = pending & ~empty & ~hit
    return jnp.where(pending, (slot + 1) & (size - 1), slot), found, pending

  start = (_hash(query[0], query[1], size), jnp.full(query.shape[1:], -1, jnp.int32), jnp.ones(query.shape[1:], bool))
  return jax.lax.while_loop(lambda state: jnp.any(state[2]), probe, start)[1]


def _neighbours(table, row_keys, count, volume, strides, image_blocks, num_blocks, max_blocks):
  """[d+1, 2, max_blocks, block] blur neighbours. n1 along axis j, x - 1 + (d+1) e_j: remainder r - 1 (mod d+1),
  q_j + 1 (j < d), and every q_i - 1 when the remainder wraps; n2, x + 1 - (d+1) e_j, is n1 inverted."""
  n = count.shape[0]
  capacity = row_keys.shape[1] // n
  dim = strides.shape[-1]
  block = n * capacity // max_blocks
  missing = num_blocks * block
  ends = jnp.cumsum(image_blocks)
  unit = jnp.concatenate([strides, jnp.zeros((n, 2, 1), jnp.int32)], 2)  # axis d moves no packed coordinate
  within = jnp.arange(block, dtype=jnp.int32)

  def search(i, neighbours):
    image = jnp.sum(ends <= i, dtype=jnp.int32)
    first = ends[image] - image_blocks[image]  # the image's first block
    local = (i - first) * block  # the block's first row among the image's points
    keys = jax.lax.dynamic_slice_in_dim(row_keys, image * capacity + local, block, 1)  # [2, block]
    wraps = keys[0] < volume[image]  # remainder 0 -> d, every q_i - 1; else remainder - 1
    step = jnp.stack([jnp.where(wraps, dim * volume[image] - jnp.sum(strides[image, 0]), -volume[image]),
                      jnp.where(wraps, -jnp.sum(strides[image, 1]), 0)])
    query = (keys + step)[:, None, :] + unit[image][:, :, None]  # [2, d+1, block]
    found = _lookup(table, query, image)
    hit = (found >= 0) & (found < capacity) & (local + within < count[image])
    n1 = jnp.where(hit, found + first * block, missing)
    neighbours = jax.lax.dynamic_update_index_in_dim(neighbours, n1[:, None], i, 2)
    return neighbours.at[jnp.arange(dim + 1)[:, None], 1, jnp.where(hit, n1 // block, max_blocks), n1 % block].set(
        i * block + within, mode="drop")

  return jax.lax.fori_loop(0, num_blocks, search, jnp.full((dim + 1, 2, max_blocks, block), missing, jnp.int32))


def build_lattice(features, capacity):
  """The permutohedral lattices of features [N, P, d] (unit-bandwidth Gaussian), each of at most `capacity` points
  (rounded up to whole blocks of min(BLOCK, capacity) rows)."""
  features = jax.lax.stop_gradient(jnp.asarray(features, jnp.result_type(features, jnp.float32)))
  n = features.shape[0]
  block = min(BLOCK, capacity)
  capacity = -(-capacity // block) * block
  def points(f):  # one image at a time: its hash table stays in cache
    weights, keys, volume, strides, key_range_overflow = jax.tree.map(lambda x: x[0], _embed(f[None]))
    rows, row_keys, count, (owner, flat, row, _) = _dedupe(tuple(k[None] for k in keys), capacity)
    return weights, rows[0], row_keys, count[0], owner, flat, row, volume, strides, key_range_overflow

  weights, rows, row_keys, count, owner, flat, row, volume, strides, key_range_overflow = jax.lax.map(points, features)
  table = (owner.reshape(-1), flat.transpose(1, 0, 2).reshape(2, -1), row.reshape(-1), owner.shape[1])
  row_keys = row_keys.transpose(1, 0, 2).reshape(2, -1)
  overflow = (count > capacity) | key_range_overflow
  image_blocks = (jnp.minimum(count, capacity) + block - 1) // block
  num_blocks = jnp.sum(image_blocks, dtype=jnp.int32)
  first_row = (jnp.cumsum(image_blocks) - image_blocks) * block
  offsets = jnp.where(rows == capacity, num_blocks * block, rows + first_row[:, None]).reshape(weights.shape)
  neighbours = _neighbours(table, row_keys, count, volume, strides, image_blocks, num_blocks, n * capacity // block)
  alpha = 1.0 / (1.0 + 2.0**-features.shape[-1])
  return Lattice(offsets, weights, alpha * weights, neighbours, num_blocks, count, overflow)


def _blur_axes(grid, neighbours, num_blocks, axes):
  """[1/2, 1, 1/2] along each lattice axis in turn, on the rows of the used blocks (the others stay zero)."""
  block = neighbours.shape[-1]
  spare = jnp.zeros_like(grid)
  for j in axes:
    def blur(i, out, j=j, grid=grid):
      start = i * block
      pair = neighbours[j, :, i]
      near = jnp.take(grid, pair[0], axis=0, mode="clip") + jnp.take(grid, pair[1], axis=0, mode="clip")
      return jax.lax.dynamic_update_slice_in_dim(out, jax.lax.dynamic_slice_in_dim(grid, start, block) + 0.5 * near,
                                                 start, 0)
    grid, spare = jax.lax.fori_loop(0, num_blocks, blur, spare), grid
  return grid


@jax.custom_vjp
def _blur(grid, neighbours, num_blocks):
  return _blur_axes(grid, neighbours, num_blocks, range(neighbours.shape[0]))


def _blur_forward(grid, neighbours, num_blocks):
  return _blur(grid, neighbours, num_blocks), (neighbours, num_blocks)


def _blur_backward(residuals, cotangent):
  """Each axis blur is symmetric (n2 inverts n1), so the transpose blurs the axes in reverse order."""
  neighbours, num_blocks = residuals
  return _blur_axes(cotangent, neighbours, num_blocks, reversed(range(neighbours.shape[0]))), None, None


_blur.defvjp(_blur_forward, _blur_backward)


def _pixel_blocks(fn, num_points, carry):
  """carry = fn(start, size, carry) over the points in blocks of PIXEL_BLOCK (and a last partial one), which keeps
  each block's splat updates and slice gathers in cache instead of materialising [N P (d+1), L] arrays."""
  full = num_points // PIXEL_BLOCK
  if full:
    carry = jax.lax.fori_loop(0, full, lambda b, c: fn(b * PIXEL_BLOCK, PIXEL_BLOCK, c), carry)
  return fn(full * PIXEL_BLOCK, num_points % PIXEL_BLOCK, carry) if num_points % PIXEL_BLOCK else carry


def grid_sizes(max_blocks):
  """Block counts of the grids apply_lattice chooses from: max_blocks / 8^k, k = 0, 1, 2 (distinct, ascending)."""
  return sorted({-(-max_blocks // 8**k) for k in range(3)})


def apply_lattice(lattice, values):
  """sum_j k(f_i, f_j) v_j approximated on the lattice, for values [N, P, L]: splat, blur, slice (densecrf scale).

  The grid is the smallest of grid_sizes that holds the used blocks (a switch: under vmap every size runs), so that
  allocating and clearing it follows the lattice's point count rather than its capacity."""
  d1 = lattice.offsets.shape[-1]
  max_blocks, block = lattice.neighbours.shape[2:]
  missing = lattice.num_blocks * block
  num_labels = values.shape[-1]
  weights = lattice.weights.astype(values.dtype).reshape(-1, d1)
  slice_weights = lattice.slice_weights.astype(values.dtype).reshape(-1, d1)
  offsets = lattice.offsets.reshape(-1, d1)
  flat = values.reshape(-1, num_labels)
  part = lambda x, start, size: jax.lax.dynamic_slice_in_dim(x, start, size)

  def apply(num_rows):
    def splat(start, size, grid):  # dropped vertices (the missing row) fall out
      rows = part(offsets, start, size)
      updates = part(weights, start, size)[..., None] * part(flat, start, size)[:, None]
      return grid.at[jnp.where(rows == missing, num_rows, rows).reshape(-1)].add(
          updates.reshape(-1, num_labels), mode="drop")

    grid = _pixel_blocks(splat, flat.shape[0], jnp.zeros((num_rows, num_labels), values.dtype))
    grid = _blur(grid, lattice.neighbours, lattice.num_blocks)

    def slice_(start, size, out):  # "clip": the rows are in range, and XLA:CPU gathers fastest without a bounds mask
      rows, w = part(offsets, start, size), part(slice_weights, start, size)
      sliced = sum(w[:, r, None] * jnp.take(grid, rows[:, r], axis=0, mode="clip") for r in range(d1))
      return jax.lax.dynamic_update_slice_in_dim(out, sliced, start, 0)

    return _pixel_blocks(slice_, flat.shape[0], jnp.zeros_like(flat)).reshape(values.shape)

  sizes = grid_sizes(max_blocks)
  branches = [lambda size=size: apply(size * block + 1) for size in sizes]  # + 1: the missing row
  return jax.lax.switch(jnp.sum(jnp.asarray(sizes) < lattice.num_blocks), branches)


def permutohedral_filter(features, values, capacity):
  """(filtered [N, P, L], overflow [N]): values [N, P, L] filtered with exp(-|f_i - f_j|^2 / 2) for features
  [N, P, d] on a lattice of at most `capacity` points, about a constant times the exact filter (densecrf's scale)."""
  lattice = build_lattice(features, capacity)
  return apply_lattice(lattice, values), lattice.overflow
