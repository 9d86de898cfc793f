"""Fast R-CNN (Girshick 2015; segjax.models.fast_rcnn): VGG-16 conv5_3, RoI max pooling 7x7 of external proposals,
fc6/fc7, the multi-task loss, hierarchical sampling, truncated SVD of fc6/fc7, and the stand-in proposals."""
import types

import jax
import numpy as np
import optax
import pytest

from segjax.data import augment_detection
from segjax.models import fast_rcnn, get_model
from segjax.ops.roi import warp_regions
from train_util import counting_jit


def _tiny_config():
  config = fast_rcnn.model_config()
  config.update({"width": 8, "representation_size": 64, "box_head_dropout": 0.0, "detections_per_image": 10})
  return config


def _proposals(boxes, valid, count, seed):
  from segjax.data import proposals  # pylint: disable=g-import-not-at-top
  from segjax.data.tf_env import tf  # pylint: disable=g-import-not-at-top
  return proposals.stand_in_proposals(tf.constant(boxes), tf.constant(valid), (64, 64), count,
                                      tf.constant([seed, 0], tf.int64)).numpy()


def _batch(counts, size=64, m=4, num_proposals=96, seed=0):
  """Images with a bright square per object (class 1 yellow, 2 cyan), their padded boxes and stand-in proposals."""
  rng = np.random.default_rng(seed)
  n = len(counts)
  image = rng.uniform(0, 0.2, (n, size, size, 3)).astype(np.float32)
  boxes, classes, valid = np.zeros((n, m, 4), np.float32), np.zeros((n, m), np.int32), np.zeros((n, m), bool)
  for b, count in enumerate(counts):
    for i in range(count):
      x, y = rng.integers(0, size - 24, 2)
      side = int(rng.integers(12, 24))
      label = int(rng.integers(1, 3))
      boxes[b, i], classes[b, i], valid[b, i] = (x, y, x + side, y + side), label, True
      image[b, y:y + side, x:x + side] = (0.9, 0.8, 0.1) if label == 1 else (0.1, 0.8, 0.9)
  proposals = np.stack([_proposals(boxes[b], valid[b], num_proposals, seed * 10 + b) for b in range(n)])
  return {"image": image, "boxes": boxes, "classes": classes, "instance_valid": valid, "proposals": proposals,
          "proposal_valid": np.ones((n, num_proposals), bool)}


def test_registered_as_vgg16_on_conv5_with_the_pipelines_keys():
  assert get_model("fast_rcnn") is fast_rcnn and fast_rcnn.TASK == "detection"
  produced = set(augment_detection.output_signature((64, 64), 4, num_proposals=32))
  assert set(fast_rcnn.BATCH_KEYS) <= produced
  config = fast_rcnn.model_config()
  assert (config.roi_batch_size_per_image, config.roi_positive_fraction, config.roi_bg_iou_low) == (64, 0.25, 0.1)
  module = fast_rcnn.build(config, types.SimpleNamespace(num_thing_classes=20))
  shapes = jax.eval_shape(lambda x: module.init(jax.random.key(0), x), jax.ShapeDtypeStruct((1, 224, 224, 3),
                                                                                            np.float32))["params"]
  assert shapes["backbone"]["conv5_3"]["kernel"].shape == (3, 3, 512, 512) and "pool5" not in shapes["backbone"]
  assert shapes["box_head"]["fc6"]["kernel"].shape == (7 * 7 * 512, 4096)  # RoI max pool 7x7 of conv5_3
  assert shapes["box_head"]["fc7"]["kernel"].shape == (4096, 4096)
  assert shapes["box_head"]["cls_score"]["kernel"].shape == (4096, 21)
  assert shapes["box_head"]["bbox_pred"]["kernel"].shape == (4096, 84)
  assert set(shapes) == {"backbone", "box_head"}  # no RPN


