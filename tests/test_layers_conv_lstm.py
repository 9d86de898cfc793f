"""layers.ConvLSTM against the ConvLSTM equations (Shi et al. 2015, Eq. 3) written in float64 NumPy."""
import jax
import numpy as np
import pytest
from scipy import signal

from segjax.layers.conv_lstm import ConvLSTM


def _conv_same(x, kernel, bias):
  """x [H, W, C], kernel [kh, kw, C, F] (flax layout, cross-correlation), 'SAME' padding."""
  out = np.zeros(x.shape[:2] + (kernel.shape[-1],))
  for f in range(kernel.shape[-1]):
    for c in range(x.shape[-1]):
      out[..., f] += signal.correlate2d(x[..., c], kernel[..., c, f], mode="same")
  return out + bias


def _sigmoid(x):
  return 1 / (1 + np.exp(-x))


@pytest.mark.parametrize("global_context", [False, True])
def test_conv_lstm_equals_the_equations_over_steps(global_context):
  """With global_context, the first layer's gates also receive a linear map of the spatial max of the top layer's
  previous hidden state (zeros at the first step)."""
  x = np.random.default_rng(0).normal(size=(2, 5, 6, 3)).astype(np.float32)
  module = ConvLSTM(features=4, num_steps=3, num_layers=2, global_context=global_context)
  variables = module.init(jax.random.key(0), x)
  hidden = np.asarray(module.apply(variables, x), np.float64)
  assert hidden.shape == (2, 3, 5, 6, 4)
  params = jax.tree.map(lambda a: np.asarray(a, np.float64), variables["params"])
  stack = params["stack"]
  input_convs = [params["ih0"]] + [stack[f"ih{layer}"] for layer in range(1, 2)]
  for b in range(2):
    state = [(np.zeros((5, 6, 4)), np.zeros((5, 6, 4))) for _ in range(2)]
    for t in range(3):
      inputs = x[b].astype(np.float64)
      context = state[-1][1].max(axis=(0, 1)) @ stack["global"]["kernel"] if global_context else 0.0
      for layer in range(2):
        p, ih, (c, h) = stack[f"cell{layer}"], input_convs[layer], state[layer]
        gates = _conv_same(inputs, ih["kernel"], ih["bias"]) + _conv_same(h, p["hh"]["kernel"], p["hh"]["bias"])
        if layer == 0:
          gates = gates + context
        i, g, f, o = np.split(gates, 4, axis=-1)
        c = _sigmoid(f + 1) * c + _sigmoid(i) * np.tanh(g)
        h = _sigmoid(o) * np.tanh(c)
        state[layer], inputs = (c, h), h
      np.testing.assert_allclose(hidden[b, t], inputs, atol=1e-5)
  # The same parameters at every step: one cell per layer.
  assert sorted(k for k in stack if k.startswith("cell")) == ["cell0", "cell1"]
