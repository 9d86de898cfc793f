"""Recurrent Attention (Ren & Zemel, CVPR 2017): the prediction contract, the (padded) ground-truth boxes,
the split box CNN, the FCN trained by its own loss only, ground-truth boxes fed to the glimpses, one compile for any
instance count, a tiny model that segments its training batch better than any image-blind predictor can, and 8-device
training equal to 1 device."""
import importlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from segjax.models import get_model

ratt = get_model("recurrent_attention")
TINY = dict(name="recurrent_attention", fcn_channels=(8, 16), num_steps=2, box_channels=(8, 16), lstm_features=32,
            num_glimpses=2, patch_size=8, seg_channels=(8, 16), sampling_offset=40, sampling_period=40)
# Four 10 x 10 squares at pairwise disjoint places, two per image, each its own colour.
SQUARES = [[(2, 2), (2, 18)], [(18, 4), (18, 20)]]


def _config(**overrides):
  config = ml_collections.ConfigDict(TINY)
  config.update(overrides)
  return config


def _batch(counts, size=32, slots=2, places=SQUARES):
  b = len(counts)
  masks = np.zeros((b, slots, size, size), np.uint8)
  images = np.zeros((b, size, size, 3), np.float32)
  for i, n in enumerate(counts):
    for k in range(n):
      y, x = places[i % len(places)][k]
      masks[i, k, y:y + 10, x:x + 10] = 1
      images[i, y:y + 10, x:x + 10] = (0.9, 0.3 + 0.5 * k, 0.2 + 0.3 * i)
  valid = np.arange(slots)[None, :] < np.asarray(counts)[:, None]
  return {"image": images, "masks": masks, "instance_valid": valid, "is_crowd": np.zeros((b, slots), bool)}


def _trainer(config, module, optimizer, traces=None):
  @jax.jit
  def step(state, batch, rng):
    if traces is not None:
      traces.append(1)  # runs once per trace
    params, batch_stats, opt_state = state

    def objective(params):
      outputs, updates = module.apply({"params": params, "batch_stats": batch_stats}, batch["image"], train=True,
                                      mutable=["batch_stats"], rngs={"sampling": rng},
                                      targets={k: batch[k] for k in ratt.FORWARD_KEYS})
      value, terms = ratt.loss(outputs, batch, config)
      return value, (terms, updates["batch_stats"])

    (_, (terms, batch_stats)), grads = jax.value_and_grad(objective, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), batch_stats, opt_state), terms

  return step


def test_unknown_key_is_named():
  with pytest.raises(ValueError, match="config.model.lstm_size"):
    ratt.build(_config(lstm_size=3), None)


@pytest.mark.parametrize("key", ["box_pad_noise", "box_centre_noise"])
def test_negative_jitter_is_named(key):
  with pytest.raises(ValueError, match=f"config.model.{key}"):
    ratt.build(_config(**{key: -0.1}), None)


def test_ground_truth_box_parameters_give_the_tight_box():
  batch = _batch([2, 1])
  params = ratt.box_parameters(jnp.asarray(batch["masks"], jnp.float32))
  boxes = np.asarray(ratt.box_masks(params, 32, 32))
  np.testing.assert_array_equal(boxes[:, :1], batch["masks"][:, :1])
  np.testing.assert_array_equal(boxes[0, 1], batch["masks"][0, 1])
  np.testing.assert_allclose(np.asarray(params[0, 0]), [2 * 7 / 32 - 1, 2 * 7 / 32 - 1, np.log(10 / 32),
                                                        np.log(10 / 32)], rtol=1e-6)
  assert np.isfinite(np.asarray(params)).all() and boxes[1, 1].all()  # padding: the whole image


def test_padded_ground_truth_boxes_as_the_authors_get_gt_box():
  """padded_box_parameters against a NumPy port of renmengye/rec-attend-public modellib.py get_gt_box (commit
  1e5e8cf7ad18e0659cca665b7d8a4ec40d9f0ebc):
  the tight box (pixel edges [x1, x2 + 1)) moved by centre_shift x its size and widened by padding x its size on each
  side, then normalised as box_parameters (centre 2 g / size - 1, log(extent / size))."""
  batch = _batch([2, 1])
  masks = batch["masks"].astype(np.float32)
  padding = np.array([[[0.2], [0.1]], [[0.3], [0.0]]])
  shift = np.array([[[0.05, -0.05], [0.0, 0.02]], [[-0.03, 0.01], [0.0, 0.0]]])
  ours = np.asarray(ratt.padded_box_parameters(jnp.asarray(masks), padding, shift))
  for i in range(2):
    for k in range(int(batch["instance_valid"][i].sum())):
      ys, xs = np.nonzero(masks[i, k])
      top_left = np.array([xs.min(), ys.min()], np.float64)
      bottom_right = np.array([xs.max(), ys.max()], np.float64) + 1
      size = bottom_right - top_left
      top_left += shift[i, k] * size - padding[i, k] * size
      bottom_right += shift[i, k] * size + padding[i, k] * size
      expected = np.concatenate([(top_left + bottom_right) / 32 - 1, np.log((bottom_right - top_left) / 32)])
      np.testing.assert_allclose(ours[i, k], expected, rtol=1e-5, atol=1e-6)


