"""U-Net: the paper's 572 -> 388 valid-padding shapes, parameter count from layer shapes, no recompile, the paper's
initialisation, the valid-padding loss crop, and a tiny U-Net whose loss falls."""
import importlib
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

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


def test_valid_padding_loss_uses_the_centre_crop_of_the_labels():
  """With valid padding the 36x36 scores of a 220x220 tile cover its centre (92 pixels in): scores that are
  right there give ~0 loss, shifted by one pixel they do not."""
  labels = np.random.default_rng(0).integers(0, 2, size=(1, 220, 220))
  centre = labels[:, 92:128, 92:128]
  perfect = {"logits": jnp.asarray(20.0 * (np.eye(2)[centre] - 0.5), jnp.float32)}
  shifted = {"logits": jnp.asarray(20.0 * (np.eye(2)[labels[:, 93:129, 92:128]] - 0.5), jnp.float32)}
  batch = {"semantic": jnp.asarray(labels, jnp.int32)}
  assert float(unet.loss(perfect, batch, None)[0]) < 1e-6
  assert float(unet.loss(shifted, batch, None)[0]) > 1.0
  model, tile = UNet(num_classes=2, width=4), jax.ShapeDtypeStruct((1, 220, 220, 1), jnp.float32)
  out = jax.eval_shape(model.apply, jax.eval_shape(model.init, jax.random.key(0), tile), tile)
  assert out["logits"].shape == (1, 36, 36, 2)


def test_tiny_unet_loss_falls_on_a_fixed_batch():
  """40 Adam steps (3e-3) on two 32x32 images of 8x8 class blocks take the loss below half of its start, for each
  of 3 initialisations, with one compile. Measured over 8 seeds, last / first loss: 0.00-0.14 after 40 steps,
  0.03-0.53 after 20, 0.4-0.6 after 8. Why an 8-step run "did not fall reliably": too few steps, and from flax's
  default initialisation 8 steps at 1e-3 left the loss at 0.92-0.96 of ln 3 (4 seeds)."""
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
                "Schedule", "What differs", "no PhC-U373 reader"):
    assert field in experiment.__doc__, field
  config = experiment.get_config()
  module = get_model(config.model.name).build(config.model, ml_collections.ConfigDict({"num_semantic_classes": 2}))
  images = jax.ShapeDtypeStruct((config.batch_size, *config.dataset.image_size, 1), jnp.float32)
  variables = jax.eval_shape(module.init, jax.random.key(0), images)
  assert jax.eval_shape(module.apply, variables, images)["logits"].shape == (1, 388, 388, 2)
  assert config.optimizer.momentum == 0.99


@pytest.mark.slow  # 40-50 s of CPU here: compiling the loop's init, train and eval steps
def test_demo_unet_trains_through_the_loop(tmp_path):
  from train_util import train_through_loop  # pylint: disable=g-import-not-at-top
  experiment = _experiment("demo_unet")
  assert "python -m segjax.main --config=experiments/demo_unet.py" in experiment.__doc__
  metrics, train = train_through_loop(tmp_path, experiment.get_config().model)
  assert len(train) == 4 and all(np.isfinite(r["loss"]) for r in train)
  assert 0.0 <= metrics["mIoU"] <= 1.0
