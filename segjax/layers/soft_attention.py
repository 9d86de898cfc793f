"""An LSTM that reads a feature map through soft attention over its positions: the recurrence of the box
network of Recurrent Attention (Ren & Zemel, CVPR 2017, Eqs. 3-10).

From a zero state and uniform weights alpha_1 = 1 / (H' W'), each glimpse tau = 1..beta
  a_tau = sum_{h, w} alpha_tau[h, w] u[h, w]          (the attended feature vector)
  z_tau = LSTM(z_{tau-1}, a_tau)
  alpha_{tau+1} = softmax(W_g z_tau + b_g)             (over the H' W' positions)
and z_beta is what the box is regressed from.

With `content`, the logits also read each position's feature, the additive attention of Bahdanau et al. (2015) that
Xu et al. ("Show, Attend and Tell", ICML 2015, Eq. 4) use over image positions:
  alpha_tau = softmax(W_g z_{tau-1} + b_g + e_tau),  e_tau[p] = v^T tanh(U u[p] + b_U + W z_{tau-1}),  z_0 = 0,
so the first glimpse already weighs the positions by their content instead of reading the map's mean.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp


class SoftAttentionLSTM(nn.Module):
  """u [B, H', W', L] -> (z_beta [B, features], {"weights": [B, beta, H' W'], "attended": [B, beta, L],
  "hidden": [B, beta, features]}): the attention weights each glimpse read with, what it read, its LSTM output."""
  features: int
  num_glimpses: int
  content: bool = False
  content_features: int = 32  # the width of U and W

  @nn.compact
  def __call__(self, u):
    b, h, w, l = u.shape
    u = u.reshape(b, h * w, l)
    cell = nn.LSTMCell(self.features, name="lstm")
    attend = nn.Dense(h * w, name="glimpse")  # W_g, b_g: one logit per position
    zeros = jnp.zeros((b, self.features), u.dtype)
    carry = (zeros, zeros)
    if self.content:
      key = nn.Dense(self.content_features, name="content_u")(u)  # U u_p, once per map
      query = nn.Dense(self.content_features, use_bias=False, name="content_z")
      energy = nn.Dense(1, use_bias=False, name="content_v")
      def logits(z):
        return attend(z) + energy(jnp.tanh(key + query(z)[:, None]))[..., 0]
      alpha = jax.nn.softmax(logits(zeros), axis=-1)
    else:
      logits = attend
      alpha = jnp.full((b, h * w), 1.0 / (h * w), u.dtype)
    weights, attended, hidden = [], [], []
    for _ in range(self.num_glimpses):
      a = jnp.einsum("bp,bpl->bl", alpha, u)
      carry, z = cell(carry, a)
      weights.append(alpha)
      attended.append(a)
      hidden.append(z)
      alpha = jax.nn.softmax(logits(z), axis=-1)
    stack = lambda xs: jnp.stack(xs, axis=1)
    return z, {"weights": stack(weights), "attended": stack(attended), "hidden": stack(hidden)}