def test_box_cnn_is_the_convolution_stack_over_the_concatenated_input():
  """The split first convolution (x_0 part once, canvas part per step) equals 3 x 3 convolutions, ReLU and 2 x 2 max
  pooling over [x_0, c] with the two kernels stacked along the input channels."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  x0 = jnp.asarray(rng.normal(size=(2, 16, 16, 5)), jnp.float32)
  canvas = jnp.asarray(rng.random((2, 16, 16, 1)), jnp.float32)
  module = ratt.BoxCNN((4, 6))
  variables = module.init(jax.random.key(0), jnp.zeros((2, 16, 16, 4)), canvas)
  variables["params"].update(module.init(jax.random.key(1), x0, method=module.image_part)["params"])
  variables["params"]["conv0"]["bias"] = jnp.asarray(rng.normal(size=4), jnp.float32)
  ours = module.apply(variables, module.apply(variables, x0, method=module.image_part), canvas)
  p = variables["params"]
  u = jnp.concatenate([x0, canvas], axis=-1)
  stack = [(jnp.concatenate([p["conv0"]["kernel"], p["conv0_canvas"]["kernel"]], axis=2), p["conv0"]["bias"]),
           (p["conv1"]["kernel"], p["conv1"]["bias"])]
  for kernel, bias in stack:
    u = nn.max_pool(nn.relu(jax.lax.conv_general_dilated(u, kernel, (1, 1), "SAME",
                                                         dimension_numbers=("NHWC", "HWIO", "NHWC")) + bias),
                    (2, 2), (2, 2))
  np.testing.assert_allclose(np.asarray(ours), np.asarray(u), rtol=1e-5, atol=1e-5)


def test_box_coordinates_are_pixel_centres_normalised_as_box_centres():
  """The channels box_coordinates adds are each pixel centre's (2 (a + 0.5) / W - 1, 2 (b + 0.5) / H - 1), the
  normalisation of the box centres g~ (box_parameters); the box CNN's first convolution reads them."""
  coords = np.asarray(ratt.coordinate_channels(4, 6))
  b, a = np.meshgrid(np.arange(4), np.arange(6), indexing="ij")
  np.testing.assert_allclose(coords, np.stack([2 * (a + 0.5) / 6 - 1, 2 * (b + 0.5) / 4 - 1], -1), atol=1e-6)
  mask = np.zeros((1, 1, 4, 6), np.float32)
  mask[0, 0, 1, 4] = 1  # the one-pixel box at (4, 1) has the centre of that pixel
  np.testing.assert_allclose(np.asarray(ratt.box_parameters(jnp.asarray(mask)))[0, 0, :2], coords[1, 4], atol=1e-6)
  config = _config(box_coordinates=True)
  variables = ratt.build(config, None).init(jax.random.key(0), _batch([1])["image"])
  plain = ratt.build(_config(), None).init(jax.random.key(0), _batch([1])["image"])
  assert (variables["params"]["box_cnn"]["conv0"]["kernel"].shape[2]
          == plain["params"]["box_cnn"]["conv0"]["kernel"].shape[2] + 2)


def test_content_attention_centres_the_box_on_the_last_glimpse():
  """With content_attention the box centre g~ is the last glimpse's expected position over the box CNN's map (in the
  normalisation of coordinate_channels) plus the box head's offset, and the first glimpse is not uniform."""
  config = _config(content_attention=True)
  module = ratt.build(config, None)
  images = _batch([2, 1])["image"]
  variables = module.init(jax.random.key(0), images)
  params = jax.tree.map(np.asarray, variables["params"])
  offset = np.array([0.1, -0.2], np.float32)
  params["box"]["bias"] = params["box"]["bias"].copy()
  params["box"]["bias"][:2] = offset
  params["box"]["kernel"] = np.random.default_rng(0).normal(0, 0.1, params["box"]["kernel"].shape).astype(np.float32)
  outputs, state = module.apply({**variables, "params": params}, images,
                                capture_intermediates=lambda m, _: m.name == "box_lstm")
  calls = state["intermediates"]["box_lstm"]["__call__"]
  assert len(calls) == config.num_steps
  for t, (z, attention) in enumerate(calls):
    weights = np.asarray(attention["weights"], np.float64)  # [B, glimpses, 8 * 8]
    assert np.abs(weights[:, 0] - 1 / 64).max() > 1e-4
    grid = np.asarray(ratt.coordinate_channels(8, 8), np.float64).reshape(-1, 2)
    regressed = np.asarray(z, np.float64) @ params["box"]["kernel"][:, :2] + offset
    np.testing.assert_allclose(np.asarray(outputs["box_params"][:, t, :2]), weights[:, -1] @ grid + regressed,
                               rtol=1e-5, atol=1e-5)


