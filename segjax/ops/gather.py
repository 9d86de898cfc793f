"""Weighted row gather, the sparse core of RoIAlign and deformable convolution (bilinear taps)."""
import jax
import jax.numpy as jnp

from segjax.ops import platform


def _chunked(target, *arrays):
  """Arrays of equal leading size U as [count, ceil(U / count), ...] with zero padding: the
  fewest chunks of at most ~target rows, at least two so that the loop is not unrolled."""
  rows = arrays[0].shape[0]
  count = max(min(2, rows), -(-rows // target), 1)
  size = -(-rows // count)
  pad = lambda a: jnp.pad(a, [(0, count * size - rows)] + [(0, 0)] * (a.ndim - 1))
  return tuple(pad(a).reshape(count, size, *a.shape[1:]) for a in arrays)


def weighted_gather(table, index, weight):
  """out[u, c] = sum_k weight[u, k] * table[index[u, k], c].

  Args:
    table: [M, C].
    index: [U, K] int32 rows of ``table``, all in [0, M) (not checked).
    weight: [U, K].

  Returns:
    [U, C] in the promoted dtype of table and weight. Differentiable w.r.t. table (a
    scatter-add) and weight (a gather and a dot over C).

  Programs for CPU run `_chunked_weighted_gather`, other platforms one gather and a weighted sum
  (segjax.ops.platform.select).
  """
  table, index, weight = jnp.asarray(table), jnp.asarray(index), jnp.asarray(weight)
  return platform.select(table, index, weight, cpu=_chunked_weighted_gather, xla=_plain_weighted_gather)


def _plain_weighted_gather(table, index, weight):
  taps = table.at[index].get(mode="promise_in_bounds")  # [U, K, C]
  return jnp.einsum("uk,ukc->uc", weight, taps).astype(jnp.result_type(table, weight))


@jax.custom_vjp
def _chunked_weighted_gather(table, index, weight):
  """weighted_gather for XLA:CPU: the rows are processed in a loop over chunks; each chunk is one fused loop of K
  row gathers reading materialized indices and weights. Without the loop XLA fuses the index
  arithmetic into every gathered element and fuses the tap sum into a consuming dot or
  reduction, which materializes all K gathers (scripts/bench_roi_align.py times the RoIAlign built on it).
  """
  k = index.shape[1]

  def chunk_sum(_, chunk):
    i, w = chunk
    return None, sum(w[:, j, None] * table.at[i[:, j]].get(mode="promise_in_bounds")
                     for j in range(k))

  _, out = jax.lax.scan(chunk_sum, None, _chunked(4096, index, weight))
  return out.reshape(-1, table.shape[1])[:index.shape[0]]


def _weighted_gather_fwd(table, index, weight):
  return _chunked_weighted_gather(table, index, weight), (table, index, weight)


def _weighted_gather_bwd(res, g):
  """Per chunk of rows: scatter-add weight * g into the table gradient (all K taps in one
  scatter, a few MB of updates) and dweight[u, k] = <g[u], table[index[u, k]]>."""
  table, index, weight = res
  c = table.shape[1]

  def chunk_vjp(dtable, chunk):
    i, w, g = chunk
    updates = (w[:, :, None] * g[:, None, :]).astype(table.dtype).reshape(-1, c)
    dtable = dtable.at[i.reshape(-1)].add(updates, mode="promise_in_bounds")
    taps = table.at[i].get(mode="promise_in_bounds")  # [rows, K, C]
    return dtable, jnp.einsum("ukc,uc->uk", taps, g).astype(weight.dtype)

  dtable, dweight = jax.lax.scan(chunk_vjp, jnp.zeros_like(table),
                                 _chunked(256, index, weight, g))  # padding rows weigh 0
  return dtable, None, dweight.reshape(-1, weight.shape[1])[:weight.shape[0]]


_chunked_weighted_gather.defvjp(_weighted_gather_fwd, _weighted_gather_bwd)
