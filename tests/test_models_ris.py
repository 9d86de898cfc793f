"""Recurrent Instance Segmentation: the prediction contract, one compile for any instance count, a model that
learns to emit one instance per step on a fixed batch (at the ConvLSTM's stride 8 and with the stride-4 masks refined
by the trunk's C2), the stride-4 loss and masks against the ground truth, and the mask-quality scores vs NumPy."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from segjax.models import get_model
from segjax.ops.crf import dense_crf
from train_util import counting_jit

ris = get_model("ris")


def _config(**overrides):
  config = ml_collections.ConfigDict(dict(name="ris", depth=18, width=8, norm="batch", num_steps=5,
                                          lstm_features=16, lstm_layers=1))
  config.update(overrides)
  return config


def _batch(counts, size=32, slots=3, squares=((0, 0, 16), (0, 16, 16), (16, 8, 16))):
  """Squares (top, left, side) on the 8-pixel grid of the stride-8 mask logits (so a perfect mask is reachable),
  `counts[b]` of them in image b."""
  b = len(counts)
  masks = np.zeros((b, slots, size, size), np.uint8)
  images = np.zeros((b, size, size, 3), np.float32)
  for i, n in enumerate(counts):
    for k in range(n):
      y, x, side = squares[k]
      masks[i, k, y:y + side, x:x + side] = 1
      images[i, y:y + 16, x:x + 16] = (0.2 + 0.3 * k, 0.8, 0.5)
  valid = np.arange(slots)[None, :] < np.asarray(counts)[:, None]
  return {"image": jnp.asarray(images), "masks": jnp.asarray(masks), "instance_valid": jnp.asarray(valid),
          "is_crowd": jnp.zeros((b, slots), bool)}


def test_unknown_key_is_named():
  try:
    ris.build(_config(lstm_size=3), None)
  except ValueError as e:
    assert "config.model.lstm_size" in str(e)
  else:
    raise AssertionError("an unknown key was accepted")


def _train_step(module, config, optimizer):
  @counting_jit
  def step(state, batch):
    params, batch_stats, opt_state = state

    def objective(params):
      outputs, updates = module.apply({"params": params, "batch_stats": batch_stats}, batch["image"], train=True,
                                      mutable=["batch_stats"])
      value, terms = ris.loss(outputs, batch, config)
      return value, (terms, updates["batch_stats"])

    (value, (terms, batch_stats)), grads = jax.value_and_grad(objective, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), batch_stats, opt_state), terms

  return step


def _init(module, batch, optimizer):
  variables = module.init(jax.random.key(0), batch["image"])
  return variables["params"], variables["batch_stats"], optimizer.init(variables["params"])


def test_trains_without_recompiling_and_learns_the_instances():
  config = _config()
  module = ris.build(config, None)
  batch = _batch([2, 1])
  optimizer = optax.adam(3e-3)
  state = _init(module, batch, optimizer)
  step = _train_step(module, config, optimizer)
  for counts in ([0, 3], [1, 1]):  # other instance counts: the same program
    state, _ = step(state, _batch(counts))
  for _ in range(150):
    state, terms = step(state, batch)
  assert step.traces == 1
  # loss_iou is minus the matched relaxed IoU summed per image, averaged over the 2 images: 3 instances in all,
  # so a mean IoU above 0.75 (chance, a mask spread over the image, gives about 1/4) puts it below -1.125.
  assert float(terms["loss_iou"]) < -1.125, terms
  outputs = module.apply({"params": state[0], "batch_stats": state[1]}, batch["image"], train=False)
  predictions = jax.device_get(ris.predict(outputs, config))
  assert predictions["masks"].shape == (2, 5, 32, 32) and predictions["labels"].dtype == np.int32
  assert predictions["valid"].sum(1).tolist() == [2, 1]


def test_stride_4_masks_learn_what_stride_8_cannot_draw():
  """A 4-pixel-wide bar per image, next to the border: rows 4..7 of one image, columns 24..27 of the other. Stride-8
  masks upsampled bilinearly (half-pixel centres: cell centres at 3.5, 11.5, 19.5, 27.5, the value clamped past
  the outer ones) are constant over rows 0..3 and linear over rows 3.5..11.5, so a mask above 1/2 on rows 4..7 of a
  column also is on rows 0..3 or on rows 8..11 (and likewise on columns 28..31 or 20..23): no stride-8 mask has
  an IoU above 1/2 with either bar. The refined stride-4 masks, trained on the two images, beat that bound."""
  config = _config(mask_stride=4, num_steps=3)
  module = ris.build(config, None)
  masks = np.zeros((2, 1, 32, 32), np.uint8)
  masks[0, 0, 4:8, 4:28] = 1
  masks[1, 0, 4:28, 24:28] = 1
  images = np.where(masks[:, 0, :, :, None] > 0, np.float32([0.9, 0.3, 0.2]), np.float32([0.2, 0.6, 0.3]))
  batch = {"image": jnp.asarray(images), "masks": jnp.asarray(masks), "instance_valid": jnp.ones((2, 1), bool),
           "is_crowd": jnp.zeros((2, 1), bool)}
  optimizer = optax.adam(3e-3)
  state = _init(module, batch, optimizer)
  step = _train_step(module, config, optimizer)
  for _ in range(150):
    state, _ = step(state, batch)
  outputs = module.apply({"params": state[0], "batch_stats": state[1]}, batch["image"], train=False)
  predicted = jax.device_get(ris.predict(outputs, config))["masks"][:, 0] > 0.5
  truth = masks[:, 0] > 0
  iou = (predicted & truth).sum((1, 2)) / (predicted | truth).sum((1, 2))
  assert (iou > 0.7).all(), iou


# Squares on the 4-pixel grid, none on the 8-pixel one, none touching the border.
FOUR_PIXEL_SQUARES = ((4, 4, 12), (4, 20, 8), (20, 8, 8))


def test_stride_4_masks_reach_the_ground_truth():
  """Logits that are the ground truth at stride 4 (+-20) give a relaxed IoU of 1 per instance in the loss, and
  predict's masks at the input size are the ground truth but for each square's 4 corner pixels: the loss and the
  upsampling use the same 4 x 4 cells, and bilinear upsampling by 4 (half-pixel centres) gives a pixel next to a cell
  edge 5/8 of its own cell's probability and 3/8 of its neighbour's, so a corner pixel (5/8)^2 < 1/2."""
  config = _config(mask_stride=4)
  batch = _batch([3, 2], squares=FOUR_PIXEL_SQUARES)
  masks = np.asarray(batch["masks"], np.float32)
  cells = masks.reshape(2, 3, 8, 4, 8, 4).mean((3, 5))  # exact: every square covers whole 4 x 4 cells
  assert set(np.unique(cells)) == {0.0, 1.0}
  steps = np.zeros((2, 5, 8, 8), np.float32)
  steps[:, :3] = cells
  outputs = {"mask_logits": jnp.asarray(40 * steps - 20),
             "score_logits": jnp.asarray(np.where(np.arange(5)[None] < np.array([[3], [2]]), 20.0, -20.0))}
  _, terms = ris.loss(outputs, batch, config)
  np.testing.assert_allclose(float(terms["loss_iou"]), -(3 + 2) / 2, rtol=1e-5)
  predictions = jax.device_get(ris.predict(outputs, config))
  assert predictions["masks"].shape == (2, 5, 32, 32)
  assert predictions["valid"].sum(1).tolist() == [3, 2]
  expected = masks > 0.5
  for i, n in enumerate([3, 2]):
    for k, (y, x, side) in enumerate(FOUR_PIXEL_SQUARES[:n]):
      expected[i, k, [y, y, y + side - 1, y + side - 1], [x, x + side - 1, x, x + side - 1]] = False
  np.testing.assert_array_equal(predictions["masks"][:, :3] > 0.5, expected)


def test_mask_scoring_multiplies_the_confidence_by_the_mask_quality():
  """scores = s_t x the mean probability over the mask's pixels above mask_threshold, against NumPy on the masks
  predict returns; without mask_scoring they are s_t."""
  rng = np.random.default_rng(0)
  outputs = {"mask_logits": jnp.asarray(rng.normal(0, 3, (2, 5, 8, 8)), jnp.float32),
             "score_logits": jnp.asarray(rng.normal(2, 2, (2, 5)), jnp.float32)}
  plain = jax.device_get(ris.predict(outputs, _config(mask_stride=4)))
  scored = jax.device_get(ris.predict(outputs, _config(mask_stride=4, mask_scoring=True)))
  np.testing.assert_array_equal(plain["valid"], scored["valid"])
  confidence = 1 / (1 + np.exp(-np.asarray(outputs["score_logits"], np.float64)))
  np.testing.assert_allclose(plain["scores"], np.where(plain["valid"], confidence, 0), rtol=1e-6)
  masks = np.asarray(scored["masks"], np.float64)
  above = masks > 0.5
  quality = np.where(above, masks, 0).sum((2, 3)) / np.maximum(above.sum((2, 3)), 1)
  assert plain["valid"].any() and (quality[plain["valid"]] < 1).all()
  np.testing.assert_allclose(scored["scores"], np.where(plain["valid"], confidence * quality, 0), rtol=1e-5)


def test_mask_quality_matches_numpy():
  rng = np.random.default_rng(1)
  masks = rng.uniform(0, 1, (3, 4, 6, 6)).astype(np.float32)
  masks[0, 0] = 0.2  # nothing above the threshold: quality 0
  expected = [[np.mean(m[m > 0.6]) if (m > 0.6).any() else 0.0 for m in row] for row in masks]
  np.testing.assert_allclose(ris.mask_quality(jnp.asarray(masks), 0.6), expected, rtol=1e-6)


def test_crf_refinement_is_densecrf_on_each_steps_mask_and_reaches_the_colour_edges():
  """With crf.num_iterations > 0 the evaluation outputs hold every step's mask refined by a two-label DenseCRF over
  the image (unaries: the mask's log odds), which predict uses: equal to segjax.ops.crf.dense_crf called per step on
  the same unaries (itself checked against pydensecrf), and a mask that covers half of a uniformly coloured square
  and leaks onto the background grows to the square's edges."""
  config = _config(mask_stride=4, crf={"num_iterations": 10, "w_bilateral": 20.0, "theta_alpha": 40.0})
  module = ris.build(config, None)
  images = np.zeros((1, 32, 32, 3), np.float32) + np.float32([0.2, 0.6, 0.3])
  images[0, 8:24, 8:24] = (0.9, 0.2, 0.2)
  variables = module.init(jax.random.key(0), jnp.asarray(images))
  outputs = module.apply(variables, jnp.asarray(images), train=False)
  masks = np.asarray(ris.input_size_masks(outputs["mask_logits"], 4))
  unary = np.log(np.clip(masks, 1e-4, 1 - 1e-4)) - np.log1p(-np.clip(masks, 1e-4, 1 - 1e-4))
  for t in range(masks.shape[1]):
    expected = dense_crf(jnp.stack([jnp.zeros((1, 32, 32)), jnp.asarray(unary[:, t])], -1), 255.0 * images,
                         **{k: v for k, v in config.crf.items()})[..., 1]
    np.testing.assert_allclose(outputs["crf_masks"][:, t], expected, atol=1e-5)
  assert "crf_masks" not in module.apply(variables, jnp.asarray(images), train=True, mutable=["batch_stats"])[0]

  square = np.zeros((1, 1, 32, 32), bool)
  square[0, 0, 8:24, 8:24] = True
  half = np.where(square, 0.45, 0.1).astype(np.float32)
  half[0, 0, 8:24, 8:16] = 0.9
  half[0, 0, 4:8, 8:16] = 0.6  # the leak onto the background
  refined = np.asarray(ris.refined_by_crf(jnp.asarray(half), jnp.asarray(images), dict(config.crf)))
  iou = lambda m: (m & square).sum() / (m | square).sum()
  assert iou(half > 0.5) < 0.5 and iou(refined > 0.5) == 1.0, (iou(half > 0.5), iou(refined > 0.5))
  confident = jnp.full((1, 5), 5.0)
  predictions = ris.predict({**outputs, "crf_masks": jnp.asarray(np.repeat(refined, 5, 1)), "score_logits": confident},
                            config)
  np.testing.assert_array_equal(np.asarray(predictions["masks"])[0, 0] > 0.5, square[0, 0])


def test_inhibition_keeps_the_most_salient_region():
  """With inhibition the coarse mask logits are the shape channel s plus the salience channel z less its maximum over
  the map (per image and step), m(p) = s(p) + z(p) - max_q z(q): the model's mask logits against NumPy on its
  1 x 1 convolution's two channels."""
  config = _config(inhibition=True)
  module = ris.build(config, None)
  images = jnp.asarray(np.random.default_rng(0).uniform(0, 1, (2, 32, 32, 3)), jnp.float32)
  variables = module.init(jax.random.key(0), images)
  outputs, state = module.apply(variables, images, capture_intermediates=True)
  channels = np.asarray(state["intermediates"]["mask"]["__call__"][0], np.float64)
  assert channels.shape == (2, 5, 4, 4, 2)
  shape, salience = channels[..., 0], channels[..., 1]
  expected = shape + salience - salience.max(axis=(2, 3), keepdims=True)
  logits = np.asarray(outputs["mask_logits"])
  np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
  assert (logits <= shape + 1e-5).all() and np.isclose(logits, shape, atol=1e-6).any(axis=(2, 3)).all()


def test_matrix_nms_decays_a_step_that_segments_an_instance_again():
  """nms "matrix": a step whose mask repeats a higher-scored step's (IoU 1, that step undecayed) keeps
  exp(-sigma x 1^2) of its score (SOLOv2 Eq. 4), a step on another region keeps all of it; the steps stay in order."""
  logits = np.full((1, 4, 4, 4), -8.0, np.float32)
  logits[0, 0, :2, :2] = logits[0, 2, :2, :2] = 8.0  # steps 0 and 2: the same square
  logits[0, 1, 2:, 2:] = logits[0, 3, 2:, :2] = 8.0  # steps 1 and 3: two others
  outputs = {"mask_logits": jnp.asarray(logits), "score_logits": jnp.asarray([[3.0, 2.0, 1.0, 0.5]])}
  config = _config(mask_stride=8, score_threshold=0.0)
  plain = np.asarray(ris.predict(outputs, config)["scores"])[0]
  decayed = np.asarray(ris.predict(outputs, _config(mask_stride=8, score_threshold=0.0, nms="matrix",
                                                    nms_sigma=1.5))["scores"])[0]
  np.testing.assert_allclose(decayed, plain * np.array([1, 1, np.exp(-1.5), 1]), rtol=1e-5)


def test_unknown_nms_is_named():
  with pytest.raises(ValueError, match="config.model.nms"):
    ris.build(_config(nms="soft"), None)