def test_the_fcn_learns_from_its_own_loss_only():
  """The FCN's maps are the box and segmentation networks' input, as a pretrained FCN's: Eq. 21 sends it no
  gradient, its own loss does."""
  config = _config()
  module = ratt.build(config, None)
  batch = _batch([2, 1])
  variables = module.init(jax.random.key(0), batch["image"])

  def fcn_grad_norm(fcn_weight):
    def objective(params):
      outputs = module.apply({"params": params, "batch_stats": variables["batch_stats"]}, batch["image"])
      return ratt.loss(outputs, batch, _config(fcn_weight=fcn_weight))[0]
    grads = jax.grad(objective)(variables["params"])["fcn"]
    return sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(grads))

  assert fcn_grad_norm(0.0) == 0.0
  assert fcn_grad_norm(1.0) > 0.0


def test_disable_overwrite_keeps_a_step_off_the_canvas():
  """With disable_overwrite (the authors' code), y_t = (1 - c_t) y_t: step 1's mask is the unmasked model's times
  1 - c_1, with c_1 = y_0 (the canvas is empty at step 0, so both models see the same inputs up to step 1); without
  it, the pixels already on the canvas keep their probability."""
  batch = _batch([2, 1])
  off = ratt.build(_config(), None)
  on = ratt.build(_config(disable_overwrite=True), None)
  variables = off.init(jax.random.key(0), batch["image"])
  y_off = np.asarray(off.apply(variables, batch["image"])["mask_probs"], np.float64)
  y_on = np.asarray(on.apply(variables, batch["image"])["mask_probs"], np.float64)
  np.testing.assert_allclose(y_on[:, 0], y_off[:, 0], rtol=1e-6)
  np.testing.assert_allclose(y_on[:, 1], y_off[:, 1] * (1 - y_off[:, 0]), rtol=1e-5, atol=1e-7)
  assert np.abs(y_on[:, 1] - y_off[:, 1]).max() > 0.1


@pytest.mark.parametrize("time_scale", [False, True])
def test_sampling_probabilities_are_the_authors_knobs(time_scale):
  """theta per recurrent step as renmengye/rec-attend-public full_model.py (36deeac) computes gt_knob_prob_segm:
  tf.train.exponential_decay(1, max(step - offset, 0), period, 0.5), times 1 + log(1 + 3 t) with knob_use_timescale,
  capped at 1."""
  for step in (0, 150, 400, 1300):
    got = np.asarray(ratt.sampling_probabilities(step, 300, 200, 9, time_scale))
    base = 0.5 ** (max(step - 300, 0) / 200)
    scale = 1 + np.log(1 + 3.0 * np.arange(9)) if time_scale else np.ones(9)
    np.testing.assert_allclose(got, np.minimum(base * scale, 1.0), rtol=1e-6)
  late = np.asarray(ratt.sampling_probabilities(1300, 300, 200, 9, time_scale))
  assert (late[-1] > 2 * late[0]) == time_scale


