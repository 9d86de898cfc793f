"""CRF-as-RNN layer against a float64 NumPy mean field with explicit dense kernels (trained weights and
compatibility, 5 iterations in training and 10 at test), its Potts initialisation against dense_crf, the lattice
against the exact filter, gradients by finite differences, one compile."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segjax.layers.crf_rnn import CRFasRNN
from segjax.ops.crf import dense_crf

THETAS = dict(theta_alpha=6.0, theta_beta=40.0, theta_gamma=2.0)  # bandwidths for images of a few dozen pixels


def _reference(unary, image, w_spatial, w_bilateral, compatibility, iterations, theta_alpha, theta_beta,
               theta_gamma):
  """The authors' iteration in float64: logits = unary - mu (W_s K_s Q / K_s 1 + W_b K_b Q / K_b 1)."""
  h, w, num_labels = unary.shape
  ys, xs = np.mgrid[:h, :w]
  position = np.stack([xs, ys], -1).reshape(-1, 2).astype(np.float64)
  colour = image.reshape(-1, 3).astype(np.float64)
  d_position = ((position[:, None] - position[None]) ** 2).sum(-1)
  d_colour = ((colour[:, None] - colour[None]) ** 2).sum(-1)
  k_bilateral = np.exp(-d_position / (2 * theta_alpha**2) - d_colour / (2 * theta_beta**2))
  k_spatial = np.exp(-d_position / (2 * theta_gamma**2))
  u = unary.reshape(-1, num_labels).astype(np.float64)
  logits = u
  for _ in range(iterations):
    q = np.exp(logits - logits.max(-1, keepdims=True))
    q /= q.sum(-1, keepdims=True)
    m_spatial = k_spatial @ q / k_spatial.sum(1, keepdims=True)
    m_bilateral = k_bilateral @ q / k_bilateral.sum(1, keepdims=True)
    logits = u - (m_spatial @ w_spatial.T + m_bilateral @ w_bilateral.T) @ compatibility.T
  return logits.reshape(h, w, num_labels)


def _inputs(rng, n=2, h=9, w=11, num_labels=4):
  image = rng.uniform(0, 255, (n, h, w, 3)).astype(np.float32)
  unary = rng.normal(0, 1.5, (n, h, w, num_labels)).astype(np.float32)
  return unary, image


def _trained_params(rng, num_labels):
  """Weights and compatibility away from their initialisation, as after training."""
  eye = np.eye(num_labels)
  return {"spatial_ker_weights": 3 * eye + rng.normal(0, 0.5, (num_labels, num_labels)),
          "bilateral_ker_weights": 5 * eye + rng.normal(0, 0.5, (num_labels, num_labels)),
          "compatibility": -eye + rng.normal(0, 0.3, (num_labels, num_labels))}


@pytest.mark.parametrize("train, iterations", [(True, 5), (False, 10)])
def test_equals_float64_reference(train, iterations):
  rng = np.random.default_rng(0)
  unary, image = _inputs(rng)
  layer = CRFasRNN(filter="exact", **THETAS)
  params = _trained_params(rng, unary.shape[-1])
  logits = jax.jit(lambda p, u, i: layer.apply({"params": p}, u, i, train=train))(
      jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params), unary, image)
  for b in range(2):
    expected = _reference(unary[b], image[b], params["spatial_ker_weights"], params["bilateral_ker_weights"],
                          params["compatibility"], iterations, **THETAS)
    np.testing.assert_allclose(logits[b], expected, rtol=1e-4, atol=1e-4)


def test_initialisation_is_potts_mean_field():
  """Diagonal weights 3 and 5 and mu = -I: the softmax of the output is dense_crf's Q with normalisation "after"."""
  rng = np.random.default_rng(1)
  unary, image = _inputs(rng)
  layer = CRFasRNN(filter="exact", **THETAS)
  variables = layer.init(jax.random.key(0), unary, image)
  params = variables["params"]
  np.testing.assert_array_equal(params["spatial_ker_weights"], 3 * np.eye(4))
  np.testing.assert_array_equal(params["compatibility"], -np.eye(4))
  q = jax.nn.softmax(layer.apply(variables, unary, image), -1)
  expected = dense_crf(unary, image, num_iterations=10, w_bilateral=5.0, w_spatial=3.0, normalization="after",
                       filter="exact", **THETAS)
  np.testing.assert_allclose(q, expected, atol=1e-5)