def test_stand_in_proposals_hold_foreground_and_background_and_repeat_per_seed():
  from segjax.ops.boxes import box_iou  # pylint: disable=g-import-not-at-top
  boxes = np.array([[10, 12, 30, 40], [35, 30, 60, 50], [0, 0, 0, 0]], np.float32)
  valid = np.array([True, True, False])
  proposals = _proposals(boxes, valid, 200, 3)
  assert proposals.shape == (200, 4)
  np.testing.assert_array_equal(proposals, _proposals(boxes, valid, 200, 3))
  assert not np.allclose(proposals, _proposals(boxes, valid, 200, 4))
  assert (proposals >= 0).all() and (proposals <= 64).all() and (proposals[:, 2:] - proposals[:, :2] >= 1).all()
  best = np.asarray(box_iou(boxes[valid], proposals)).max(0)
  # Enough of each of Fast R-CNN's sampling classes for 16 foreground and 48 background RoIs per image.
  assert (best >= 0.5).sum() >= 16 and ((best >= 0.1) & (best < 0.5)).sum() >= 48
  empty = _proposals(boxes, np.zeros(3, bool), 50, 3)
  assert empty.shape == (50, 4) and (empty[:, 2:] - empty[:, :2] >= 1).all()


def test_multi_task_loss_is_log_loss_plus_smooth_l1_of_the_true_class():
  """Eq. 1-3 in float64 NumPy: mean over sampled RoIs of -log p_u + [u >= 1] sum_i smooth_L1(t^u_i - v_i)."""
  rng = np.random.default_rng(0)
  n, s, k = 2, 8, 3
  logits = rng.normal(size=(n, s, k))
  labels = rng.integers(0, k, (n, s))
  valid = rng.uniform(size=(n, s)) < 0.8
  positive = valid & (labels > 0)
  deltas, targets = rng.normal(size=(n, s, 4)) * 2, rng.normal(size=(n, s, 4))
  outputs = {"class_logits": logits.astype(np.float32), "roi_labels": labels, "roi_valid": valid,
             "roi_positive": positive, "box_deltas": deltas.astype(np.float32), "box_targets": targets.astype(
                 np.float32)}
  total, metrics = fast_rcnn.loss(outputs, None, fast_rcnn.model_config())
  log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  cls = -np.take_along_axis(log_p, labels[..., None], -1)[..., 0]
  d = np.abs(deltas - targets)
  loc = np.where(d < 1, 0.5 * d**2, d - 0.5).sum(-1)
  expected_cls, expected_loc = cls[valid].sum() / valid.sum(), loc[positive].sum() / valid.sum()
  np.testing.assert_allclose(float(metrics["loss_classifier"]), expected_cls, rtol=1e-5)
  np.testing.assert_allclose(float(metrics["loss_box_reg"]), expected_loc, rtol=1e-5)
  np.testing.assert_allclose(float(total), expected_cls + expected_loc, rtol=1e-5)


def test_truncated_svd_factors_give_the_error_of_the_discarded_singular_values():
  """Sec. 3.1: W ~ U_t Sigma_t V_t^T. Each left singular vector a_j of the kernel [in, out] (x K = sigma_j b_j) comes
  out of the rank-t pair exactly for j <= t and with error norm sigma_j for j > t; the whole kernel's error is the
  Frobenius norm of the discarded singular values (Eckart-Young), all from an independent float64 SVD."""
  from segjax.ops.truncated_svd import factor_kernel  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  kernel = (rng.normal(size=(60, 40)) * np.linspace(2, 0.01, 40)).astype(np.float32)
  a, sigma, _ = np.linalg.svd(kernel.astype(np.float64), full_matrices=False)
  first, second = factor_kernel(kernel, 12)
  assert first.shape == (60, 12) and second.shape == (12, 40)
  error = lambda x: np.linalg.norm(x @ kernel.astype(np.float64) - (x @ first.astype(np.float64)) @ second, axis=-1)
  np.testing.assert_allclose(error(a[:, :12].T), 0, atol=1e-4)
  np.testing.assert_allclose(error(a[:, 12:].T), sigma[12:], rtol=1e-3, atol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(kernel - first @ second), np.sqrt((sigma[12:] ** 2).sum()), rtol=1e-4)
  full_first, full_second = factor_kernel(kernel, 0)
  np.testing.assert_allclose(full_first @ full_second, kernel, atol=1e-5)


