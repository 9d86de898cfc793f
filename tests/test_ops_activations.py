"""segjax.ops.activations.relu against jax.nn.relu (values and gradients), and what a training step keeps."""
import jax
import jax.numpy as jnp
import numpy as np

from segjax.ops.activations import relu


def test_relu_values_and_gradients_are_jax_nn_relu():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 33)).astype(np.float32)).at[0, :5].set(0.0)
  g = jnp.asarray(np.random.default_rng(1).normal(size=(4, 33)).astype(np.float32))
  np.testing.assert_array_equal(relu(x), jax.nn.relu(x))
  np.testing.assert_array_equal(jax.vjp(relu, x)[1](g)[0], jax.vjp(jax.nn.relu, x)[1](g)[0])
  np.testing.assert_array_equal(jax.grad(lambda x: relu(x).sum())(jnp.zeros(3)), np.zeros(3))  # 0 at 0, as jax
  second = lambda f: jax.grad(lambda x: jax.grad(lambda x: (f(x) ** 2).sum())(x).sum())(x)
  np.testing.assert_allclose(second(relu), second(jax.nn.relu), rtol=1e-6)


def _temporaries(activation):
  """XLA's temporary bytes of the gradient of three residual blocks (1x1 convolution as a dot, a frozen-BatchNorm
  affine map, the shortcut sum, `activation`), 2 x 64 x 64 pixels of 64 channels."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2 * 64 * 64, 64)).astype(np.float32))
  weights = [jnp.asarray(rng.normal(size=(64, 64)).astype(np.float32) / 8) for _ in range(3)]
  scale, shift = jnp.full((64,), 0.9), jnp.full((64,), 0.1)

  def loss(weights, x):
    for w in weights:
      x = activation((x @ w) * scale + shift + x)
    return jnp.sum(x ** 2)

  return jax.jit(jax.grad(loss)).lower(weights, x).compile().memory_analysis().temp_size_in_bytes


def test_relu_gradient_keeps_the_activations_not_the_pre_activations():
  # jax.nn.relu: each block's dot output and its activation are kept (or the pre-activations recomputed from them);
  # relu: the activations only, which the next block's weight gradient reads anyway.
  size = 2 * 64 * 64 * 64 * 4
  ours, theirs = _temporaries(relu), _temporaries(jax.nn.relu)
  assert ours < theirs - size, (ours / size, theirs / size)  # in units of one activation
