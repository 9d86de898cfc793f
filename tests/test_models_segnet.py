"""SegNet: the released prototxt's layer list and parameter count, CamVid shapes, unpooling at the encoder's maxima
(against a NumPy loop), a tiny SegNet that trains without recompiling, and the configs. DeconvNet: its released
prototxt's layer list and parameter count."""
import importlib
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from segjax.models import deconvnet, get_model, segnet
from train_util import blocky_batch

# SegNet-Tutorial Models/segnet_train.prototxt, typed out layer by layer: (name, in channels, out channels).
# Every convolution is 3x3 with a bias; all but conv1_1_D are followed by a "BN" layer (scale and shift).
PROTOTXT = [
    ("conv1_1", 3, 64), ("conv1_2", 64, 64),
    ("conv2_1", 64, 128), ("conv2_2", 128, 128),
    ("conv3_1", 128, 256), ("conv3_2", 256, 256), ("conv3_3", 256, 256),
    ("conv4_1", 256, 512), ("conv4_2", 512, 512), ("conv4_3", 512, 512),
    ("conv5_1", 512, 512), ("conv5_2", 512, 512), ("conv5_3", 512, 512),
    ("conv5_3_D", 512, 512), ("conv5_2_D", 512, 512), ("conv5_1_D", 512, 512),
    ("conv4_3_D", 512, 512), ("conv4_2_D", 512, 512), ("conv4_1_D", 512, 256),
    ("conv3_3_D", 256, 256), ("conv3_2_D", 256, 256), ("conv3_1_D", 256, 128),
    ("conv2_2_D", 128, 128), ("conv2_1_D", 128, 64),
    ("conv1_2_D", 64, 64), ("conv1_1_D", 64, 11),
]
INFO = ml_collections.ConfigDict({"num_semantic_classes": 11})
TINY = ml_collections.ConfigDict({"name": "segnet", "width": 8, "class_weights": (), "dtype": "float32"})


def test_camvid_shapes_and_parameter_count_match_the_prototxt():
  module = segnet.SegNet(num_classes=11)
  images = jax.ShapeDtypeStruct((1, 360, 480, 3), jnp.float32)
  variables = jax.eval_shape(module.init, jax.random.key(0), images)
  params = variables["params"]
  expected = {}
  for name, cin, cout in PROTOTXT:
    expected[name] = {"kernel": (3, 3, cin, cout), "bias": (cout,)}
    if name != "conv1_1_D":
      expected[f"{name}_bn"] = {"scale": (cout,), "bias": (cout,)}
  assert jax.tree.map(lambda x: x.shape, params) == expected
  count = sum(x.size for x in jax.tree.leaves(params))
  assert count == sum(9 * cin * cout + cout + (2 * cout if name != "conv1_1_D" else 0) for name, cin, cout in PROTOTXT)
  assert abs(count / 1e6 - 29.5) < 0.1  # 29,449,355: the 29.5M quoted for SegNet
  assert abs(count * 4 / 1e6 - 117) < 1  # as float32; Table 6: a 117 MB Caffe model
  outputs = jax.eval_shape(lambda v, x: module.apply(v, x), variables, images)
  assert outputs["logits"].shape == (1, 360, 480, 11)


def _window_argmax(a, window=2):
  """First maximum of each 2x2/2 window (Caffe's ceil rounding), float64 loops: a boolean map of the winners."""
  n, h, w, c = a.shape
  winners = np.zeros(a.shape, bool)
  for b in range(n):
    for k in range(c):
      for y in range(0, h, window):
        for x in range(0, w, window):
          patch = a[b, y:y + window, x:x + window, k]
          dy, dx = np.unravel_index(np.argmax(patch), patch.shape)  # row-major: the first maximum
          winners[b, y + dy, x + dx, k] = True
  return winners