def test_truncated_svd_of_a_trained_head_at_full_rank_gives_its_outputs():
  """truncated_svd(params, t6, t7) with t the full ranks: the two-layer head's detections equal the original's;
  with a smaller fc6 rank the fc6 activations move by at most sigma_{t+1} times the RoI feature's norm."""
  config = _tiny_config()
  module = fast_rcnn.build(config, types.SimpleNamespace(num_thing_classes=2))
  batch = _batch((2, 3), num_proposals=32)
  inputs = {k: batch[k] for k in fast_rcnn.INPUT_KEYS}
  params = module.init(jax.random.key(0), batch["image"], **inputs)["params"]
  # Random biases and a larger box head so that detections pass the score threshold.
  params = jax.tree.map(lambda p: p * 30 if p.ndim == 2 and p.shape[-1] in (3, 12) else p, params)
  reference = module.apply({"params": params}, batch["image"], **inputs)
  fc6_in = params["box_head"]["fc6"]["kernel"].shape[0]
  full = fast_rcnn.truncated_svd(params, 64, 64)  # fc6 [3136, 64], fc7 [64, 64]: rank 64
  svd_config = _tiny_config()
  svd_config.update({"fc6_rank": 64, "fc7_rank": 64})
  svd_module = fast_rcnn.build(svd_config, types.SimpleNamespace(num_thing_classes=2))
  assert set(full["box_head"]) == {"fc6_sv", "fc6_u", "fc7_sv", "fc7_u", "cls_score", "bbox_pred"}
  out = svd_module.apply({"params": full}, batch["image"], **inputs)
  assert reference["valid"].sum() > 0
  np.testing.assert_array_equal(out["valid"], reference["valid"])
  np.testing.assert_allclose(out["scores"], reference["scores"], atol=1e-4)
  np.testing.assert_allclose(out["boxes"], reference["boxes"], atol=1e-2)
  # A smaller rank, on fc6's linear part: the bound of the (t+1)-th singular value.
  kernel = np.asarray(params["box_head"]["fc6"]["kernel"], np.float64)
  sigma = np.linalg.svd(kernel, compute_uv=False)
  small = fast_rcnn.truncated_svd(params, 16, 0)["box_head"]
  x = np.random.default_rng(1).normal(size=(20, fc6_in))
  approx = x @ np.asarray(small["fc6_sv"]["kernel"], np.float64) @ np.asarray(small["fc6_u"]["kernel"], np.float64)
  err = np.linalg.norm(x @ kernel - approx, axis=1)
  assert (err <= sigma[16] * np.linalg.norm(x, axis=1) * (1 + 1e-4)).all() and (err > 0).all()