def test_lattice_agrees_with_exact():
  """The authors' bandwidths on a 40 x 50 scene of flat regions: the lattice's labels agree on >= 97% of pixels."""
  rng = np.random.default_rng(2)
  ys, xs = np.mgrid[:40, :50]
  region = (xs > 20 + 5 * np.sin(ys / 6)).astype(int) + 2 * (ys > 25)
  image = np.clip(rng.uniform(30, 220, (4, 3))[region] + rng.normal(0, 4, (40, 50, 3)), 0, 255)[None]
  unary = (np.eye(4)[region] * 0.6 + rng.normal(0, 1.0, (40, 50, 4)))[None]
  args = (jnp.asarray(unary, jnp.float32), jnp.asarray(image, jnp.float32))
  lattice, exact = CRFasRNN(), CRFasRNN(filter="exact")
  variables = lattice.init(jax.random.key(0), *args)
  labels = [np.asarray(m.apply(variables, *args).argmax(-1)) for m in (lattice, exact)]
  assert (labels[1] != unary.argmax(-1)).mean() > 0.1  # the CRF changes many labels: the comparison means something
  assert (labels[0] == labels[1]).mean() >= 0.97


def test_gradients_match_finite_differences():
  """float64 central differences along random directions in the unaries and in all three parameters, through the
  5 training iterations on the lattice."""
  rng = np.random.default_rng(3)
  with jax.enable_x64(True):
    unary, image = (jnp.asarray(x, jnp.float64) for x in _inputs(rng, n=1, h=6, w=7, num_labels=3))
    params = jax.tree.map(jnp.asarray, _trained_params(rng, 3))
    target = jnp.asarray(rng.uniform(size=unary.shape))
    layer = CRFasRNN(theta_alpha=4.0, theta_beta=60.0, theta_gamma=2.0)
    f = jax.jit(jax.value_and_grad(
        lambda p, u: jnp.sum(jax.nn.softmax(layer.apply({"params": p}, u, image, train=True), -1) * target),
        argnums=(0, 1)))
    directions = (jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape)), params),
                  jnp.asarray(rng.normal(size=unary.shape)))
    eps = 1e-5
    shifted = lambda s: f(*jax.tree.map(lambda x, d: x + s * eps * d, (params, unary), directions))[0]
    numeric = (shifted(1) - shifted(-1)) / (2 * eps)
    analytic = sum(jnp.sum(g * d) for g, d in zip(jax.tree.leaves(f(params, unary)[1]), jax.tree.leaves(directions)))
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6)


def _regions(rng, n=2, h=24, w=30, num_labels=4):
  """Images of four flat colours (pixel noise 4): uniform noise would hold more lattice points than the capacity
  at theta_beta = 3, and the layer would (rightly) flag it."""
  ys, xs = np.mgrid[:h, :w]
  region = (xs > w // 2).astype(int) + 2 * (ys > h // 2)
  image = rng.uniform(30, 220, (n, 4, 3))[:, region] + rng.normal(0, 4, (n, h, w, 3))
  return rng.normal(0, 1.5, (n, h, w, num_labels)).astype(np.float32), np.clip(image, 0, 255).astype(np.float32)


def test_one_compile_for_new_images():
  rng = np.random.default_rng(4)
  layer = CRFasRNN()
  traces = []

  @jax.jit
  def run(variables, unary, image):
    traces.append(1)
    return layer.apply(variables, unary, image)

  variables = layer.init(jax.random.key(0), *_regions(rng))
  for _ in range(2):
    assert np.isfinite(np.asarray(run(variables, *_regions(rng)))).all()
  assert len(traces) == 1
