"""U-Net: the paper's 572 -> 388 valid-padding shapes, parameter count from layer shapes, no recompile, the paper's
initialisation, the overlap-tile strategy (input-size logits from numpy's reflect padding, seamless with the valid
network), a tiny U-Net whose loss falls, and a valid U-Net trained and evaluated by the loop."""
import importlib
import logging
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from segjax.data import pipeline
from segjax.models import get_model, unet
from segjax.models.unet import UNet

TINY = UNet(num_classes=3, width=8, padding="same")
tiny_init = jax.jit(TINY.init)


def _key(seed):
  """An rbg key: XLA on CPU compiles threefry's initialisation of these conv stacks in ~20 s, rbg's in ~5 s."""
  return jax.random.key(seed, impl="rbg")


def _block_images():
  """Two 32x32 images of 8x8 blocks of 3 classes, each class a colour plus noise."""
  rng = np.random.default_rng(0)
  labels = np.kron(rng.integers(0, 3, size=(2, 4, 4)), np.ones((8, 8), np.int32))
  images = (np.eye(3)[labels] * 0.6 + rng.uniform(0, 0.4, size=(2, 32, 32, 3))).astype(np.float32)
  return jnp.asarray(images), jnp.asarray(labels)


def _conv(cin, cout, k):
  return cin * cout * k * k + cout


def _reference_count(in_channels, num_classes, width=64):
  """Fig. 1 of the paper, counted layer by layer: two 3x3 convs per level, 2x2 up-convs, 1x1 scores."""
  count, cin = 0, in_channels
  for level in range(5):
    c = width * 2 ** level
    count += _conv(cin, c, 3) + _conv(c, c, 3)
    cin = c
  for level in reversed(range(4)):
    c = width * 2 ** level
    count += _conv(cin, c, 2) + _conv(2 * c, c, 3) + _conv(c, c, 3)
    cin = c
  return count + _conv(cin, num_classes, 1)


def test_paper_shapes_and_parameter_count():
  model = UNet(num_classes=2)
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 572, 572, 1))))
  count = sum(x.size for x in jax.tree.leaves(variables))
  assert count == _reference_count(1, 2)
  assert abs(count / 1e6 - 31.03) < 0.01
  out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((1, 572, 572, 1))), variables)
  assert out["logits"].shape == (1, 388, 388, 2)


def test_same_padding_no_recompile():
  images, _ = _block_images()
  variables = tiny_init(_key(0), images)
  traces = []

  @jax.jit
  def forward(v, x):
    traces.append(1)
    return TINY.apply(v, x)["logits"]

  out = forward(variables, images)
  out2 = forward(variables, jnp.ones_like(images))
  assert out.shape == (2, 32, 32, 3) and len(traces) == 1
  assert np.isfinite(np.asarray(out2)).all()


def test_paper_initialisation_keeps_the_signal():
  """Sec. 3's Gaussian std sqrt(2 / N) keeps the scale through the 23 ReLU layers: the scores of a freshly
  initialised U-Net have std ~1 (~0.04 with flax's default std sqrt(1 / N))."""
  images, _ = _block_images()
  logits = jax.jit(TINY.apply)(tiny_init(_key(0), images), images)["logits"]
  assert 0.1 < float(jnp.std(logits)) < 10


VALID = ml_collections.ConfigDict({"name": "unet", "width": 4, "padding": "valid", "dtype": "float32"})


@pytest.mark.parametrize("hw", [(33, 45), (61, 17), (100, 129), (5, 388)])
def test_overlap_tile_logits_have_the_input_size(hw):
  """The mirrored tile is one the valid network maps to exactly tile - 184 pixels (a 2x2 pooling of an odd size would
  lose a row), and the crop of that output is the input's size."""
  model, image = unet.build(VALID, ml_collections.ConfigDict({"num_semantic_classes": 2})), jnp.zeros((1, *hw, 3))
  variables = jax.eval_shape(model.init, jax.random.key(0), image)
  assert jax.eval_shape(model.apply, variables, image)["logits"].shape == (1, *hw, 2)
  tile = tuple(n + sum(unet.mirror_padding(n)) for n in hw)
  assert all(before >= 92 and after >= 92 for before, after in map(unet.mirror_padding, hw))
  tile_logits = jax.eval_shape(UNet(num_classes=2, width=4).apply, variables, jnp.zeros((1, *tile, 3)))["logits"]
  assert tile_logits.shape == (1, tile[0] - 184, tile[1] - 184, 2)


@pytest.mark.parametrize("size", [1, 2, 5, 33, 100])
def test_mirroring_is_numpys_reflect_also_past_one_reflection(size):
  """Inputs narrower than the 92-pixel context are mirrored more than once, as numpy.pad does."""
  pixels = np.arange(size)
  np.testing.assert_array_equal(pixels[unet._mirrored(size, *unet.mirror_padding(size))],
                                np.pad(pixels, unet.mirror_padding(size), mode="reflect"))


