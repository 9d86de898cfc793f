"""Boundary-aware instance segmentation (Hayder et al. 2017) on Mask R-CNN: the RoI targets equal a float64 NumPy
resampling and encoding of the ground truth, decoding them gives the RoI mask back and keeps the part of the
object past a box that cuts it, the loss equals a NumPy per-bin cross entropy, the soft decoder's cross entropy
equals NumPy's and alone fits free maps to a mask cut by the grid, config errors name their key, and a tiny model
trains without recompiling across instance counts and predicts Mask R-CNN's detection contract."""
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from scipy import ndimage

from segjax.models import boundary_aware, get_model
from segjax.evaluation.instance import to_source_image
from segjax.ops.boundary import decode_boundary_aware, decode_roi_masks, disk_evidence, roi_boundary_targets
from train_util import counting_jit

INFO = ml_collections.ConfigDict({"num_thing_classes": 2})


def _numpy_roi_align(mask, roi, m):
  """torchvision's roi_align of one [H, W] map (csrc/ops/cpu/roi_align_kernel.cpp, v0.29.1: aligned=False,
  spatial_scale 1, sampling_ratio -1, i.e. ceil(side / m) samples per bin), in float64: what
  project_masks_on_boxes (torchvision/models/detection/roi_heads.py) makes Mask R-CNN's targets with."""
  height, width = mask.shape
  x1, y1, x2, y2 = (float(v) for v in roi)
  roi_w, roi_h = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
  bin_w, bin_h = roi_w / m, roi_h / m
  grid_w, grid_h = math.ceil(roi_w / m), math.ceil(roi_h / m)

  def bilinear(y, x):
    if y < -1.0 or y > height or x < -1.0 or x > width:
      return 0.0
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
      y_low = y_high = height - 1
      y = float(y_low)
    else:
      y_high = y_low + 1
    if x_low >= width - 1:
      x_low = x_high = width - 1
      x = float(x_low)
    else:
      x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    return ((1 - ly) * (1 - lx) * mask[y_low, x_low] + (1 - ly) * lx * mask[y_low, x_high]
            + ly * (1 - lx) * mask[y_high, x_low] + ly * lx * mask[y_high, x_high])

  out = np.zeros((m, m))
  for i in range(m):
    for j in range(m):
      total = sum(bilinear(y1 + i * bin_h + (iy + 0.5) * bin_h / grid_h, x1 + j * bin_w + (ix + 0.5) * bin_w / grid_w)
                  for iy in range(grid_h) for ix in range(grid_w))
      out[i, j] = total / (grid_h * grid_w)
  return out


