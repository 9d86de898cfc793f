"""segjax.ops.linear_sum_assignment against scipy.optimize.linear_sum_assignment."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize

from segjax.ops.assignment import linear_sum_assignment


def _random_costs(rng, count):
  """Square and rectangular matrices, some with ties (small integers) and forbidden (+inf) pairs."""
  shapes = [(1, 5), (3, 3), (4, 7), (7, 4), (6, 1), (8, 8)]  # few shapes: one compilation each
  for k in range(count):
    rows, cols = shapes[k % len(shapes)]
    if k % 3 == 0:
      cost = rng.integers(0, 4, size=(rows, cols)).astype(np.float64)  # many ties
    else:
      cost = rng.normal(size=(rows, cols))
    if k % 4 == 1:
      cost[rng.random((rows, cols)) < 0.3] = np.inf
    yield cost


def test_optimal_cost_equals_scipy_on_random_matrices():
  rng = np.random.default_rng(0)
  solve = jax.jit(linear_sum_assignment)
  checked = infeasible = 0
  for cost in _random_costs(rng, 200):
    rows, cols, feasible = jax.device_get(solve(jnp.asarray(cost, jnp.float32)))
    try:
      ref_rows, ref_cols = optimize.linear_sum_assignment(cost)
    except ValueError:  # scipy: "cost matrix is infeasible"
      assert not feasible, cost
      infeasible += 1
      continue
    assert feasible, cost
    assert len(rows) == min(cost.shape)
    np.testing.assert_array_equal(rows, np.sort(rows))
    assert len(set(cols.tolist())) == len(cols), "a column is used twice"
    np.testing.assert_allclose(cost[rows, cols].sum(), cost[ref_rows, ref_cols].sum(), rtol=1e-5, atol=1e-5)
    checked += 1
  assert checked >= 150 and infeasible >= 1


def test_maximize_and_integer_costs():
  cost = np.array([[4, 1, 3], [2, 0, 5], [3, 2, 2]])
  for maximize in (False, True):
    rows, cols, feasible = linear_sum_assignment(cost, maximize=maximize)
    ref_rows, ref_cols = optimize.linear_sum_assignment(cost, maximize=maximize)
    assert bool(feasible)
    assert cost[np.asarray(rows), np.asarray(cols)].sum() == cost[ref_rows, ref_cols].sum()


def test_empty_and_bad_shapes():
  rows, cols, feasible = linear_sum_assignment(np.zeros((0, 3)))
  assert rows.shape == cols.shape == (0,) and bool(feasible)
  with pytest.raises(ValueError, match=r"shape \[R, C\]"):
    linear_sum_assignment(np.zeros((2, 3, 4)))


def test_vmap_compiles_once_per_shape():
  rng = np.random.default_rng(1)
  traces = []

  def solve(cost):
    traces.append(cost.shape)
    return linear_sum_assignment(cost)

  batched = jax.jit(jax.vmap(solve))
  for _ in range(3):
    cost = rng.normal(size=(5, 4, 7)).astype(np.float32)
    rows, cols, feasible = jax.device_get(batched(cost))
    for b in range(5):
      ref_rows, ref_cols = optimize.linear_sum_assignment(cost[b])
      assert feasible[b]
      np.testing.assert_allclose(cost[b][rows[b], cols[b]].sum(), cost[b][ref_rows, ref_cols].sum(), rtol=1e-5)
  assert len(traces) == 1


def test_no_host_callback_in_tpu_lowering():
  lowered = jax.jit(linear_sum_assignment).trace(jnp.zeros((4, 6))).lower(lowering_platforms=("tpu",))
  assert "callback" not in lowered.as_text()


def test_float64_costs_under_x64_equal_scipy():
  """Under jax_enable_x64 (float64 references, e.g. gradient checks of models that match by it) the search's
  indices stay int32 and the assignment is SciPy's."""
  rng = np.random.default_rng(5)
  with jax.enable_x64(True):
    for shape in ((4, 6), (5, 5), (6, 3)):
      cost = rng.random(shape)
      rows, cols, feasible = linear_sum_assignment(jnp.asarray(cost, jnp.float64))
      expected = optimize.linear_sum_assignment(cost)
      assert bool(feasible) and rows.dtype == cols.dtype == jnp.int32
      np.testing.assert_array_equal(rows, expected[0])
      np.testing.assert_array_equal(cols, expected[1])