def test_overlap_tile_is_the_valid_network_on_the_reflected_image():
  """Fig. 2: the border is predicted from numpy's "reflect" extrapolation (edge pixel not repeated, as the authors'
  tiled_predict.m mirrors), and the interior, whose context lies in the image, equals the valid network's output on
  the image itself: tiles are seamless. 204 x 220 is a valid tile (20 x 36 outputs, 92 pixels in)."""
  image = np.random.default_rng(0).uniform(size=(1, 204, 220, 3)).astype(np.float32)
  tiled_model = unet.OverlapTileUNet(num_classes=3, width=4)
  variables = jax.jit(tiled_model.init)(_key(0), image)
  logits = jax.jit(tiled_model.apply)(variables, image)["logits"]
  assert logits.shape == (1, 204, 220, 3)
  valid = jax.jit(lambda x: UNet(num_classes=3, width=4).apply(variables, x)["logits"])
  padding = [(0, 0), unet.mirror_padding(204), unet.mirror_padding(220), (0, 0)]
  reflected = valid(np.pad(image, padding, mode="reflect"))
  (top, _), (left, _) = padding[1:3]
  tolerance = 1e-5 * float(np.abs(reflected).max())  # float32 sums of the same terms, in other orders
  np.testing.assert_allclose(logits, reflected[:, top - 92:top - 92 + 204, left - 92:left - 92 + 220], rtol=0,
                             atol=tolerance)
  symmetric = valid(np.pad(image, padding, mode="symmetric"))
  assert not np.allclose(symmetric[:, :204, :220], reflected[:, :204, :220], atol=1e-3)  # the check can tell them apart
  interior = valid(image)
  assert interior.shape == (1, 20, 36, 3)
  np.testing.assert_allclose(logits[:, 92:112, 92:128], interior, rtol=0, atol=tolerance)


def test_tiny_unet_loss_falls_on_a_fixed_batch():
  """40 Adam steps (3e-3) on two 32x32 images of 8x8 class blocks take the loss below half of its start, for each
  of 3 initialisations, with one compile. 40 steps, not a handful: from flax's default initialisation a few steps
  do not take the loss below half of its start reliably."""
  images, labels = _block_images()
  optimizer = optax.adam(3e-3)
  traces = []

  @jax.jit
  def step(params, opt_state):
    traces.append(1)
    loss_fn = lambda p: unet.loss(TINY.apply({"params": p}, images), {"semantic": labels}, None)[0]
    value, grads = jax.value_and_grad(loss_fn)(params)
    deltas, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, deltas), opt_state, value

  for seed in range(3):
    params = tiny_init(_key(seed), images)["params"]
    opt_state, losses = optimizer.init(params), []
    for _ in range(40):
      params, opt_state, value = step(params, opt_state)
      losses.append(float(value))
    assert np.mean(losses[-3:]) < 0.5 * losses[0], (seed, losses)
  assert len(traces) == 1


def _experiment(name):
  from train_util import REPO  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, REPO)
  return importlib.import_module(f"experiments.{name}")


def test_isbi_config_builds_and_says_what_it_reproduces():
  experiment = _experiment("unet_isbi")
  for field in ("python -m segjax.main --config=experiments/unet_isbi.py", "Table 2", "0.9203", "0.000353",
                "Schedule", "What differs", "isbi_cells.py", "overlap-tile", 'image_size="(388, 388)"'):
    assert field in experiment.__doc__, field
  config = experiment.get_config()
  module = get_model(config.model.name).build(config.model, ml_collections.ConfigDict({"num_semantic_classes": 2}))
  images = jax.ShapeDtypeStruct((config.batch_size, *config.dataset.image_size, 1), jnp.float32)
  variables = jax.eval_shape(module.init, jax.random.key(0), images)
  assert jax.eval_shape(module.apply, variables, images)["logits"].shape == (1, 572, 572, 2)  # overlap-tile
  assert 388 + sum(unet.mirror_padding(388)) == 572  # the docstring's image_size 388: the paper's tile
  assert config.optimizer.momentum == 0.99
  assert config.dataset.name in pipeline.SEMANTIC_READERS
  hela = _experiment("unet_isbi_hela")
  assert "0.7756" in hela.__doc__ and hela.get_config().dataset.root.endswith("DIC-C2DH-HeLa")
  for ds in (config.dataset, hela.get_config().dataset):  # the weight map of Eq. 2 with the paper's w0 and sigma
    assert (ds.unet_weight_map, ds.unet_w0, ds.unet_sigma) == (True, 10.0, 5.0)
  assert "pixel_weights" in unet.BATCH_KEYS


