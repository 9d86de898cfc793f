"""Permutohedral lattice filter against the exact dense filter and pydensecrf's C++ lattice; lattice mean field against
exact mean field and pydensecrf2; float64 finite-difference gradient; overflow; one compile."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segjax.ops.crf import dense, dense_crf, dense_gaussian_filter, permutohedral
from references import densecrf, requires_densecrf


def _scene(h, w, num_labels, seed, signal=1.0, noise=1.0, colours=None):
  """Six Voronoi regions of flat colour (random, or the given [6, 3]; pixel noise 6), logits = signal x
  one-hot(region label) + noise."""
  rng = np.random.default_rng(seed)
  ys, xs = np.mgrid[:h, :w]
  centres = rng.uniform(0, 1, (6, 2)) * (h, w)
  region = np.argmin((ys[..., None] - centres[:, 0]) ** 2 + (xs[..., None] - centres[:, 1]) ** 2, -1)
  colours = rng.uniform(20, 235, (6, 3)) if colours is None else np.asarray(colours, np.float64)
  image = np.clip(colours[region] + rng.normal(0, 6, (h, w, 3)), 0, 255).astype(np.uint8)
  labels = rng.integers(0, num_labels, 6)[region]
  logits = signal * np.eye(num_labels)[labels] + rng.normal(0, noise, (h, w, num_labels))
  return image, logits.astype(np.float32)


_permutohedral_filter = jax.jit(permutohedral.permutohedral_filter, static_argnums=2)
# thetas and weights traced: tests of one image size share a compile
_dense_crf = jax.jit(dense_crf, static_argnames=("num_iterations", "filter", "lattice_capacity"))


def _filter(features, values, capacity=None):
  """(K values / K 1 [N, P, L], K 1 [N, P, 1], overflow [N]) in one lattice call."""
  capacity = capacity or features.shape[1] * (features.shape[2] + 1)
  filtered, overflow = _permutohedral_filter(features, jnp.concatenate([values, jnp.ones_like(values[..., :1])], -1),
                                             capacity)
  return filtered[..., :-1] / filtered[..., -1:], filtered[..., -1:], overflow


@pytest.mark.parametrize("theta", [(80.0, 13.0), (3.0,)], ids=["bilateral", "spatial"])
def test_filter_approximates_exact(theta):
  """Unnormalised, the lattice's sum is a fraction of the exact Gaussian sum (asserted in 0.5-0.62 for d = 5 and
  0.8-0.95 for d = 2); normalised ("after"), its mean relative error to the exact filter is under 1.2%."""
  image, logits = _scene(30, 40, 5, 0)
  features = dense._features(jnp.asarray(image[None], jnp.float32), *theta)  # pylint: disable=protected-access
  values = jax.nn.softmax(jnp.asarray(logits).reshape(1, -1, 5), -1)
  normalised, degree, overflow = _filter(features, values)
  exact_degree = dense_gaussian_filter(features, jnp.ones_like(values[..., :1]))
  exact = dense_gaussian_filter(features, values) / exact_degree
  ratio = np.asarray(degree / exact_degree)
  relative = float(jnp.mean(jnp.abs(normalised - exact)) / jnp.mean(exact))
  print(f"lattice / exact {ratio.mean():.3f} +- {ratio.std():.3f}, normalised mean relative error {relative:.4f}")
  assert not overflow.any()
  assert (0.5 if len(theta) == 2 else 0.8) < ratio.mean() < (0.62 if len(theta) == 2 else 0.95)
  assert relative < 0.012


@requires_densecrf
@pytest.mark.parametrize("dim, spread", [(2, 3.0), (5, 3.0), (5, 10.0)])
def test_filter_matches_pydensecrf_lattice(dim, spread):
  """pydensecrf's C++ lattice read through one mean-field step of a DenseCRF with Potts weight -1 and "after"
  normalisation: log Q_1 - log Q_0 = -(K Q_0 / K 1) + a per-pixel constant, compared label minus label 0."""
  dcrf = densecrf
  rng = np.random.default_rng(dim)
  num_points, num_labels = 1200, 5  # the shapes of test_filter_approximates_exact: no new compile
  features = rng.uniform(0, spread, (num_points, dim)).astype(np.float32)
  q0 = rng.uniform(0.05, 1, (num_points, num_labels))
  q0 = (q0 / q0.sum(1, keepdims=True)).astype(np.float32)
  crf = dcrf.DenseCRF(num_points, num_labels)
  crf.setUnaryEnergy(np.ascontiguousarray(-np.log(q0).T))
  crf.addPairwiseEnergy(np.ascontiguousarray(features.T), compat=-1.0, kernel=dcrf.DIAG_KERNEL,
                        normalization=dcrf.NORMALIZE_AFTER)
  reference = np.log(q0) - np.log(np.array(crf.inference(1)).T)
  ours = np.asarray(_filter(features[None], q0[None])[0][0])
  np.testing.assert_allclose(ours - ours[:, :1], reference - reference[:, :1], atol=3e-6)


def test_batch_and_transpose():
  """Two images in one lattice grid filter as each alone; the VJP (custom, the blur's axes reversed) is the transpose
  of the matrix the filter applies, read column by column from the identity."""
  rng = np.random.default_rng(4)
  features = rng.uniform(0, 4, (2, 40, 3)).astype(np.float32)
  values = rng.normal(size=(2, 40, 2)).astype(np.float32)
  batched = _permutohedral_filter(features, values, 160)[0]
  for n in range(2):
    np.testing.assert_allclose(batched[n], _permutohedral_filter(features[n:n + 1], values[n:n + 1], 160)[0][0],
                               atol=1e-6)
  matrix = _permutohedral_filter(features[:1], jnp.eye(40)[None], 160)[0][0]  # column j: the filter of e_j
  cotangent = rng.normal(size=(1, 40, 1)).astype(np.float32)
  filtered = lambda f: lambda v: permutohedral.permutohedral_filter(f, v, 160)[0]
  vjp = jax.jit(lambda f, c: jax.vjp(filtered(f), jnp.zeros_like(c))[1](c))
  np.testing.assert_allclose(vjp(features[:1], cotangent)[0][0, :, 0], matrix.T @ cotangent[0, :, 0], atol=1e-5)
  assert np.abs(matrix - matrix.T).max() > 1e-4  # the blur's axis order makes the map non-symmetric: a real test


def test_mean_field_agrees_with_exact():
  """Weak unaries (signal 0.2 under noise 2.0, so the CRF changes most of their argmax labels): the lattice's mean
  field gives the exact filter's label on at least 97% of the pixels."""
  image, logits = _scene(40, 50, 5, 5, signal=0.2, noise=2.0)
  args = (jnp.asarray(logits[None]), jnp.asarray(image[None], jnp.float32))
  lattice = _dense_crf(*args, num_iterations=5, theta_gamma=3.0)
  exact = _dense_crf(*args, num_iterations=5, theta_gamma=3.0, filter="exact")
  agreement = float(jnp.mean(lattice.argmax(-1) == exact.argmax(-1)))
  print(f"lattice vs exact mean field: labels {agreement:.4f}, mean |dQ| {float(jnp.abs(lattice - exact).mean()):.2e}")
  assert agreement >= 0.97


def _key_range(image, theta_alpha, theta_beta):
  """Lattice keys an image spans: d+1 remainders x the product of the ranges of its d free lattice coordinates
  (float64, from the elevation of Adams et al.)."""
  h, w, _ = image.shape
  ys, xs = np.mgrid[:h, :w]
  features = np.concatenate([np.stack([xs, ys], -1) / theta_alpha, image / theta_beta], -1).reshape(-1, 5)
  coordinates = np.round(features @ permutohedral._elevation(5).T / 6)[:, :5]
  return 6 * np.prod(coordinates.max(0) - coordinates.min(0) + 1)


CUBE_CORNERS = ((0, 0, 0), (255, 255, 255), (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0))


@requires_densecrf
@pytest.mark.parametrize("h, w, theta_alpha, theta_beta, w_bilateral, colours", [
    (40, 50, 80, 13, 10, None),  # pydensecrf's example parameters
    (100, 120, 160, 3, 5, CUBE_CORNERS),  # CRF-as-RNN's (Zheng et al. 2015) on saturated colours: keys beyond int32
])
def test_agrees_with_pydensecrf(h, w, theta_alpha, theta_beta, w_bilateral, colours):
  """Same lattice as the C++ one, so the marginals agree to float32 rounding: labels >= 98%, mean |dQ| < 0.01."""
  dcrf = densecrf
  num_labels = 5
  image, logits = _scene(h, w, num_labels, 6, signal=0.8, noise=1.2, colours=colours)
  if colours is not None:
    assert _key_range(image.astype(np.float64), theta_alpha, theta_beta) > 2**31
  probabilities = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  crf = dcrf.DenseCRF2D(w, h, num_labels)
  crf.setUnaryEnergy(np.ascontiguousarray(-np.log(probabilities).reshape(-1, num_labels).T.astype(np.float32)))
  crf.addPairwiseGaussian(sxy=3, compat=3)
  crf.addPairwiseBilateral(sxy=theta_alpha, srgb=theta_beta, rgbim=np.ascontiguousarray(image), compat=w_bilateral)
  reference = np.array(crf.inference(5)).reshape(num_labels, h, w).transpose(1, 2, 0)
  q = np.asarray(_dense_crf(np.log(probabilities)[None], image[None].astype(np.float32), num_iterations=5,
                            theta_alpha=theta_alpha, theta_beta=theta_beta, theta_gamma=3.0,
                            w_bilateral=w_bilateral))[0]
  agreement = np.mean(q.argmax(-1) == reference.argmax(-1))
  mean_dq = np.abs(q - reference).mean()
  print(f"label agreement {agreement:.4f}, mean |dQ| {mean_dq:.2e}, max |dQ| {np.abs(q - reference).max():.2e}")
  assert agreement >= 0.98 and mean_dq < 0.01, (agreement, mean_dq)


def test_gradient_matches_finite_differences():
  """Central differences in float64 along a random direction, through 3 iterations on the lattice."""
  rng = np.random.default_rng(7)
  with jax.enable_x64(True):
    unary = jnp.asarray(rng.normal(size=(1, 6, 7, 3)))
    image = jnp.asarray(rng.uniform(0, 255, size=(1, 6, 7, 3)))
    target = jnp.asarray(rng.uniform(size=(1, 6, 7, 3)))
    f = jax.jit(jax.value_and_grad(  # one compile for the values and the gradient
        lambda u: jnp.sum(dense_crf(u, image, num_iterations=3, theta_alpha=4.0, theta_beta=60.0) * target)))
    direction = jnp.asarray(rng.normal(size=unary.shape))
    eps = 1e-5
    numeric = (f(unary + eps * direction)[0] - f(unary - eps * direction)[0]) / (2 * eps)
    np.testing.assert_allclose(jnp.sum(f(unary)[1] * direction), numeric, rtol=1e-6)


def test_overflow_flag():
  """More points than the capacity, or keys beyond int32: flagged; dense_crf then gives NaN marginals."""
  rng = np.random.default_rng(8)
  features = rng.uniform(0, 30, (1, 1200, 5)).astype(np.float32)  # sparse: thousands of lattice points
  values = np.ones((1, 1200, 5), np.float32)
  assert not _filter(features, values)[2].any()
  assert _filter(features, values, 64)[2].all()
  assert _filter(features * 1e4, values)[2].all()
  image, logits = _scene(40, 50, 5, 9)
  q = _dense_crf(logits[None], image[None].astype(np.float32), num_iterations=5, theta_gamma=1e-4)
  assert np.isnan(q).all()


def test_batch_gives_each_image_its_own_marginals():
  """A batch (the images one after the other in one call, the spatial filter shared) gives each image the marginals
  it gets alone, and NaN only to an image whose lattice overflows."""
  scenes = [_scene(20, 24, 4, seed) for seed in (10, 11, 12)]
  images = np.stack([image for image, _ in scenes]).astype(np.float32)
  logits = np.stack([logit for _, logit in scenes])
  images[2] = np.random.default_rng(0).uniform(0, 255, images[2].shape)  # noise: thousands of bilateral points
  capacity = 1000  # the scenes' bilateral lattices have a few hundred points, the spatial one under a hundred
  batched = _dense_crf(logits, images, num_iterations=3, lattice_capacity=capacity)
  for n in range(2):
    alone = _dense_crf(logits[n:n + 1], images[n:n + 1], num_iterations=3, lattice_capacity=capacity)
    np.testing.assert_allclose(batched[n], alone[0], atol=1e-6)
  assert np.isfinite(batched[:2]).all() and np.isnan(batched[2]).all()


def test_one_compile_for_new_images():
  traces = []

  @jax.jit
  def run(unary, image):
    traces.append(1)
    return dense_crf(unary, image, num_iterations=2)

  for seed in range(2):  # other colours: other lattice point counts, same shapes
    image, logits = _scene(12, 14, 3, seed)
    assert np.isfinite(run(logits[None], image[None].astype(np.float32))).all()
  assert len(traces) == 1
  with pytest.raises(ValueError, match="filter"):
    dense_crf(jnp.zeros((1, 4, 4, 2)), jnp.zeros((1, 4, 4, 3)), filter="kd-tree")