@pytest.fixture(scope="module")
def tiny():
  """A width-8 SegNet for 3 classes and its initial variables (they do not depend on the input size)."""
  module = segnet.build(TINY, ml_collections.ConfigDict({"num_semantic_classes": 3}))
  # rbg keys: XLA on CPU compiles threefry's initialisation of this conv stack ~4x slower.
  return module, jax.jit(module.init)(jax.random.key(0, impl="rbg"), jnp.zeros((1, 32, 32, 3)))


def test_decoder_unpools_at_the_encoder_maxima(tiny):
  """Each decoder's first convolution sees zeros except at the positions its encoder's pool took the maximum
  from; at pool5 the values there are the encoder's maxima themselves."""
  module, variables = tiny
  images = np.random.default_rng(0).normal(size=(2, 36, 44, 3)).astype(np.float32)  # odd sizes: 9 -> 5 -> 3
  stages = ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3))
  wanted = {f"conv{s}_{last}_bn" for s, last in stages} | {f"conv{s}_{last}_D" for s, last in stages}

  @jax.jit
  def forward(variables, images):
    seen = {}

    def record(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      if context.module.name in wanted:
        seen[context.module.name] = (args[0], out)  # (input, output)
      return out

    with nn.intercept_methods(record):
      module.apply(variables, images)
    return seen

  seen = jax.tree.map(lambda a: np.asarray(a, np.float64), forward(variables, images))
  for s, last in stages:
    encoder = np.maximum(seen[f"conv{s}_{last}_bn"][1], 0)  # the map pool{s} pooled (after the ReLU)
    unpooled = seen[f"conv{s}_{last}_D"][0]
    assert unpooled.shape == encoder.shape
    winners = _window_argmax(encoder)
    assert not unpooled[~winners].any(), f"stage {s}: values outside the encoder's maxima"
    assert np.count_nonzero(unpooled) > 0.2 * winners.sum()
  np.testing.assert_array_equal(unpooled, np.where(winners, encoder, 0))  # stage 5: the pooled maxima, in place


def test_tiny_segnet_trains_without_recompiling(tiny):
  module, variables = tiny
  images, labels = blocky_batch(3, blocks=4)  # 8x8 blocks of a class, 32x32
  optimizer = optax.adam(1e-2)  # over 8 initialisations: final / first loss 0.10-0.26 after 20 steps
  traces = []

  @jax.jit
  def step(params, batch_stats, opt_state, batch):
    traces.append(1)

    def loss_fn(params):
      outputs, updates = module.apply({"params": params, "batch_stats": batch_stats}, batch["image"], train=True,
                                      mutable=["batch_stats"])
      return segnet.loss(outputs, batch, TINY)[0], updates

    (value, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    deltas, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, deltas), updates["batch_stats"], opt_state, value

  params, batch_stats, opt_state = variables["params"], variables["batch_stats"], optimizer.init(variables["params"])
  losses = []
  for _ in range(20):
    batch = {"image": jnp.asarray(images), "semantic": jnp.asarray(labels)}
    params, batch_stats, opt_state, value = step(params, batch_stats, opt_state, batch)
    losses.append(float(value))
  assert np.mean(losses[-3:]) < 0.5 * losses[0], losses
  assert len(traces) == 1


def test_class_weights_must_match_the_classes():
  config = ml_collections.ConfigDict({**TINY.to_dict(), "class_weights": (1.0, 2.0)})
  outputs = {"logits": jnp.zeros((1, 4, 4, 3))}
  with pytest.raises(ValueError, match="config.model.class_weights"):
    segnet.loss(outputs, {"semantic": jnp.zeros((1, 4, 4), jnp.int32)}, config)


def _experiment(name):
  from train_util import REPO  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, REPO)
  return importlib.import_module(f"experiments.{name}")