@pytest.mark.slow  # compiles the loop's init, train and eval steps and trains 40 steps
def test_demo_unet_trains_through_the_loop(tmp_path):
  """The demo's model at width 8, 40 steps of FAST_OPTIMIZER at 3e-3 (U-Net has no normalisation layers: at 1e-2
  an early step can throw its loss far up): its cross-entropy ends below CE_BELOW_IMAGE_BLIND (0.7 log 7: under any
  image-blind predictor's, see train_util)."""
  from train_util import CE_BELOW_IMAGE_BLIND, FAST_OPTIMIZER, train_through_loop  # pylint: disable=g-import-not-at-top
  experiment = _experiment("demo_unet")
  assert "python -m segjax.main --config=experiments/demo_unet.py" in experiment.__doc__
  metrics, train = train_through_loop(tmp_path, experiment.get_config().model, steps=40,
                                      **{**FAST_OPTIMIZER, "optimizer.learning_rate": 3e-3})
  assert len(train) == 40 and all(np.isfinite(r["loss"]) for r in train)
  assert 0.0 <= metrics["mIoU"] <= 1.0
  losses = [r["loss"] for r in train]
  assert np.mean(losses[-3:]) < CE_BELOW_IMAGE_BLIND, losses


@pytest.mark.slow  # ~45 s of CI: 30 loop steps and overlap-tile eval
def test_valid_unet_trains_and_is_evaluated_through_the_loop(tmp_path, caplog):
  """The loop's tiny config (64 x 64 images) with the paper's valid padding, 30 steps of FAST_OPTIMIZER at 3e-3 (no
  normalisation layers, as in test_demo_unet_trains_through_the_loop): one compile of the train step, a
  cross-entropy that ends below CE_BELOW_IMAGE_BLIND (0.7 log 7: under any image-blind predictor's, see train_util),
  and an evaluation against the full-size labels."""
  from train_util import CE_BELOW_IMAGE_BLIND, FAST_OPTIMIZER  # pylint: disable=g-import-not-at-top
  from train_util import read_metrics, train_through_loop  # pylint: disable=g-import-not-at-top
  steps = 30
  jax.config.update("jax_log_compiles", True)
  try:
    with caplog.at_level(logging.WARNING):
      _, train = train_through_loop(tmp_path, ml_collections.ConfigDict(VALID.to_dict()), steps=steps,
                                    checkpoint_every_steps=steps, **{**FAST_OPTIMIZER, "optimizer.learning_rate": 3e-3})
  finally:
    jax.config.update("jax_log_compiles", False)
  compiles = [r.getMessage() for r in caplog.records if "Compiling" in r.getMessage()]
  assert sum("train_step" in m for m in compiles) == 1, compiles
  assert len(train) == steps and all(np.isfinite(r["loss"]) for r in train)
  (evaluation,) = read_metrics(tmp_path / "workdir", "eval")
  assert 0.0 <= evaluation["mIoU"] <= 1.0 and 0.0 <= evaluation["pixel_acc"] <= 1.0
  losses = [r["loss"] for r in train]
  assert np.mean(losses[-3:]) < CE_BELOW_IMAGE_BLIND, losses


def test_weight_map_loss_equals_numpy_energy():
  """With the batch's pixel_weights (U-Net's weight map), the loss is Eq. 1's energy per labelled pixel: the sum over
  labelled pixels of w(x) (-log softmax), divided by their number, computed here in float64 NumPy; all-ones weights
  give the plain cross entropy; the weights of ignored pixels change nothing."""
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 6, 7, 3)).astype(np.float32)
  labels = rng.integers(0, 3, size=(2, 6, 7))
  labels[0, :2] = 255
  weights = rng.uniform(0.5, 12, size=(2, 6, 7)).astype(np.float32)
  x = logits.astype(np.float64)
  log_probs = x - (np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True)) + x.max(-1, keepdims=True))
  valid = labels != 255
  nll = -np.take_along_axis(log_probs, np.where(valid, labels, 0)[..., None], -1)[..., 0]
  expected = (weights * nll * valid).sum() / valid.sum()
  batch = {"semantic": jnp.asarray(labels), "pixel_weights": jnp.asarray(weights)}
  value, _ = unet.loss({"logits": jnp.asarray(logits)}, batch, None)
  np.testing.assert_allclose(float(value), expected, rtol=1e-5)
  ignored_changed = {**batch, "pixel_weights": jnp.asarray(np.where(valid, weights, 99.0))}
  np.testing.assert_allclose(float(unet.loss({"logits": jnp.asarray(logits)}, ignored_changed, None)[0]), expected,
                             rtol=1e-5)
  ones = {**batch, "pixel_weights": jnp.ones_like(batch["pixel_weights"])}
  plain = unet.loss({"logits": jnp.asarray(logits)}, {"semantic": batch["semantic"]}, None)[0]
  np.testing.assert_allclose(float(unet.loss({"logits": jnp.asarray(logits)}, ones, None)[0]), float(plain),
                             rtol=1e-6)
  np.testing.assert_allclose(float(plain), (nll * valid).sum() / valid.sum(), rtol=1e-5)