@pytest.mark.parametrize("seed", [0])
def test_tiny_model_trains_without_recompiling_across_box_counts(seed):
  """2 images x 64 RoIs per step (Sec. 2.3): on a fixed batch the classifier's log loss falls well below that of the
  best image-blind classifier, and batches with other box counts (none, all) run the same compiled program."""
  config = _tiny_config()
  module = fast_rcnn.build(config, types.SimpleNamespace(num_thing_classes=2))
  batch = _batch((3, 2), seed=seed)
  variables = module.init(jax.random.key(seed), batch["image"])
  optimizer = optax.adam(2e-3)
  state = (variables["params"], optimizer.init(variables["params"]))

  @counting_jit
  def step(state, batch, key):
    params, opt_state = state
    sampling, dropout = jax.random.split(key)

    def loss_fn(params):
      outputs = module.apply({"params": params}, batch["image"], train=True, rngs={"sampling": sampling,
                                                                                 "dropout": dropout},
                             targets={k: batch[k] for k in fast_rcnn.FORWARD_KEYS},
                             **{k: batch[k] for k in fast_rcnn.INPUT_KEYS})
      value, metrics = fast_rcnn.loss(outputs, batch, config)
      return value, (metrics, outputs["roi_labels"])

    (value, (metrics, labels)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    deltas, opt_state = optimizer.update(grads, opt_state)
    return (optax.apply_updates(params, deltas), opt_state), value, metrics, labels

  classification, blind = [], []
  for i in range(60):
    state, value, metrics, labels = step(state, batch, jax.random.key(i))
    classification.append(float(metrics["loss_classifier"]))
    # The best image-blind classifier predicts the sample's label frequencies: its log loss is their entropy.
    frequencies = np.bincount(np.asarray(labels).ravel(), minlength=3) / labels.size
    blind.append(-np.sum(frequencies * np.log(np.maximum(frequencies, 1e-12))))
  # 25% foreground of 64 per image: 16 positives each (the stand-in proposals hold more than that).
  assert float(metrics["num_positive_rois"]) == 16
  # On 64x64 images conv5_3 is 4x4, so RoIs near IoU 0.5 pool alike and stay ambiguous: the loss stays well above 0.
  assert np.mean(classification[-5:]) < 0.75 * np.mean(blind[-5:]), (classification, blind)
  for counts in ((0, 0), (4, 4)):
    _, value, _, _ = step(state, _batch(counts, seed=sum(counts)), jax.random.key(99))
    assert np.isfinite(float(value))
  assert step.traces == 1


def test_detection_pipeline_gives_each_image_its_stand_in_proposals():
  """augment_detection.preprocess with num_proposals: proposals around the row's (warped) boxes, from the image id."""
  from segjax.data.tf_env import tf  # pylint: disable=g-import-not-at-top
  from segjax.ops.boxes import box_iou  # pylint: disable=g-import-not-at-top
  image = np.zeros((40, 60, 3), np.uint8)
  example = lambda image_id: {
      "image": tf.constant(image), "image_id": tf.constant(image_id, tf.int64),
      "objects": {"bbox": tf.constant([[30.0, 10, 50, 20]]), "label": tf.constant([2], tf.int32),
                  "difficult": tf.constant([False]), "truncated": tf.constant([False])}}
  run = lambda image_id, seed, train: augment_detection.preprocess(
      example(image_id), tf.constant([seed, 7], tf.int64), tf.constant(True), image_size=(64, 64), max_instances=2,
      train=train, scale_range=(0.8, 1.2), translate=0.2, num_proposals=64)
  out = run(3, 0, False)
  assert out["proposals"].shape == (64, 4) and out["proposal_valid"].numpy().all()
  np.testing.assert_array_equal(out["proposals"].numpy(), run(3, 5, False)["proposals"].numpy())
  assert not np.allclose(out["proposals"].numpy(), run(4, 0, False)["proposals"].numpy())
  for seed in range(3):  # training: the proposals follow the augmented box
    out = run(3, seed, True)
    best = np.asarray(box_iou(out["boxes"].numpy()[:1], out["proposals"].numpy()))[0]
    assert (best >= 0.5).sum() >= 8


def test_sppnet_is_zf5_conv5_with_a_spatial_pyramid_of_each_projected_window():
  """SPP-net (He et al. 2014, Sec. 4): fc7 of a proposal is fc7(fc6(SPP of its window on conv5)); conv5 has stride
  16 and Caffe's ceil-mode pooling sizes (224 -> conv1 112 -> pool1 57 -> conv2 29 -> pool2 15)."""
  from segjax.backbones.zf import ZF5  # pylint: disable=g-import-not-at-top
  from segjax.ops.image import normalize_images  # pylint: disable=g-import-not-at-top
  from segjax.ops.spp import project_boxes, region_pyramid_pool  # pylint: disable=g-import-not-at-top
  assert get_model("sppnet") is fast_rcnn
  config = fast_rcnn.model_config("sppnet")
  assert (config.backbone, config.roi_pooler, config.box_loss_weight) == ("zf5", "spp", 0.0)
  module = fast_rcnn.build(config, types.SimpleNamespace(num_thing_classes=20))
  shapes = jax.eval_shape(lambda x: module.init(jax.random.key(0), x), jax.ShapeDtypeStruct((1, 224, 224, 3),
                                                                                            np.float32))["params"]
  assert shapes["backbone"]["conv5"]["kernel"].shape == (3, 3, 384, 256)
  assert shapes["box_head"]["fc6"]["kernel"].shape == (50 * 256, 4096)  # 6x6 + 3x3 + 2x2 + 1x1 bins of 256
  conv5 = jax.eval_shape(lambda x: ZF5().init_with_output(jax.random.key(0), x)[0]["conv5"],
                         jax.ShapeDtypeStruct((1, 224, 224, 3), np.float32))
  assert conv5.shape == (1, 15, 15, 256)

  tiny = fast_rcnn.model_config("sppnet")
  tiny.update({"width": 12, "representation_size": 32})
  module = fast_rcnn.build(tiny, types.SimpleNamespace(num_thing_classes=2))
  batch = _batch((2, 1), num_proposals=16)
  variables = module.init(jax.random.key(0), batch["image"])
  features = fast_rcnn.roi_features(module, variables, batch["image"], batch["proposals"], batch["proposal_valid"])
  assert features.shape == (2, 16, 32)
  params = variables["params"]
  conv5 = ZF5(width=12).apply({"params": params["backbone"]}, normalize_images(
      batch["image"], tiny.pixel_mean, tiny.pixel_std))["conv5"]
  for i in range(2):
    cells = np.clip(np.asarray(project_boxes(batch["proposals"][i], 16)), 0, [conv5.shape[2] - 1,
                                                                              conv5.shape[1] - 1] * 2)
    x = np.asarray(region_pyramid_pool(conv5[i], cells), np.float64)
    for fc in ("fc6", "fc7"):
      x = np.maximum(x @ np.asarray(params["box_head"][fc]["kernel"]) + np.asarray(params["box_head"][fc]["bias"]), 0)
    np.testing.assert_allclose(features[i], x, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["fast_rcnn_vgg16_voc07", "sppnet_voc07", "rcnn_alexnet_voc07", "demo_fast_rcnn"])
def test_experiment_configs_build(name):
  """Each config builds its model, its frozen-parameter patterns match parameters, and its data give proposals."""
  import importlib  # pylint: disable=g-import-not-at-top
  from segjax.train.optim import make_optimizer  # pylint: disable=g-import-not-at-top
  config = importlib.import_module(f"experiments.{name}").get_config()
  assert config.dataset.detection and config.dataset.num_proposals > 0
  module = get_model(config.model.name).build(config.model, types.SimpleNamespace(num_thing_classes=20))
  shapes = jax.eval_shape(lambda x: module.init(jax.random.key(0), x), jax.ShapeDtypeStruct((1, 64, 64, 3),
                                                                                            np.float32))
  assert shapes["params"]["box_head"]["cls_score"]["kernel"].shape[-1] == 21
  jax.eval_shape(make_optimizer(config).init, shapes["params"])


def test_rcnn_warps_each_region_with_context_into_alexnet():
  """R-CNN (Girshick et al. 2014): AlexNet's pool5 of a 227x227 warp is 6x6x256 and feeds fc6 (9216 -> 4096); the
  warp dilates each box so that 16 of the 227 pixels on each side are context and samples bilinearly at the output
  pixels' centres: scipy.ndimage.map_coordinates (order 1) at those points, for frames inside the image."""
  from scipy import ndimage  # pylint: disable=g-import-not-at-top
  assert get_model("rcnn") is fast_rcnn
  config = fast_rcnn.model_config("rcnn")
  assert (config.backbone, config.roi_pooler, config.roi_bg_iou_low, config.box_loss_weight) == (
      "alexnet", "warp", 0.0, 0.0)
  module = fast_rcnn.build(config, types.SimpleNamespace(num_thing_classes=20))
  shapes = jax.eval_shape(lambda x: module.init(jax.random.key(0), x), jax.ShapeDtypeStruct((1, 64, 64, 3),
                                                                                            np.float32))["params"]
  assert shapes["backbone"]["conv5"]["kernel"].shape == (3, 3, 192, 256)  # 2 groups of 192 input channels
  assert shapes["box_head"]["fc6"]["kernel"].shape == (6 * 6 * 256, 4096)

  rng = np.random.default_rng(0)
  image = rng.uniform(size=(1, 80, 100, 3)).astype(np.float32)
  boxes = np.array([[[30.0, 20.0, 70.0, 50.0], [40.5, 30.25, 52.0, 61.0]]], np.float32)
  size, padding = 31, 3
  warped = np.asarray(warp_regions(image, boxes, size, padding))
  assert warped.shape == (2, size, size, 3)
  for k, (x1, y1, x2, y2) in enumerate(boxes[0].astype(np.float64)):
    scale = size / (size - 2 * padding)
    cx, cy, hw, hh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2 * scale, (y2 - y1) / 2 * scale
    # Output pixel j's centre in image pixel-index coordinates (pixel i spans [i, i + 1), its centre at i + 0.5).
    xs = cx - hw + (np.arange(size) + 0.5) * 2 * hw / size - 0.5
    ys = cy - hh + (np.arange(size) + 0.5) * 2 * hh / size - 0.5
    assert xs.min() >= 0 and ys.min() >= 0 and xs.max() <= 99 and ys.max() <= 79
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    expected = np.stack([ndimage.map_coordinates(image[0, :, :, ch].astype(np.float64), [yy, xx], order=1)
                         for ch in range(3)], -1)
    np.testing.assert_allclose(warped[k], expected, atol=5e-5)  # float32 sample positions near x = 100
    # The original box spans the central size - 2 * padding pixels.
    np.testing.assert_allclose([xs[padding] + 0.5 - (xs[1] - xs[0]) / 2, xs[-1 - padding] + 0.5 + (xs[1] - xs[0]) / 2],
                               [x1, x2], atol=1e-6)


@pytest.mark.slow  # compiles the pyramid's masked maxima, and 64 AlexNet passes per image
@pytest.mark.parametrize("name", ["sppnet", "rcnn"])
def test_sppnet_and_rcnn_train_steps_compile_once_across_box_counts(name):
  """SPP-net's and R-CNN's fine-tuning steps (log loss only: box_loss_weight 0) on batches of other box counts."""
  config = fast_rcnn.model_config(name)
  config.update({"width": 12, "representation_size": 32, "warp_size": 67, "context_padding": 5})
  module = fast_rcnn.build(config, types.SimpleNamespace(num_thing_classes=2))
  batch = _batch((2, 1), num_proposals=32)
  params = module.init(jax.random.key(0), batch["image"])["params"]

  @counting_jit
  def step(params, batch, key):
    def loss_fn(params):
      outputs = module.apply({"params": params}, batch["image"], train=True, rngs={"sampling": key, "dropout": key},
                             targets={k: batch[k] for k in fast_rcnn.FORWARD_KEYS},
                             **{k: batch[k] for k in fast_rcnn.INPUT_KEYS})
      return fast_rcnn.loss(outputs, batch, config)

    (value, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return jax.tree.map(lambda p, g: p - 1e-3 * g, params, grads), value, metrics

  for i, counts in enumerate(((2, 1), (0, 0), (4, 4))):
    params, value, metrics = step(params, _batch(counts, num_proposals=32, seed=i), jax.random.key(i))
    assert np.isfinite(float(value)) and float(metrics["loss_box_reg"]) == 0.0
  assert step.traces == 1


def test_the_loops_train_and_eval_steps_pass_the_proposals():
  """segjax.train.steps reads INPUT_KEYS: its train step's loss is that of the forward pass given the batch's
  proposals, and its eval step's detections come from the batch's proposals (none when all are invalid)."""
  from segjax.train import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from segjax.train.state import TrainState  # pylint: disable=g-import-not-at-top
  from segjax.train.steps import make_eval_step, make_train_step  # pylint: disable=g-import-not-at-top
  config = _tiny_config()
  module = fast_rcnn.build(config, types.SimpleNamespace(num_thing_classes=2))
  batch = _batch((3, 2), num_proposals=32)
  variables = jax.device_get(module.init(jax.random.key(0), batch["image"]))
  params = jax.tree.map(lambda p: p * 30 if p.ndim == 2 and p.shape[-1] in (3, 12) else p, variables["params"])
  optimizer, schedule = optax.sgd(0.0), optax.constant_schedule(0.0)
  mesh = mesh_lib.make_mesh(jax.devices()[:1])
  state = jax.device_put(TrainState.create({"params": params}, optimizer), mesh_lib.replicated(mesh))
  shardings = jax.tree.map(lambda _: mesh_lib.replicated(mesh), state)
  step = make_train_step(module, fast_rcnn, config, optimizer, schedule, mesh, shardings)
  _, metrics = step(state, batch, jax.random.key(5))
  dropout, sampling = jax.random.split(jax.random.key(5))
  loss = jax.jit(lambda params, batch: fast_rcnn.loss(module.apply(
      {"params": params}, batch["image"], train=True, rngs={"dropout": dropout, "sampling": sampling},
      targets={k: batch[k] for k in fast_rcnn.FORWARD_KEYS}, **{k: batch[k] for k in fast_rcnn.INPUT_KEYS}),
                                                    batch, config)[0])
  np.testing.assert_allclose(float(metrics["loss"]), float(loss(params, batch)), rtol=1e-5)

  evaluator = types.SimpleNamespace(device_stats=lambda predictions, batch: {})
  eval_step = make_eval_step(module, fast_rcnn, config, evaluator, mesh, mesh_lib.replicated(mesh))
  predictions, _ = eval_step({"params": params}, batch)
  assert predictions["valid"].sum() > 0
  # The same program on the same batch with every proposal invalid: nothing to detect.
  nothing, _ = eval_step({"params": params}, {**batch, "proposal_valid": np.zeros_like(batch["proposal_valid"])})
  assert not nothing["valid"].any()


def test_predictor_refuses_a_model_that_needs_proposals():
  """Predictor feeds images only: Fast R-CNN would see no proposals and detect nothing, so it is refused."""
  from segjax.inference import Predictor  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match="proposals"):
    Predictor(_tiny_config(), {}, info=types.SimpleNamespace(num_thing_classes=2))


def test_eight_device_training_gives_the_losses_of_one_device():
  """Data-parallel Fast R-CNN (each image's proposals and its sampled RoIs) equals one device over two steps."""
  from train_util import losses_on_one_and_eight_devices  # pylint: disable=g-import-not-at-top
  config = _tiny_config()
  model = get_model("fast_rcnn")
  module = model.build(config, types.SimpleNamespace(num_thing_classes=2))
  batches = [_batch((3, 0, 4, 1, 2, 4, 1, 3), seed=1), _batch((1, 2, 0, 4, 3, 3, 2, 1), seed=2)]
  variables = jax.device_get(module.init(jax.random.key(0), batches[0]["image"]))
  keys = ("loss", "loss_classifier", "loss_box_reg")
  losses = losses_on_one_and_eight_devices(module, model, config, variables, batches, keys)
  assert np.all(np.array(losses[1])[:, 2] > 0)  # foreground RoIs reached the box loss
  np.testing.assert_allclose(losses[8], losses[1], rtol=1e-4, atol=1e-6)