def test_camvid_config_builds_and_says_what_it_reproduces():
  experiment = _experiment("segnet_camvid")
  for field in ("python -m segjax.main --config=experiments/segnet_camvid.py", "Table 2", "60.10", "Schedule",
                "What differs", "segjax/data/camvid.py"):
    assert field in experiment.__doc__, field
  config = experiment.get_config()
  module = get_model(config.model.name).build(config.model, INFO)
  images = jax.ShapeDtypeStruct((config.batch_size, *config.dataset.image_size, 3), jnp.float32)
  variables = jax.eval_shape(module.init, jax.random.key(0), images)
  assert jax.eval_shape(module.apply, variables, images)["logits"].shape == (5, 360, 480, 11)
  assert len(config.model.class_weights) == 11


@pytest.mark.slow  # compiles the loop's init, train and eval steps and trains 40 steps
def test_demo_segnet_trains_through_the_loop(tmp_path):
  """The demo's model at width 8, 40 steps of FAST_OPTIMIZER: its cross-entropy ends below CE_BELOW_IMAGE_BLIND
  (0.7 log 7: under any image-blind predictor's, see train_util)."""
  from train_util import CE_BELOW_IMAGE_BLIND, FAST_OPTIMIZER, train_through_loop  # pylint: disable=g-import-not-at-top
  experiment = _experiment("demo_segnet")
  assert "python -m segjax.main --config=experiments/demo_segnet.py" in experiment.__doc__
  metrics, train = train_through_loop(tmp_path, experiment.get_config().model, steps=40, **FAST_OPTIMIZER)
  assert len(train) == 40 and all(np.isfinite(r["loss"]) for r in train)
  assert 0.0 <= metrics["mIoU"] <= 1.0
  losses = [r["loss"] for r in train]
  assert np.mean(losses[-3:]) < CE_BELOW_IMAGE_BLIND, losses


# DeconvNet's released DeconvNet_inference_deploy.prototxt, typed out: (name, kernel, in, out, batch norm).
DECONVNET = [
    *[(name, 3, cin, cout, True) for name, cin, cout in PROTOTXT[:13]],
    ("fc6", 7, 512, 4096, True), ("fc7", 1, 4096, 4096, True), ("deconv_fc6", 7, 4096, 512, True),
    ("deconv5_1", 3, 512, 512, True), ("deconv5_2", 3, 512, 512, True), ("deconv5_3", 3, 512, 512, True),
    ("deconv4_1", 3, 512, 512, True), ("deconv4_2", 3, 512, 512, True), ("deconv4_3", 3, 512, 256, True),
    ("deconv3_1", 3, 256, 256, True), ("deconv3_2", 3, 256, 256, True), ("deconv3_3", 3, 256, 128, True),
    ("deconv2_1", 3, 128, 128, True), ("deconv2_2", 3, 128, 64, True),
    ("deconv1_1", 3, 64, 64, True), ("deconv1_2", 3, 64, 64, True),
    ("score", 1, 64, 21, False),
]


def test_deconvnet_shapes_and_parameter_count_match_the_prototxt():
  module = deconvnet.DeconvNet(num_classes=21)
  images = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
  variables = jax.eval_shape(module.init, jax.random.key(0), images)
  expected = {}
  for name, k, cin, cout, bn in DECONVNET:
    expected[name] = {"kernel": (k, k, cin, cout), "bias": (cout,)}
    if bn:
      expected[f"{name}_bn"] = {"scale": (cout,), "bias": (cout,)}
  assert jax.tree.map(lambda x: x.shape, variables["params"]) == expected
  count = sum(x.size for x in jax.tree.leaves(variables["params"]))
  assert count == sum(k * k * cin * cout + cout + 2 * cout * bn for _, k, cin, cout, bn in DECONVNET)
  assert round(count / 1e6) == 252  # 251,805,653: the 252M quoted for DeconvNet
  assert jax.eval_shape(module.apply, variables, images)["logits"].shape == (1, 224, 224, 21)


def test_deconvnet_names_the_input_size_it_needs():
  module = deconvnet.DeconvNet(num_classes=3, width=8)
  with pytest.raises(ValueError, match="config.dataset.image_size"):
    jax.eval_shape(module.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 128, 128, 3), jnp.float32))
