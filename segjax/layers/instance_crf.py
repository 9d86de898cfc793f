"""The instance CRF of the Dynamically Instantiated Network (Arnab & Torr, CVPR 2017) as a trainable layer: the
unary terms and mean field of `segjax.ops.instance_crf`, with their weights as parameters, unrolled as CRF-as-RNN
(segjax/layers/crf_rnn.py) so that they train end to end.

Parameters: log_w_box, log_w_global, log_w_shape (the unary weights w_B, w_G, w_S, kept positive as exponentials;
the logarithm's argument must stay positive), w_bilateral and w_spatial (the Potts kernel weights, scalars: the
instance labels are interchangeable, so no label-pair matrix as CRF-as-RNN's), and shape_templates [K, T, M, M],
the logits of T shape templates per thing class (sigmoid: the template), initialised to centred ellipses of
T sizes.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax.ops import instance_crf


def _ellipse_logits(key, shape, dtype=jnp.float32):
  """[K, T, M, M]: logits 4 (1 - r^2) of centred ellipses, r the distance to the centre in units of the template's
  half side times a radius from 0.7 to 1.0 over the T templates."""
  del key
  num_classes, num_templates, m, _ = shape
  u = (jnp.arange(m, dtype=dtype) + 0.5) / m * 2 - 1
  r2 = u[:, None] ** 2 + u[None, :] ** 2
  radii = jnp.linspace(1.0, 0.7, num_templates, dtype=dtype) if num_templates > 1 else jnp.ones((1,), dtype)
  logits = 4.0 * (1.0 - r2[None] / radii[:, None, None] ** 2)
  return jnp.broadcast_to(logits[None], (num_classes, num_templates, m, m))


class InstanceCRF(nn.Module):
  """(semantic probabilities q [N, H, W, K + 1], image [N, H, W, 3] in 0..255, detections: boxes [N, D, 4], thing
  labels [N, D], scores [N, D], valid [N, D]; train) -> logits [N, H, W, D + 1] (label 0 background)."""
  w_box: float = 1.0
  w_global: float = 1.0
  w_shape: float = 1.0
  w_bilateral: float = 5.0
  w_spatial: float = 3.0
  theta_alpha: float = 160.0
  theta_beta: float = 3.0
  theta_gamma: float = 3.0
  num_templates: int = 1
  template_size: int = 16
  train_iterations: int = 5
  test_iterations: int = 10
  filter: str = "lattice"
  lattice_capacity: int | None = None

  @nn.compact
  def __call__(self, q, image, boxes, labels, scores, valid, train: bool = False):
    n, h, w, num_classes = q.shape
    if image.shape != (n, h, w, 3):
      raise ValueError(f"image must be [N, H, W, 3] = {(n, h, w, 3)}; got {image.shape}")
    scalar = lambda value: lambda key: jnp.asarray(value, jnp.float32)
    w_box = jnp.exp(self.param("log_w_box", scalar(jnp.log(self.w_box))))
    w_global = jnp.exp(self.param("log_w_global", scalar(jnp.log(self.w_global))))
    w_shape = jnp.exp(self.param("log_w_shape", scalar(jnp.log(self.w_shape))))
    w_bilateral = self.param("w_bilateral", scalar(self.w_bilateral))
    w_spatial = self.param("w_spatial", scalar(self.w_spatial))
    templates = jax.nn.sigmoid(self.param(
        "shape_templates", _ellipse_logits, (num_classes - 1, self.num_templates, self.template_size,
                                             self.template_size)))
    dtype = jnp.result_type(q, jnp.float32)
    q, boxes, scores = q.astype(dtype), boxes.astype(dtype), scores.astype(dtype)

    def unary(q, boxes, labels, scores, valid):
      shapes = instance_crf.select_templates(templates, q, boxes, labels)
      return instance_crf.instance_unary(q, boxes, labels, scores, valid, shapes, w_box, w_global, w_shape)

    unary_logits = jax.vmap(unary)(q, boxes, labels, scores, valid)
    label_valid = jnp.concatenate([jnp.ones((n, 1), bool), valid], 1)
    return instance_crf.instance_mean_field(
        unary_logits, image, label_valid, num_iterations=self.train_iterations if train else self.test_iterations,
        w_bilateral=w_bilateral, w_spatial=w_spatial, theta_alpha=self.theta_alpha, theta_beta=self.theta_beta,
        theta_gamma=self.theta_gamma, filter=self.filter, lattice_capacity=self.lattice_capacity)