def _numpy_encoding(mask, truncation, num_bins):
  """The paper's K binary maps (Sec. 3.1) from SciPy's exact distance transform: D = min(ceil(EDT to the nearest
  outside pixel), R), the grid's border not outside (the box may cut the object); bin n holds the distances
  1 + floor(n R / K) .. floor((n + 1) R / K)."""
  padded = np.pad(mask, truncation + 1, constant_values=True)
  edt = ndimage.distance_transform_edt(padded)[truncation + 1:-truncation - 1, truncation + 1:-truncation - 1]
  d = np.where(mask, np.minimum(np.ceil(edt), truncation), 0)
  lower = [1 + (n * truncation) // num_bins for n in range(num_bins + 1)]
  return np.stack([(d >= lower[n]) & (d < lower[n + 1]) for n in range(num_bins)])


def _masks_and_rois(seed):
  """Random blobs [3, 40, 48] (holes, thin parts) and RoIs of random float corners. The RoIs stay off the image's
  last row and column, where clamped samples read whole pixels and a bin's mean can be 0.5 exactly (the side of the
  binarisation threshold would then hang on rounding)."""
  rng = np.random.default_rng(seed)
  noise = ndimage.gaussian_filter(rng.normal(size=(3, 40, 48)), (0, 3, 3))
  masks = noise > 0.1 * noise.std()
  xy = rng.uniform(0.5, 12, (6, 2))
  rois = np.concatenate([xy, xy + rng.uniform(8, 26, (6, 2))], 1).astype(np.float32)
  return masks, rois, rng.integers(0, 3, 6).astype(np.int32)


@pytest.mark.parametrize("m,truncation,num_bins", [(14, 5, 5), (10, 6, 3)])
def test_roi_targets_equal_numpy_resampled_encoding_and_decode_back(m, truncation, num_bins):
  masks, rois, matched = _masks_and_rois(m)
  targets = np.asarray(jax.jit(roi_boundary_targets, static_argnums=(3, 4, 5))(
      masks, rois, matched, m, truncation, num_bins))
  assert targets.shape == (6, num_bins, m, m)
  for i in range(6):
    resampled = _numpy_roi_align(masks[matched[i]].astype(np.float64), rois[i], m)
    assert np.abs(resampled - 0.5).min() > 1e-4  # float32 and float64 agree on the side of 0.5
    roi_mask = resampled >= 0.5
    assert 0 < roi_mask.sum() < m * m  # RoIs with inside and outside cells
    np.testing.assert_array_equal(targets[i], _numpy_encoding(roi_mask, truncation, num_bins))
    np.testing.assert_array_equal(np.asarray(decode_boundary_aware(targets[i], truncation)), roi_mask)
  assert all(targets[:, n].any() for n in range(num_bins))  # every bin is exercised


def test_a_mask_past_the_box_survives_decoding_and_pasting():
  """A rectangle the box cuts on its right: the targets' maps, as confident logits, decode and paste into the image
  with the object's pixels just right of the box set and none off the object."""
  height, width, m, r, k = 48, 64, 28, 5, 5
  gt = np.zeros((1, height, width), bool)
  gt[0, 10:40, 8:50] = True
  box = np.asarray([[4.0, 6.0, 30.0, 44.0]], np.float32)  # x2 = 30 cuts the object; the others lie off it
  targets = roi_boundary_targets(jnp.asarray(gt), box, np.zeros(1, np.int32), m, r, k)
  logits = jnp.where(targets, 20.0, -20.0)
  masks, decoded, region = jax.jit(decode_roi_masks, static_argnums=(2, 3, 4))(logits, box, r, height, width)
  masks, decoded = np.asarray(masks[0]), np.asarray(decoded[0])
  assert decoded.shape == (m + 2 * r, m + 2 * r)
  # Cells of the box's grid are 26 / 28 pixels wide. Rows 15..35 lie over 5 cells from the object's top and bottom,
  # so their last cells in the box have D = R: disks of radius R - 1 = 4 cells (3.7 pixels) past x2 = 30.
  assert (masks[15:35, 30:33] > 0.5).all()
  binary = masks > 0.5
  assert not (binary & ~ndimage.binary_dilation(gt[0])).any()  # nothing off the object (pasting's pixel aside)
  in_box = np.zeros_like(gt[0])
  in_box[7:43, 5:29] = True
  assert binary[ndimage.binary_erosion(gt[0]) & in_box].all()  # the object inside the box
  # The evaluators paste the decoded grid over the grown box (mask_boxes) at the source size: the same masks here.
  grown = np.asarray(region)
  np.testing.assert_allclose(grown, [[4 - 26 * r / m, 6 - 38 * r / m, 30 + 26 * r / m, 44 + 38 * r / m]], rtol=1e-6)
  _, source = to_source_image(box, masks[None], 1.0, (height, width), decoded[None].astype(np.float32), grown)
  np.testing.assert_allclose(source[0], masks, atol=1e-6)


def test_boundary_loss_equals_numpy_per_bin_cross_entropy():
  rng = np.random.default_rng(3)
  logits = rng.normal(0, 3, (2, 4, 5, 6, 6))
  targets = rng.uniform(size=logits.shape) < 0.3
  valid = np.asarray([[True, True, False, True], [False, True, False, False]])
  p = 1 / (1 + np.exp(-logits))
  bce = -(targets * np.log(p) + (1 - targets) * np.log(1 - p))  # per pixel and bin
  expected = bce.mean((-2, -1)).sum(-1)[valid].mean()  # each bin's grid mean, summed over bins, over valid RoIs
  got = boundary_aware.boundary_loss(jnp.asarray(logits, jnp.float32), jnp.asarray(targets, jnp.float32), valid)
  np.testing.assert_allclose(float(got), expected, rtol=1e-5)


def test_decoded_mask_loss_equals_numpy_cross_entropy():
  """The cross entropy of M = 1 - exp(-S) against 0 / 1 targets, per RoI over the grid, over the valid RoIs."""
  rng = np.random.default_rng(5)
  evidence = rng.uniform(0, 4, (2, 3, 8, 8))
  targets = rng.uniform(size=evidence.shape) < 0.4
  valid = np.asarray([[True, False, True], [False, True, True]])
  m = 1 - np.exp(-evidence)
  expected = (-(targets * np.log(m) + (1 - targets) * np.log(1 - m))).mean((-2, -1))[valid].mean()
  got = boundary_aware.decoded_mask_loss(jnp.asarray(evidence, jnp.float32), jnp.asarray(targets), valid)
  np.testing.assert_allclose(float(got), expected, rtol=1e-5)


def test_decoder_loss_alone_recovers_a_mask():
  """The soft decoder is differentiable end to end: free maps (logits [K, m, m], all -4 at first) fitted by Adam to
  the decoded-mask cross entropy alone decode (exactly, after the 0.5 threshold) to a disc cut by the grid's right
  edge, including its part past the grid, the case the representation exists for."""
  m, r, k = 16, 5, 5
  y, x = np.mgrid[:m + 2 * r, :m + 2 * r] - r + 0.5
  target = (x - 12) ** 2 + (y - 8) ** 2 < 7.5 ** 2  # centre 12, radius 7.5: reaches 3.5 cells past the grid
  optimizer = optax.adam(0.1)
  logits = jnp.full((k, m, m), -4.0)
  state = optimizer.init(logits)

  @jax.jit
  def step(logits, state):
    loss_fn = lambda z: boundary_aware.decoded_mask_loss(disk_evidence(z, r, pad=r)[None, None], target[None, None],
                                                         np.ones((1, 1), bool))
    value, grad = jax.value_and_grad(loss_fn)(logits)
    deltas, state = optimizer.update(grad, state)
    return optax.apply_updates(logits, deltas), state, value

  for _ in range(300):
    logits, state, value = step(logits, state)
  decoded = np.asarray(decode_boundary_aware(np.asarray(logits) > 0, r, pad=r))
  iou = (decoded & target).sum() / (decoded | target).sum()
  assert iou > 0.9 and decoded[:, r + m:].sum() > 0.5 * target[:, r + m:].sum(), (iou, float(value))


def test_registered_and_bad_config_is_an_error_naming_the_key():
  assert get_model("boundary_aware") is boundary_aware and boundary_aware.TASK == "instance"
  for key, value, match in [("boundary_truncation", 3, "boundary_truncation"), ("boundary_bins", 0, "boundary_bins"),
                            ("boundary_bnis", 5, "boundary_bnis"), ("mask", False, "mask")]:
    config = boundary_aware.model_config()
    config[key] = value
    with pytest.raises(ValueError, match=match):
      boundary_aware.build(config, INFO)


def tiny_config(class_agnostic=False):
  config = boundary_aware.model_config()
  config.update({"depth": 18, "width": 8, "norm": "batch", "fpn_channels": 16, "representation_size": 64,
                 "mask_head_channels": 16, "anchor_sizes": ((8,), (16,), (32,), (64,), (128,)),
                 "rpn_pre_nms_top_n_train": 200, "rpn_post_nms_top_n_train": 100, "rpn_pre_nms_top_n_test": 100,
                 "rpn_post_nms_top_n_test": 50, "roi_batch_size_per_image": 32, "detections_per_image": 6,
                 "class_agnostic_mask": class_agnostic})
  return config


def _batch(num_instances, size=64, max_instances=4, seed=0):
  """Images with num_instances bright discs (class 1) and squares (class 2) and their padded ground truth."""
  rng = np.random.default_rng(seed)
  image = rng.uniform(0, 0.2, (2, size, size, 3)).astype(np.float32)
  boxes = np.zeros((2, max_instances, 4), np.float32)
  classes = np.zeros((2, max_instances), np.int32)
  masks = np.zeros((2, max_instances, size, size), np.uint8)
  ys, xs = np.mgrid[:size, :size] + 0.5
  for b in range(2):
    for i in range(num_instances):
      x, y = rng.integers(0, size - 24, 2)
      side = int(rng.integers(14, 24))
      disc = i % 2 == 0
      inside = ((xs - x - side / 2) ** 2 + (ys - y - side / 2) ** 2 < (side / 2) ** 2) if disc else (
          (xs >= x) & (xs < x + side) & (ys >= y) & (ys < y + side))
      boxes[b, i] = (x, y, x + side, y + side)
      classes[b, i] = 1 if disc else 2
      masks[b, i] = inside
      image[b, inside] = (0.9, 0.8, 0.1) if disc else (0.1, 0.7, 0.9)
  valid = np.arange(max_instances)[None].repeat(2, 0) < num_instances
  return {"image": image, "boxes": boxes, "classes": classes, "masks": masks,
          "is_crowd": np.zeros((2, max_instances), bool), "instance_valid": valid}


@pytest.mark.slow  # the detector's train step and predict compile
@pytest.mark.parametrize("decoder_loss_weight", [0.0, 1.0])
def test_tiny_model_trains_without_recompiling_and_predicts_the_instance_contract(decoder_loss_weight):
  """With decoder_loss_weight, the soft-decoded masks' targets are the RoI's mask targets on the grid grown by R
  cells (its centre M x M cells are the RoI's own grid), the step still compiles once and soft_decoding predicts the
  same contract."""
  config = tiny_config()
  config.decoder_loss_weight = decoder_loss_weight
  config.soft_decoding = bool(decoder_loss_weight)
  module = boundary_aware.build(config, INFO)
  batch = _batch(3)
  variables = module.init(jax.random.key(0), batch["image"], train=False)
  params = variables["params"]
  assert params["mask_head"]["mask_fcn_logits"]["kernel"].shape == (1, 1, 16, 3 * 5)  # K maps per class
  optimizer = optax.adam(2e-3)
  state = (params, variables["batch_stats"], optimizer.init(params))

  @counting_jit
  def step(state, batch, key):
    params, batch_stats, opt_state = state

    def loss_fn(params):
      outputs, updates = module.apply(
          {"params": params, "batch_stats": batch_stats}, batch["image"], train=True, mutable=["batch_stats"],
          rngs={"sampling": key}, targets={k: batch[k] for k in boundary_aware.FORWARD_KEYS})
      total, metrics = boundary_aware.loss(outputs, batch, config)
      return total, (updates, metrics, outputs)

    (_, (updates, metrics, outputs)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    deltas, opt_state = optimizer.update(grads, opt_state)
    return (optax.apply_updates(params, deltas), updates["batch_stats"], opt_state), metrics, outputs

  mask_losses, totals = [], []
  for i in range(12):
    state, metrics, outputs = step(state, batch, jax.random.key(i))
    mask_losses.append(float(metrics["loss_mask"]))
    totals.append(sum(float(v) for k, v in metrics.items() if k.startswith("loss_")))
  p = outputs["boundary_logits"].shape[1]
  assert outputs["boundary_logits"].shape == outputs["boundary_targets"].shape == (2, p, 5, 28, 28)
  targets = np.asarray(outputs["boundary_targets"])[np.asarray(outputs["mask_valid"])]
  assert targets.size and targets.sum(1).max() == 1  # positives hold object cells; the bins partition them
  if decoder_loss_weight:
    valid = np.asarray(outputs["mask_valid"])
    decoded_targets = np.asarray(outputs["decoded_targets"])[valid]
    assert outputs["decoded_evidence"].shape == outputs["decoded_targets"].shape == (2, p, 38, 38)
    decoded_centre = np.asarray(decode_boundary_aware(targets[0], 5, pad=5))
    assert (decoded_targets[:, 5:33, 5:33] == targets.any(1)).mean() > 0.99  # the RoI's grid, up to resampling
    np.testing.assert_array_equal(decoded_centre[5:33, 5:33], targets[0].any(0))
  if not decoder_loss_weight:  # the decoder's own learning: test_decoder_loss_alone_recovers_a_mask
    assert np.mean(totals[-3:]) < 0.7 * np.mean(totals[:3])
    assert np.mean(mask_losses[-3:]) < 0.85 * np.mean(mask_losses[:3])
  for count in (0, 4):  # no instances, and max_instances: the same program
    state, metrics, _ = step(state, _batch(count, seed=count), jax.random.key(100 + count))
    assert np.isfinite(float(metrics["loss_mask"]))
  assert step.traces == 1

  predict = jax.jit(lambda v, x: boundary_aware.predict(module.apply(v, x, train=False), config))
  outputs = predict({"params": state[0], "batch_stats": state[1]}, batch["image"])
  # Mask R-CNN's contract (segjax/models/__init__.py); the decoded grids are 28 + 2R cells over the grown boxes.
  assert {k: v.shape for k, v in outputs.items()} == {
      "boxes": (2, 6, 4), "scores": (2, 6), "labels": (2, 6), "masks": (2, 6, 64, 64), "valid": (2, 6),
      "mask_probabilities": (2, 6, 38, 38), "mask_boxes": (2, 6, 4)}
  valid = np.asarray(outputs["valid"])
  assert valid.any() and np.isfinite(outputs["masks"]).all()
  boxes, grown = np.asarray(outputs["boxes"])[valid], np.asarray(outputs["mask_boxes"])[valid]
  size = np.concatenate([boxes[:, 2:] - boxes[:, :2]] * 2, 1)
  np.testing.assert_allclose(grown, boxes + np.asarray([-1, -1, 1, 1]) * size * 5 / 28, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("name", ["boundary_aware_voc", "demo_boundary_aware"])
def test_experiment_configs_build(name):
  import importlib  # pylint: disable=g-import-not-at-top
  from segjax.train.optim import make_optimizer  # pylint: disable=g-import-not-at-top
  config = importlib.import_module(f"experiments.{name}").get_config()
  module = boundary_aware.build(config.model, ml_collections.ConfigDict({"num_thing_classes": 20}))
  shapes = jax.eval_shape(lambda x: module.init(jax.random.key(0), x), jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))
  assert shapes["params"]["mask_head"]["mask_fcn_logits"]["kernel"].shape[-1] == 21 * 5  # K = 5 maps per class
  jax.eval_shape(make_optimizer(config).init, shapes["params"])  # config.optimizer.frozen matches parameters
