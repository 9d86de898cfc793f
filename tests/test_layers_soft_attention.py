"""The box network's soft attention (Ren & Zemel, CVPR 2017, Eqs. 3-10): weights that are a softmax over the positions
of the map (uniform at the first glimpse), and attended features that are the weighted sums, both against NumPy."""
import jax
import numpy as np

from segjax.layers.soft_attention import SoftAttentionLSTM


def test_weights_sum_to_one_and_the_attended_feature_is_their_weighted_sum():
  rng = np.random.default_rng(0)
  u = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
  module = SoftAttentionLSTM(features=6, num_glimpses=3)
  variables = module.init(jax.random.key(0), u)
  last, aux = module.apply(variables, u)
  weights, attended, hidden = (np.asarray(aux[k], np.float64) for k in ("weights", "attended", "hidden"))
  assert weights.shape == (2, 3, 12) and attended.shape == (2, 3, 5) and hidden.shape == (2, 3, 6)
  np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-6)
  assert (weights > 0).all()
  np.testing.assert_allclose(weights[:, 0], 1 / 12, rtol=1e-6)  # alpha_1: uniform
  flat = u.reshape(2, 12, 5).astype(np.float64)
  np.testing.assert_allclose(attended, np.einsum("btp,bpl->btl", weights, flat), rtol=1e-5, atol=1e-6)
  # alpha_{tau+1} = softmax(W_g z_tau + b_g) over the 12 positions.
  dense = variables["params"]["glimpse"]
  logits = hidden[:, :-1] @ np.asarray(dense["kernel"], np.float64) + np.asarray(dense["bias"], np.float64)
  softmax = np.exp(logits - logits.max(-1, keepdims=True))
  softmax /= softmax.sum(-1, keepdims=True)
  np.testing.assert_allclose(weights[:, 1:], softmax, rtol=1e-5, atol=1e-7)
  # The weights depend on the map: a glimpse after the first is not uniform.
  assert np.abs(weights[:, 1:] - 1 / 12).max() > 1e-4
  np.testing.assert_allclose(np.asarray(last), hidden[:, -1], rtol=1e-6)


def test_content_attention_equals_the_additive_attention_in_float64():
  rng = np.random.default_rng(1)
  u = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
  module = SoftAttentionLSTM(features=6, num_glimpses=3, content=True, content_features=7)
  variables = module.init(jax.random.key(0), u)
  _, aux = module.apply(variables, u)
  weights, hidden = (np.asarray(aux[k], np.float64) for k in ("weights", "hidden"))
  p = {k: {n: np.asarray(a, np.float64) for n, a in v.items()} for k, v in variables["params"].items()
       if k != "lstm"}
  flat = u.reshape(2, 12, 5).astype(np.float64)
  # alpha_tau = softmax(W_g z + b_g + v^T tanh(U u_p + b_U + W z)) with z = 0 before the first glimpse.
  states = np.concatenate([np.zeros((2, 1, 6)), hidden[:, :-1]], axis=1)  # [B, beta, 6]
  positional = states @ p["glimpse"]["kernel"] + p["glimpse"]["bias"]  # [B, beta, 12]
  key = flat @ p["content_u"]["kernel"] + p["content_u"]["bias"]  # [B, 12, 7]
  query = states @ p["content_z"]["kernel"]  # [B, beta, 7]
  energy = np.tanh(key[:, None] + query[:, :, None]) @ p["content_v"]["kernel"][:, 0]  # [B, beta, 12]
  logits = positional + energy
  softmax = np.exp(logits - logits.max(-1, keepdims=True))
  softmax /= softmax.sum(-1, keepdims=True)
  np.testing.assert_allclose(weights, softmax, rtol=1e-5, atol=1e-7)
  assert np.abs(weights[:, 0] - 1 / 12).max() > 1e-3  # the first glimpse is not uniform
