"""Dense mean field against a float64 NumPy loop reference, a finite-difference gradient, one compile."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segjax.ops.crf import dense_crf
from references import densecrf, requires_densecrf


def _reference(unary, image, iterations, ta, tb, tg, wb, ws, compat, normalization):
  """Krähenbühl & Koltun mean field, written pixel pair by pixel pair in float64."""
  h, w, num_labels = unary.shape
  ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  pos = np.stack([ys, xs], -1).reshape(-1, 2).astype(np.float64)
  col = image.reshape(-1, 3).astype(np.float64)
  u = unary.reshape(-1, num_labels).astype(np.float64)
  dp = ((pos[:, None] - pos[None]) ** 2).sum(-1)
  dc = ((col[:, None] - col[None]) ** 2).sum(-1)
  kernels = [(wb, np.exp(-dp / (2 * ta**2) - dc / (2 * tb**2))), (ws, np.exp(-dp / (2 * tg**2)))]
  softmax = lambda x: np.exp(x - x.max(1, keepdims=True)) / np.exp(x - x.max(1, keepdims=True)).sum(1, keepdims=True)
  q = softmax(u)
  for _ in range(iterations):
    total = np.zeros_like(q)
    for weight, k in kernels:
      d = k.sum(1, keepdims=True)
      if normalization == "none":
        m = k @ q
      elif normalization == "after":
        m = (k @ q) / d
      else:
        m = (k @ (q / np.sqrt(d))) / np.sqrt(d)
      total += weight * m
    q = softmax(u - total @ compat.T)
  return q.reshape(h, w, num_labels)


@pytest.mark.parametrize("normalization", ["symmetric", "after", "none"])
def test_matches_float64_reference(normalization):
  rng = np.random.default_rng(0)
  unary = rng.normal(size=(1, 9, 11, 4)).astype(np.float32)
  image = rng.uniform(0, 255, size=(1, 9, 11, 3)).astype(np.float32)
  compat = rng.uniform(0, 1, size=(4, 4)) if normalization == "none" else 1 - np.eye(4)
  weights = (0.3, 0.2) if normalization == "none" else (10.0, 3.0)
  q = dense_crf(unary, image, num_iterations=5, theta_alpha=8.0, theta_beta=30.0, w_bilateral=weights[0],
                w_spatial=weights[1], compatibility=jnp.asarray(compat, jnp.float32), normalization=normalization,
                filter="exact")
  expected = _reference(unary[0], image[0], 5, 8.0, 30.0, 3.0, *weights, compat, normalization)
  # float32 |f_i|^2 + |f_j|^2 - 2 f_i.f_j cancels at |f|^2 ~ 75, where float32 resolves about 1e-5 (75 x 2^-23).
  np.testing.assert_allclose(q[0], expected, atol=5e-5)


def test_gradient_matches_finite_differences():
  """Central differences in float64 along a random direction, through 3 unrolled iterations."""
  rng = np.random.default_rng(1)
  with jax.enable_x64(True):
    unary = jnp.asarray(rng.normal(size=(1, 5, 6, 3)))
    image = jnp.asarray(rng.uniform(0, 255, size=(1, 5, 6, 3)))
    target = jnp.asarray(rng.uniform(size=(1, 5, 6, 3)))
    f = lambda u: jnp.sum(dense_crf(u, image, num_iterations=3, theta_alpha=4.0, filter="exact") * target)
    direction = jnp.asarray(rng.normal(size=unary.shape))
    eps = 1e-5
    numeric = (f(unary + eps * direction) - f(unary - eps * direction)) / (2 * eps)
    np.testing.assert_allclose(jnp.sum(jax.grad(f)(unary) * direction), numeric, rtol=1e-6)


def test_one_compile_for_new_images_and_clear_errors():
  traces = []

  @jax.jit
  def run(unary, image):
    traces.append(1)
    return dense_crf(unary, image, num_iterations=2, filter="exact")

  rng = np.random.default_rng(2)
  for _ in range(2):
    run(rng.normal(size=(2, 6, 7, 3)).astype(np.float32), rng.uniform(0, 255, size=(2, 6, 7, 3)).astype(np.float32))
  assert len(traces) == 1
  with pytest.raises(ValueError, match="normalization"):
    dense_crf(jnp.zeros((1, 4, 4, 2)), jnp.zeros((1, 4, 4, 3)), normalization="before")
  with pytest.raises(ValueError, match=r"image \[N, H, W, 3\]"):
    dense_crf(jnp.zeros((1, 4, 4, 2)), jnp.zeros((1, 4, 5, 3)))


@requires_densecrf
def test_agrees_with_pydensecrf():
  """The C++ permutohedral lattice (approximate) against the exact filter: >= 97% of labels, mean |dQ| < 0.01."""
  dcrf = densecrf
  rng = np.random.default_rng(3)
  h, w, num_labels = 30, 40, 5
  regions = np.kron(rng.integers(0, num_labels, size=(3, 4)), np.ones((10, 10), np.int64))
  image = np.clip(rng.uniform(0, 255, size=(num_labels, 3))[regions] + rng.normal(0, 10, (h, w, 3)), 0, 255)
  image = np.ascontiguousarray(image.astype(np.uint8))
  logits = (2.0 * np.eye(num_labels)[regions] + rng.normal(0, 1.5, (h, w, num_labels))).astype(np.float32)
  probabilities = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  crf = dcrf.DenseCRF2D(w, h, num_labels)
  crf.setUnaryEnergy(np.ascontiguousarray(-np.log(probabilities).reshape(-1, num_labels).T.astype(np.float32)))
  crf.addPairwiseGaussian(sxy=3, compat=3)
  crf.addPairwiseBilateral(sxy=80, srgb=13, rgbim=image, compat=10)
  reference = np.array(crf.inference(5)).reshape(num_labels, h, w).transpose(1, 2, 0)
  q = np.asarray(dense_crf(np.log(probabilities)[None], image[None].astype(np.float32), num_iterations=5,
                           filter="exact"))[0]
  agreement = np.mean(q.argmax(-1) == reference.argmax(-1))
  mean_dq = np.abs(q - reference).mean()
  print(f"label agreement {agreement:.4f}, mean |dQ| {mean_dq:.2e}, max |dQ| {np.abs(q - reference).max():.2e}")
  assert agreement >= 0.97 and mean_dq < 0.01, (agreement, mean_dq)
