"""Linear sum assignment (the Hungarian problem) in jax.numpy, for matching predictions to ground truth in jit.

The shortest augmenting path algorithm of Jonker & Volgenant (1987) in the rectangular form of Crouse (2016),
which is what `scipy.optimize.linear_sum_assignment` runs: rows are added one at a time, each by a
Dijkstra search over reduced costs c[i, j] - u[i] - v[j] for the cheapest path to a free column, and the dual
variables u, v are updated so that reduced costs stay non-negative. Every loop is a `lax` loop over static
shapes, so it compiles once per matrix shape, runs under `vmap` and on TPU (no host callback).

Infinite costs forbid a pair. When no complete assignment of min(R, C) pairs avoids them, scipy raises; here
`feasible` is False and the pairs are those the search had made before it found no path.
"""
import jax.numpy as jnp
from jax import lax


def _augment_row(cost, cur_row, state):
  """Finds the shortest augmenting path from `cur_row` to a free column and augments along it."""
  u, v, col4row, row4col, feasible = state
  num_rows, num_cols = cost.shape
  cur_row = jnp.asarray(cur_row, jnp.int32)  # indices stay int32 (argmax and the loop index are int64 under x64)

  def search_cond(carry):
    sink, *_, min_val, _ = carry
    return (sink < 0) & jnp.isfinite(min_val)

  def search_body(carry):
    sink, i, path, spc, sr, sc, min_val, _ = carry
    sr = sr.at[i].set(True)
    reduced = min_val + cost[i] - u[i] - v
    better = ~sc & (reduced < spc)
    path = jnp.where(better, i, path)
    spc = jnp.where(better, reduced, spc)
    # The cheapest column not yet in the tree; among equals, a free one ends the search soonest (as scipy).
    candidates = jnp.where(sc, jnp.inf, spc)
    lowest = jnp.min(candidates)
    at_lowest = ~sc & (candidates == lowest)
    free_at_lowest = at_lowest & (row4col < 0)
    j = jnp.where(jnp.any(free_at_lowest), jnp.argmax(free_at_lowest), jnp.argmax(at_lowest)).astype(jnp.int32)
    found = jnp.isfinite(lowest)
    sink = jnp.where(found & (row4col[j] < 0), j, jnp.int32(-1))
    i = jnp.where(found & (row4col[j] >= 0), row4col[j], i)
    sc = sc.at[j].set(sc[j] | found)
    return sink, i, path, spc, sr, sc, lowest, found

  init = (jnp.int32(-1), cur_row, jnp.full((num_cols,), -1, jnp.int32), jnp.full((num_cols,), jnp.inf, cost.dtype),
          jnp.zeros((num_rows,), bool), jnp.zeros((num_cols,), bool), jnp.zeros((), cost.dtype), jnp.bool_(True))
  sink, _, path, spc, sr, sc, min_val, found = lax.while_loop(search_cond, search_body, init)
  found = found & (sink >= 0)

  # Dual update (Crouse 2016, Algorithm 1's lines after the search).
  others = sr & (jnp.arange(num_rows) != cur_row)
  spc_of_row = spc[jnp.clip(col4row, 0, num_cols - 1)]
  new_u = jnp.where(others, u + min_val - spc_of_row, u).at[cur_row].add(min_val)
  new_v = jnp.where(sc, v - (min_val - spc), v)

  def augment_cond(carry):
    return carry[0]

  def augment_body(carry):
    _, j, col4row, row4col = carry
    i = path[j]
    row4col = row4col.at[j].set(i)
    previous = col4row[i]
    col4row = col4row.at[i].set(j)
    return i != cur_row, previous, col4row, row4col

  _, _, new_col4row, new_row4col = lax.while_loop(augment_cond, augment_body,
                                                  (found, jnp.maximum(sink, 0), col4row, row4col))
  keep = lambda new, old: jnp.where(found, new, old)
  return (keep(new_u, u), keep(new_v, v), keep(new_col4row, col4row), keep(new_row4col, row4col),
          feasible & found)


def _solve_tall_free(cost):
  """cost [R, C] with R <= C: the column of every row."""
  num_rows, num_cols = cost.shape
  state = (jnp.zeros((num_rows,), cost.dtype), jnp.zeros((num_cols,), cost.dtype),
           jnp.full((num_rows,), -1, jnp.int32), jnp.full((num_cols,), -1, jnp.int32), jnp.bool_(True))
  _, _, col4row, _, feasible = lax.fori_loop(0, num_rows, lambda r, s: _augment_row(cost, r, s), state)
  return col4row, feasible


def linear_sum_assignment(cost, maximize=False):
  """The assignment of least total cost, as `scipy.optimize.linear_sum_assignment`.

  Args:
    cost: [R, C] float costs; +inf (or -inf with maximize) forbids a pair. NaN is not allowed.
    maximize: find the assignment of greatest total instead.

  Returns:
    (rows, cols, feasible): int32[min(R, C)] each, rows in increasing order, so that
    cost[rows, cols].sum() is minimal; feasible is a bool scalar, False when no complete assignment avoids
    infinite costs (scipy raises ValueError there; the pairs are then not meaningful).
  """
  cost = jnp.asarray(cost)
  if cost.ndim != 2:
    raise ValueError(f"linear_sum_assignment: cost must have shape [R, C], got {cost.shape}")
  if not jnp.issubdtype(cost.dtype, jnp.floating):
    cost = cost.astype(jnp.float32)
  if maximize:
    cost = -cost
  num_rows, num_cols = cost.shape
  if min(num_rows, num_cols) == 0:
    empty = jnp.zeros((0,), jnp.int32)
    return empty, empty, jnp.bool_(True)
  transposed = num_cols < num_rows
  if transposed:
    cost = cost.T
  col4row, feasible = _solve_tall_free(cost)
  feasible = feasible & ~jnp.any(jnp.isneginf(cost)) & ~jnp.any(jnp.isnan(cost))
  rows = jnp.arange(cost.shape[0], dtype=jnp.int32)
  if not transposed:
    return rows, col4row, feasible
  order = jnp.argsort(col4row)
  return col4row[order].astype(jnp.int32), rows[order], feasible


def assignment_cost(cost, rows, cols):
  """Total cost of the pairs (rows, cols)."""
  return jnp.sum(jnp.asarray(cost)[rows, cols])