@pytest.mark.parametrize("pad_noise, centre_noise", [(0.0, 0.0), (0.15, 0.1)])
def test_the_glimpse_reads_the_matched_ground_truth_boxes_while_theta_box_is_one(pad_noise, centre_noise):
  """With box_sampling_offset beyond the step counter (theta_box = 1), each step while an instance is left reads a
  distinct valid instance's box: its centre within box_centre_noise of the extent of the padded box's, its extent
  padded by box_padding +- box_pad_noise per side; later steps read their own box. Sampling off (offset -1): every
  step reads its own box."""
  config = _config(num_steps=3, box_padding=0.2, box_pad_noise=pad_noise, box_centre_noise=centre_noise,
                   box_sampling_offset=10**6)
  module = ratt.build(config, None)
  batch = _batch([2, 1], slots=2)
  variables = module.init(jax.random.key(0), batch["image"])
  targets = {k: batch[k] for k in ratt.FORWARD_KEYS}
  outputs, _ = module.apply(variables, batch["image"], train=True, targets=targets, mutable=["batch_stats"],
                            rngs={"sampling": jax.random.key(3)})
  glimpse, own = np.asarray(outputs["glimpse_params"]), np.asarray(outputs["box_params"])
  tight = np.asarray(ratt.box_parameters(jnp.asarray(batch["masks"], jnp.float32)))
  for i, n in enumerate((2, 1)):
    picked = []
    for t in range(n):
      gaps = np.abs(glimpse[i, t, :2] - tight[i, :n, :2]) / (2 * np.exp(tight[i, :n, 2:]))  # in extents
      padding = (np.exp(glimpse[i, t, 2:] - tight[i, :n, 2:]) - 1) / 2
      fits = ((gaps <= centre_noise + 1e-5) & (np.abs(padding - 0.2) <= pad_noise + 1e-5)).all(axis=1)
      assert fits.sum() == 1, (i, t, gaps, padding)
      picked.append(int(np.argmax(fits)))
    assert sorted(picked) == list(range(n))
    np.testing.assert_array_equal(glimpse[i, n:], own[i, n:])
  off = ratt.build(_config(num_steps=3, box_padding=0.2), None)
  outputs, _ = off.apply(variables, batch["image"], train=True, targets=targets, mutable=["batch_stats"],
                         rngs={"sampling": jax.random.key(3)})
  np.testing.assert_array_equal(np.asarray(outputs["glimpse_params"]), np.asarray(outputs["box_params"]))


def test_fixed_order_takes_the_instances_largest_first():
  """With fixed_order (the authors' option; their data sets sort the instances by area, largest first), step t's
  glimpse reads the t-th largest instance's box while theta_box = 1, and the loss assigns step t that instance in
  both matchings."""
  config = _config(num_steps=3, box_padding=0.2, box_pad_noise=0.0, box_centre_noise=0.0, box_sampling_offset=10**6,
                   fixed_order=True)
  module = ratt.build(config, None)
  batch = _batch([2, 2], slots=3)
  batch["masks"][0, 0, 2:7, 2:7] = 0  # image 0's first square loses a corner: its second is the larger
  variables = module.init(jax.random.key(0), batch["image"])
  outputs, _ = module.apply(variables, batch["image"], train=True, targets={k: batch[k] for k in ratt.FORWARD_KEYS},
                            mutable=["batch_stats"], rngs={"sampling": jax.random.key(3)})
  want = np.asarray(ratt.padded_box_parameters(jnp.asarray(batch["masks"], jnp.float32), 0.2))
  glimpse = np.asarray(outputs["glimpse_params"])
  np.testing.assert_allclose(glimpse[0, :2], want[0, [1, 0]], atol=1e-5)
  np.testing.assert_allclose(glimpse[1, :2], want[1, [0, 1]], atol=1e-5)  # equal areas: by index
  np.testing.assert_array_equal(glimpse[:, 2], np.asarray(outputs["box_params"])[:, 2])
  _, terms = ratt.loss(outputs, batch, config)
  masks = np.asarray(batch["masks"], np.float64).reshape(2, 3, -1)
  probs = np.asarray(outputs["mask_probs"], np.float64).reshape(2, 3, -1)
  def iou(p, y):
    return (p * y).sum() / ((p + y - p * y).sum())
  want_mask_iou = -np.mean([(iou(probs[0, 0], masks[0, 1]) + iou(probs[0, 1], masks[0, 0])) / 2,
                            (iou(probs[1, 0], masks[1, 0]) + iou(probs[1, 1], masks[1, 1])) / 2])
  np.testing.assert_allclose(float(terms["loss_mask_iou"]), want_mask_iou, rtol=1e-4)


def test_one_compile_for_any_instance_count_and_the_sampling_step_counts():
  config = _config(fcn_channels=(8,), num_glimpses=1)
  module = ratt.build(config, None)
  variables = module.init(jax.random.key(0), _batch([1, 1])["image"])
  optimizer = optax.adam(1e-3)
  state = (variables["params"], variables["batch_stats"], optimizer.init(variables["params"]))
  traces = []
  step = _trainer(config, module, optimizer, traces)
  for i, counts in enumerate(([0, 2], [1, 1], [2, 0])):
    state, terms = step(state, _batch(counts), jax.random.key(i))
  assert len(traces) == 1
  assert int(state[1]["sampling_step"]) == 3
  assert all(np.isfinite(float(v)) for v in terms.values())
  outputs = module.apply({"params": state[0], "batch_stats": state[1]}, _batch([2, 1])["image"], train=False)
  predictions = jax.device_get(ratt.predict(outputs, config))
  assert predictions["masks"].shape == (2, 2, 32, 32) and predictions["boxes"].shape == (2, 2, 4)
  assert predictions["labels"].dtype == np.int32 and predictions["valid"].dtype == bool


