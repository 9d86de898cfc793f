"""A grid CRF: 4-connected Potts model over labels, and the inference algorithms the decks compare.

  P(x) ∝ exp(-E(x)),   E(x) = sum_i U_i(x_i) + w sum_{(i, j) 4-neighbours} [x_i != x_j]

with unary costs U [H, W, L] and Potts weight w >= 0. Each algorithm works on the whole grid at once:
  * `grid_mean_field`: naive mean field, Q_i(l) ∝ exp(-U_i(l) - w sum_{j in N(i)} (1 - Q_j(l))), all pixels
    updated in parallel (Krähenbühl & Koltun's scheme on a sparse graph);
  * `grid_loopy_bp`: loopy belief propagation with flooding schedule in the log domain, sum-product (marginals)
    or max-product (MAP labels); exact on a chain (a 1 x W grid);
  * `grid_gibbs`: Gibbs sampling (Geman & Geman 1984) with the checkerboard schedule, where the pixels of one
    colour are conditionally independent given the other; marginals are the sample frequencies after burn-in.
"""
import jax
import jax.numpy as jnp

# (dy, dx) of the neighbour a message travels to; OPPOSITE[d] is the direction back.
DIRECTIONS = ((-1, 0), (1, 0), (0, -1), (0, 1))
OPPOSITE = (1, 0, 3, 2)


def _from_neighbour(x, dy, dx, fill=0.0):
  """out[y, x] = x[y + dy, x + dx] for [H, W, ...] arrays (fill where that neighbour does not exist)."""
  h, w = x.shape[:2]
  pad = [(1, 1), (1, 1)] + [(0, 0)] * (x.ndim - 2)
  padded = jnp.pad(x, pad, constant_values=fill)
  return padded[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]


def _neighbour_count(shape):
  ones = jnp.ones(shape[:2] + (1,))
  return sum(_from_neighbour(ones, dy, dx) for dy, dx in DIRECTIONS)


def grid_mean_field(unary, weight, num_iterations=10):
  """Approximate marginals Q [H, W, L]."""
  unary = jnp.asarray(unary, jnp.float32)
  degree = _neighbour_count(unary.shape)

  def step(q, _):
    agree = sum(_from_neighbour(q, dy, dx) for dy, dx in DIRECTIONS)
    return jax.nn.softmax(-unary - weight * (degree - agree), axis=-1), None

  q, _ = jax.lax.scan(step, jax.nn.softmax(-unary, axis=-1), None, length=num_iterations)
  return q


def grid_loopy_bp(unary, weight, num_iterations=20, mode="sum"):
  """Beliefs [H, W, L] (normalised marginals for "sum", max-marginals for "max": argmax gives the MAP labels).

  messages[d][y, x] is the log message pixel (y, x) sends to its neighbour in direction d.
  """
  if mode not in ("sum", "max"):
    raise ValueError(f"grid_loopy_bp: mode must be 'sum' or 'max'; got {mode!r}")
  unary = jnp.asarray(unary, jnp.float32)
  num_labels = unary.shape[-1]
  pairwise = -weight * (1.0 - jnp.eye(num_labels))  # log potential of (x_i, x_j)
  reduce = jax.nn.logsumexp if mode == "sum" else jnp.max

  def incoming(messages):
    """in[d][y, x]: the log message pixel (y, x) receives from its neighbour in direction d (0 at borders)."""
    return [_from_neighbour(messages[OPPOSITE[d]], *DIRECTIONS[d]) for d in range(4)]

  def step(messages, _):
    received = incoming(messages)
    total = -unary + sum(received)
    new = []
    for d in range(4):
      h = total - received[d]  # leave out what the receiver sent
      m = reduce(h[..., :, None] + pairwise, axis=-2)
      new.append(m - jax.nn.logsumexp(m, axis=-1, keepdims=True))
    return tuple(new), None

  zeros = jnp.zeros_like(unary)
  messages, _ = jax.lax.scan(step, (zeros,) * 4, None, length=num_iterations)
  beliefs = -unary + sum(incoming(messages))
  return jax.nn.softmax(beliefs, axis=-1)


def grid_gibbs(key, unary, weight, num_sweeps=1000, burn_in=100):
  """(marginals [H, W, L] as sample frequencies over the sweeps after burn-in, the last sample [H, W])."""
  unary = jnp.asarray(unary, jnp.float32)
  h, w, num_labels = unary.shape
  colour = (jnp.arange(h)[:, None] + jnp.arange(w)[None, :]) % 2
  degree = _neighbour_count(unary.shape)

  def half_sweep(labels, key, parity):
    one_hot = jax.nn.one_hot(labels, num_labels)
    agree = sum(_from_neighbour(one_hot, dy, dx) for dy, dx in DIRECTIONS)
    logits = -unary - weight * (degree - agree)
    drawn = jax.random.categorical(key, logits, axis=-1)
    return jnp.where(colour == parity, drawn, labels)

  def sweep(carry, key):
    labels, counts, index = carry
    k0, k1 = jax.random.split(key)
    labels = half_sweep(half_sweep(labels, k0, 0), k1, 1)
    counts += jnp.where(index >= burn_in, 1.0, 0.0) * jax.nn.one_hot(labels, num_labels)
    return (labels, counts, index + 1), None

  init_key, key = jax.random.split(key)
  labels = jax.random.categorical(init_key, -unary, axis=-1)
  (labels, counts, _), _ = jax.lax.scan(sweep, (labels, jnp.zeros_like(unary), 0),
                                        jax.random.split(key, num_sweeps))
  return counts / max(num_sweeps - burn_in, 1), labels
