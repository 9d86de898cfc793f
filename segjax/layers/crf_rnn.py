"""CRF-as-RNN (Zheng et al. 2015): mean-field inference in a dense CRF unrolled as a recurrent layer, trained end to
end with the CNN that gives its unaries.

One iteration (Sec. 4, Fig. 1; the authors' MeanfieldIteration): Q = softmax(logits); message passing with the
spatial and bilateral Gaussian kernels, each normalised by its degree (K Q / K 1); weighting by the trainable
[L, L] kernel weights W_s, W_b; the trainable compatibility transform mu; logits = unary - mu (W_s m_s + W_b m_b).
The initial logits are the unaries; the layer returns the last logits. The weights start diagonal (3 and 5, the
authors' spatial_filter_weight and bilateral_filter_weight) and mu as their POTTS mode, -I, which under the softmax
equals the Potts model [l != l'] of Krähenbühl & Koltun. The kernel bandwidths are fixed (theta_alpha 160,
theta_beta 3, theta_gamma 3, positions in pixels, colours in 0..255); 5 iterations in training, 10 at test.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax.ops.crf import crf_messages


def _scaled_identity(scale):
  return lambda key, shape, dtype=jnp.float32: scale * jnp.eye(shape[0], dtype=dtype)


class CRFasRNN(nn.Module):
  """(unary logits [N,H,W,L], image [N,H,W,3] in 0..255, train) -> logits [N,H,W,L] (NaN for an image whose
  lattice overflows, as dense_crf)."""
  theta_alpha: float = 160.0
  theta_beta: float = 3.0
  theta_gamma: float = 3.0
  w_spatial: float = 3.0
  w_bilateral: float = 5.0
  train_iterations: int = 5
  test_iterations: int = 10
  filter: str = "lattice"
  lattice_capacity: int | None = None

  @nn.compact
  def __call__(self, unary_logits, image, train: bool = False):
    n, h, w, num_labels = unary_logits.shape
    if image.shape != (n, h, w, 3):
      raise ValueError(f"image must be [N, H, W, 3] = {(n, h, w, 3)}; got {image.shape}")
    shape = (num_labels, num_labels)
    w_spatial = self.param("spatial_ker_weights", _scaled_identity(self.w_spatial), shape)
    w_bilateral = self.param("bilateral_ker_weights", _scaled_identity(self.w_bilateral), shape)
    compatibility = self.param("compatibility", _scaled_identity(-1.0), shape)
    dtype = jnp.result_type(unary_logits, jnp.float32)
    bilateral, spatial, overflow = crf_messages(
        jax.lax.stop_gradient(image.astype(dtype)), theta_alpha=self.theta_alpha, theta_beta=self.theta_beta,
        theta_gamma=self.theta_gamma, normalization="after", filter=self.filter,
        lattice_capacity=self.lattice_capacity)
    unary = unary_logits.astype(dtype).reshape(n, h * w, num_labels)

    def iteration(_, logits):
      q = jax.nn.softmax(logits, -1)
      message = spatial(q) @ w_spatial.T + bilateral(q) @ w_bilateral.T
      return unary - message @ compatibility.T

    iterations = self.train_iterations if train else self.test_iterations
    logits = jax.lax.fori_loop(0, iterations, iteration, unary)
    logits = jnp.where(overflow[:, None, None], jnp.nan, logits)
    return logits.reshape(n, h, w, num_labels)