@pytest.mark.slow
def test_segments_its_training_batch_better_than_any_image_blind_predictor():
  """The mean matched soft IoU of the model's own masks (no ground truth in the canvas) on its training batch
  must exceed what any predictor blind to the image reaches. A blind predictor's step t emits the same mask M_t in
  both images; the four squares are pairwise disjoint, so the instances a step is matched to are disjoint and
  sum_j IoU(M_t, Y_j) <= sum_j <M_t, Y_j> / |M_t| <= 1 (the union is at least |M_t| >= sum_j <M_t, Y_j>):
  with T = 2 steps the 4 matched IoUs sum to at most 2, a mean of at most 0.5."""
  config = _config()
  module = ratt.build(config, None)
  batch = _batch([2, 2])
  variables = module.init(jax.random.key(0), batch["image"])
  optimizer = optax.adam(3e-3)
  state = (variables["params"], variables["batch_stats"], optimizer.init(variables["params"]))
  step = _trainer(config, module, optimizer)
  for i in range(500):
    state, _ = step(state, batch, jax.random.key(i))
  outputs = module.apply({"params": state[0], "batch_stats": state[1]}, batch["image"], train=False)
  _, terms = ratt.loss(outputs, batch, config)
  assert -float(terms["loss_mask_iou"]) > 0.5 + 0.1, terms
  predictions = jax.device_get(ratt.predict(outputs, config))
  assert predictions["valid"].sum(1).tolist() == [2, 2]


@pytest.mark.slow
def test_eight_device_training_gives_the_losses_of_one_device():
  from segjax.train import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from segjax.train.state import TrainState  # pylint: disable=g-import-not-at-top
  from segjax.train.steps import make_train_step  # pylint: disable=g-import-not-at-top
  assert jax.device_count() == 8
  config = _config(sampling_offset=1, sampling_period=2)  # theta: 1, 1, then 1 / sqrt(2) at the third step
  module = ratt.build(config, None)
  # 8 images per step with different instance counts, so each device sees its own targets.
  batches = [_batch([0, 2, 1, 2, 1, 0, 2, 1]), _batch([2, 2, 0, 1, 1, 2, 0, 2])]
  variables = jax.device_get(jax.jit(module.init)(jax.random.key(0), batches[0]["image"]))
  optimizer, schedule = optax.sgd(0.01, momentum=0.9), optax.constant_schedule(0.01)
  keys = ("loss", "loss_mask_iou", "loss_box_iou", "loss_box_coord", "loss_score", "loss_fcn")
  losses = {}
  for devices in (jax.devices()[:1], jax.devices()):
    mesh = mesh_lib.make_mesh(devices)
    state = jax.device_put(TrainState.create(variables, optimizer), mesh_lib.replicated(mesh))
    shardings = jax.tree.map(lambda _: mesh_lib.replicated(mesh), state)
    step = make_train_step(module, ratt, config, optimizer, schedule, mesh, shardings)
    losses[len(devices)] = []
    for i, batch in enumerate(batches + batches[:1]):
      state, metrics = step(state, jax.device_put(batch, mesh_lib.batch_sharding(mesh)), jax.random.key(i))
      losses[len(devices)].append([float(metrics[k]) for k in keys])
    assert int(jax.device_get(state.batch_stats["sampling_step"])) == 3
  assert np.all(np.array(losses[1])[:, 1] < 0)  # instances were matched: the mask term is exercised
  np.testing.assert_allclose(losses[8], losses[1], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["recurrent_attention_cvppp", "recurrent_attention_cityscapes",
                                  "demo_recurrent_attention"])
def test_experiment_configs_build(name):
  config = importlib.import_module(f"experiments.{name}").get_config()
  assert config.model.num_steps >= config.dataset.max_instances
  config.model.num_steps = 2  # every step is the same network; tracing 2 checks the shapes
  module = ratt.build(config.model, None)
  h, w = config.dataset.image_size
  image = jax.ShapeDtypeStruct((1, h, w, 3), jnp.float32)
  shapes = jax.eval_shape(lambda x: module.init(jax.random.key(0), x), image)
  assert "sampling_step" in shapes["batch_stats"]
