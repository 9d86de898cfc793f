"""Dynamically Instantiated Network (Arnab & Torr 2017): the instance CRF's unary terms equal a float64 NumPy version
written from their definitions (segjax/ops/instance_crf.py), its mean-field step is segjax.ops.crf's DenseCRF step
on the same unaries and kernels, gradients reach the unary weights (central differences), other detection and
instance counts do not retrace, and (slow) a tiny network learns masks that beat its boxes and trains on 8 devices
as on one."""
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment as scipy_lsa

from segjax.layers.instance_crf import InstanceCRF
from segjax.models import dynamic_instance, get_model
from segjax.ops import instance_crf
from segjax.ops.crf import dense_crf

THETAS = {"theta_alpha": 4.0, "theta_beta": 30.0, "theta_gamma": 2.0}


def _random_case(rng, height=12, width=14, num_classes=3, num_detections=4, num_templates=2, m=5):
  q = rng.dirichlet(np.ones(num_classes + 1), (height, width))
  xy = rng.uniform(-2, 8, (num_detections, 2))
  boxes = np.concatenate([xy, xy + rng.uniform(2, 9, (num_detections, 2))], 1)
  labels = rng.integers(1, num_classes + 1, num_detections)
  scores = rng.uniform(0.2, 1.0, num_detections)
  valid = np.arange(num_detections) < num_detections - 1
  templates = rng.uniform(0, 1, (num_classes, num_templates, m, m))
  return q, boxes, labels, scores, valid, templates


def _numpy_warp(template, box, height, width):
  """The template's bilinear resampling over the box (pixel centre (x + .5, y + .5) -> grid coordinate
  (x + .5 - x1) / (x2 - x1) M - .5, clamped to the grid), 0 outside [x1, x2) x [y1, y2)."""
  m = template.shape[0]
  x1, y1, x2, y2 = box
  out = np.zeros((height, width))
  for y in range(height):
    for x in range(width):
      cx, cy = x + 0.5, y + 0.5
      if not (x1 <= cx < x2 and y1 <= cy < y2):
        continue
      u = min(max((cx - x1) / (x2 - x1) * m - 0.5, 0.0), m - 1.0)
      v = min(max((cy - y1) / (y2 - y1) * m - 0.5, 0.0), m - 1.0)
      u0, v0 = int(np.floor(u)), int(np.floor(v))
      u1, v1 = min(u0 + 1, m - 1), min(v0 + 1, m - 1)
      fu, fv = u - u0, v - v0
      out[y, x] = ((1 - fv) * ((1 - fu) * template[v0, u0] + fu * template[v0, u1])
                   + fv * ((1 - fu) * template[v1, u0] + fu * template[v1, u1]))
  return out


def _numpy_unary(q, boxes, labels, scores, valid, templates, w_box, w_global, w_shape):
  """-U [H, W, D + 1] in float64: U_i(k) = -ln[w_B [i in B_k] s_k Q_i(l_k) + w_G Q_i(l_k) + w_S [i in B_k] s_k
  Q_i(l_k) T_k(i)], U_i(0) = -ln[(w_B + w_G + w_S) Q_i(0)], T_k the class's template of highest normalised
  cross-correlation with Q(l_k) over the box; padded detections -1e9."""
  height, width = q.shape[:2]
  out = np.zeros((height, width, len(boxes) + 1))
  out[..., 0] = np.log(max(w_box + w_global + w_shape, 0) * q[..., 0])
  ys, xs = np.mgrid[:height, :width] + 0.5
  for k, (box, label, score) in enumerate(zip(boxes, labels, scores)):
    inside = (xs >= box[0]) & (xs < box[2]) & (ys >= box[1]) & (ys < box[3])
    target = q[..., label]
    best, template = -np.inf, None
    for t in templates[label - 1]:
      warped = _numpy_warp(t, box, height, width)
      a = warped[inside] - warped[inside].mean()
      b = target[inside] - target[inside].mean()
      ncc = (a * b).sum() / np.sqrt(max((a * a).sum() * (b * b).sum(), 1e-12))
      if ncc > best:
        best, template = ncc, warped
    total = w_box * inside * score * target + w_global * target + w_shape * inside * score * target * template
    out[..., k + 1] = np.log(np.maximum(total, 1e-8)) if valid[k] else -1e9
  return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_unary_terms_equal_numpy_from_the_definitions(seed):
  rng = np.random.default_rng(seed)
  q, boxes, labels, scores, valid, templates = _random_case(rng)
  weights = (0.7, 0.3, 1.9)
  with jax.enable_x64(True):
    shapes = instance_crf.select_templates(jnp.asarray(templates), jnp.asarray(q), jnp.asarray(boxes),
                                           jnp.asarray(labels))
    got = instance_crf.instance_unary(jnp.asarray(q), jnp.asarray(boxes), jnp.asarray(labels), jnp.asarray(scores),
                                      jnp.asarray(valid), shapes, *weights)
    got = np.asarray(got)
  want = _numpy_unary(q, boxes, labels, scores, valid, templates, *weights)
  assert got.dtype == np.float64
  np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def test_one_template_per_class_is_that_template_warped():
  rng = np.random.default_rng(3)
  q, boxes, labels, _, _, templates = _random_case(rng, num_templates=1)
  got = instance_crf.select_templates(jnp.asarray(templates, jnp.float32), jnp.asarray(q, jnp.float32),
                                      jnp.asarray(boxes, jnp.float32), jnp.asarray(labels))
  want = np.stack([_numpy_warp(templates[l - 1, 0], b, *q.shape[:2]) for b, l in zip(boxes, labels)])
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)


@pytest.mark.parametrize("iterations", [1, 3])
def test_mean_field_is_the_dense_crf_step_on_the_instance_labels(iterations):
  rng = np.random.default_rng(4)
  n, h, w, num_labels = 2, 9, 11, 5
  unary = rng.normal(0, 2, (n, h, w, num_labels)).astype(np.float32)
  image = rng.uniform(0, 255, (n, h, w, 3)).astype(np.float32)
  kw = dict(num_iterations=iterations, w_bilateral=2.5, w_spatial=1.5, filter="exact", **THETAS)
  got = instance_crf.instance_mean_field(jnp.asarray(unary), jnp.asarray(image), jnp.ones((n, num_labels), bool),
                                         **kw)
  want = dense_crf(jnp.asarray(unary), jnp.asarray(image), normalization="after", **kw)
  np.testing.assert_allclose(np.asarray(jax.nn.softmax(got, -1)), np.asarray(want), atol=1e-5)
  # A padded detection's label takes no mass and sends no message: the others are DenseCRF's on the labels left.
  valid = np.ones((n, num_labels), bool)
  valid[:, 2] = False
  got = jax.nn.softmax(instance_crf.instance_mean_field(
      jnp.where(valid[:, None, None], unary, instance_crf.INVALID_LOGIT), jnp.asarray(image), jnp.asarray(valid), **kw),
                       -1)
  want = dense_crf(jnp.asarray(unary[..., valid[0]]), jnp.asarray(image), normalization="after", **kw)
  assert float(jnp.abs(got[..., 2]).max()) == 0.0
  np.testing.assert_allclose(np.asarray(got[..., valid[0]]), np.asarray(want), atol=1e-5)


def _crf_case(rng, counts, size=12, slots=3):
  """Semantic probabilities [N, size, size, 3], an image, and per image `counts[b]` detections and ground-truth
  masks (each detection box a ground-truth box), padded to `slots`."""
  n = len(counts)
  q = rng.dirichlet(np.ones(3), (n, size, size))
  image = rng.uniform(0, 255, (n, size, size, 3))
  boxes = np.zeros((n, slots, 4))
  masks = np.zeros((n, slots, size, size), np.uint8)
  for b, count in enumerate(counts):
    for k in range(count):
      x, y = rng.integers(0, size - 5, 2)
      boxes[b, k] = (x, y, x + 5, y + 5)
      masks[b, k, y + 1:y + 4, x:x + 5] = 1
  valid = np.arange(slots)[None] < np.asarray(counts)[:, None]
  labels = rng.integers(1, 3, (n, slots))
  scores = rng.uniform(0.5, 1.0, (n, slots))
  return q, image, boxes, labels, scores, valid, masks


def _targets(layer, params, q, image, boxes, labels, scores, valid, masks):
  """The Hungarian-matched per-pixel labels [N, H * W] of the layer's marginals (segjax.ops.instance_crf)."""
  logits = layer.apply({"params": params}, q, image, boxes, labels, scores, valid, train=True)
  n, h, w, num_labels = logits.shape
  probabilities = jax.nn.softmax(logits, -1).reshape(n, h * w, num_labels)
  targets, _ = jax.vmap(instance_crf.matched_instance_targets)(
      probabilities, valid, masks.reshape(n, masks.shape[1], h * w), valid, jnp.zeros(valid.shape, bool))
  return targets


def _instance_loss(layer, params, q, image, boxes, labels, scores, valid, masks, targets=None):
  """The summed cross entropy of the layer's logits against the matched labels (`targets`, else matched here)."""
  if targets is None:
    targets = _targets(layer, params, q, image, boxes, labels, scores, valid, masks)
  logits = layer.apply({"params": params}, q, image, boxes, labels, scores, valid, train=True)
  n, h, w, num_labels = logits.shape
  log_p = jax.nn.log_softmax(logits, -1).reshape(n, h * w, num_labels)
  picked = jnp.take_along_axis(log_p, jnp.clip(targets, 0, num_labels - 1)[..., None], -1)[..., 0]
  return -jnp.sum(jnp.where(targets < num_labels, picked, 0.0))


def test_gradients_reach_the_unary_weights_as_central_differences():
  rng = np.random.default_rng(5)
  case = _crf_case(rng, [2, 1], size=8)
  layer = InstanceCRF(filter="exact", train_iterations=3, template_size=4, **THETAS)
  params = layer.init(jax.random.key(0), *case[:-1])["params"]
  params = {**params, "log_w_global": jnp.float32(-0.5), "log_w_shape": jnp.float32(0.3)}
  # The matching is held fixed in the gradient: the labels come from float32 marginals, the differences in float64.
  targets = _targets(layer, params, *(jnp.asarray(x, jnp.float32) if x.dtype == np.float64 else x for x in case))
  with jax.enable_x64(True):
    case64 = tuple(jnp.asarray(x) for x in case)
    params = jax.tree.map(lambda p: jnp.asarray(p, jnp.float64), params)
    f = jax.jit(lambda p: _instance_loss(layer, p, *case64, targets=targets))
    grads = jax.grad(f)(params)
    for name in ("log_w_box", "log_w_global", "log_w_shape", "w_bilateral", "w_spatial"):
      eps = 1e-5
      numeric = (f({**params, name: params[name] + eps}) - f({**params, name: params[name] - eps})) / (2 * eps)
      assert abs(float(grads[name])) > 1e-4, (name, grads[name])
      np.testing.assert_allclose(float(grads[name]), float(numeric), rtol=1e-5, err_msg=name)


def test_other_detection_and_instance_counts_trace_once():
  traces = []
  layer = InstanceCRF(template_size=4, filter="exact", train_iterations=2, **THETAS)
  rng = np.random.default_rng(6)
  q, image, boxes, labels, scores, valid, masks = _crf_case(rng, [1, 2])
  params = layer.init(jax.random.key(0), q, image, boxes, labels, scores, valid)["params"]

  @jax.jit
  def loss_and_grad(params, *case):
    traces.append(1)
    return jax.value_and_grad(lambda p: _instance_loss(layer, p, *case))(params)

  for counts in ([1, 2], [0, 3], [3, 0], [2, 2]):
    case = tuple(np.asarray(x, np.float32) if x.dtype == np.float64 else x for x in _crf_case(rng, counts))
    value, _ = loss_and_grad(params, *case)
    assert np.isfinite(float(value))
  assert len(traces) == 1


def test_matched_targets_follow_the_hungarian_matching():
  """Two instances, three detections whose marginals cover instance 1, nothing, instance 0: the matched labels are
  detection 3 on instance 0's pixels and detection 1 on instance 1's; an instance left unmatched is ignored."""
  p = 6
  masks = np.zeros((3, p), np.float32)
  masks[0, :2], masks[1, 2:4] = 1, 1
  probabilities = np.full((p, 4), 0.01, np.float32)
  probabilities[2:4, 1] = probabilities[:2, 3] = 0.97
  probabilities[4:, 0] = 0.97
  targets, match = instance_crf.matched_instance_targets(
      jnp.asarray(probabilities), jnp.array([True, True, True]), jnp.asarray(masks), jnp.array([True, True, False]),
      jnp.zeros(3, bool))
  assert np.asarray(targets).tolist() == [3, 3, 1, 1, 0, 0]
  assert np.asarray(match).nonzero()[1].tolist() == [2, 0]
  targets, _ = instance_crf.matched_instance_targets(
      jnp.asarray(probabilities), jnp.array([True, False, False]), jnp.asarray(masks), jnp.array([True, True, False]),
      jnp.zeros(3, bool))
  assert sorted(np.asarray(targets)[:4].tolist()) == [1, 1, 255, 255]


def test_registered_and_config_errors_name_the_key():
  assert get_model("dynamic_instance") is dynamic_instance
  info = ml_collections.ConfigDict({"num_thing_classes": 2})
  for overrides, key in (({"mask": True}, "config.model.mask"), ({"crf": {"w_boxes": 1.0}}, "w_boxes"),
                         ({"semantic_channels": 20}, "config.model.semantic_channels")):
    config = dynamic_instance.model_config()
    config.update(overrides) if "crf" not in overrides else None
    try:
      dynamic_instance.build(config if "crf" not in overrides else {**config.to_dict(), **{
          "crf": {**config.crf.to_dict(), **overrides["crf"]}}}, info)
    except ValueError as error:
      assert key in str(error), error
    else:
      raise AssertionError(f"{overrides} was accepted")


def tiny_config():
  config = dynamic_instance.model_config()
  config.update({"depth": 18, "width": 8, "norm": "batch", "fpn_channels": 32, "representation_size": 64,
                 "semantic_channels": 32, "anchor_sizes": ((8,), (16,), (32,), (64,), (128,)),
                 "rpn_pre_nms_top_n_train": 200, "rpn_post_nms_top_n_train": 100, "rpn_pre_nms_top_n_test": 100,
                 "rpn_post_nms_top_n_test": 50, "roi_batch_size_per_image": 32, "detections_per_image": 6})
  return config


INFO = ml_collections.ConfigDict({"num_thing_classes": 2})


def _shapes_batch(counts, size=64, slots=3, seed=0):
  """Images with counts[b] shapes on a noisy dark background, discs (class 1, red) and right triangles (class 2,
  yellow) in turn, in fixed cells so they never overlap, and their padded ground truth."""
  rng = np.random.default_rng(seed)
  n = len(counts)
  image = rng.uniform(0, 0.2, (n, size, size, 3)).astype(np.float32)
  boxes = np.zeros((n, slots, 4), np.float32)
  masks = np.zeros((n, slots, size, size), np.uint8)
  classes = np.zeros((n, slots), np.int32)
  ys, xs = np.mgrid[:size, :size] + 0.5
  cells = [(4, 4), (36, 8), (12, 38)]
  for b, count in enumerate(counts):
    for k in range(count):
      side = int(rng.integers(16, 24))
      x, y = cells[k]
      label = 1 + (b + k) % 2
      if label == 1:
        mask = (xs - x - side / 2) ** 2 + (ys - y - side / 2) ** 2 < (side / 2) ** 2
      else:
        mask = (xs >= x) & (ys >= y) & (xs - x <= ys - y) & (ys < y + side)
      masks[b, k] = mask
      classes[b, k] = label
      boxes[b, k] = (x, y, x + side, y + side)
      image[b][mask] = (0.9, 0.2, 0.2) if label == 1 else (0.9, 0.85, 0.1)
  valid = np.arange(slots)[None] < np.asarray(counts)[:, None]
  return {"image": image, "boxes": boxes, "classes": classes, "masks": masks, "is_crowd": np.zeros((n, slots), bool),
          "instance_valid": valid}


def _matched_mean_iou(predicted, masks, valid):
  """Mean IoU of the ground-truth masks [M, H, W] (valid [M]) with the predicted masks [D, H, W] they are matched
  to by SciPy's Hungarian algorithm on IoU (an unmatched instance scores 0)."""
  gt = masks[valid].reshape(valid.sum(), -1).astype(bool)
  pred = predicted.reshape(predicted.shape[0], -1) > 0.5
  inter = gt.astype(float) @ pred.T.astype(float)
  union = gt.sum(1)[:, None] + pred.sum(1)[None] - inter
  iou = inter / np.maximum(union, 1)
  rows, cols = scipy_lsa(-iou)
  return iou[rows, cols].sum() / len(gt)


def test_predict_labelling_is_the_masks_and_the_things_panoptic_map():
  """Detection k's mask is argmax == k + 1 where k is valid and wins a pixel; the panoptic map paints segment id
  k + 1 on those pixels (0 elsewhere) and its rows list the valid detections first, in id order, with their labels,
  scores and areas (a NumPy reading of the same logits)."""
  rng = np.random.default_rng(0)
  b, d, h, w = 2, 5, 9, 11
  logits = rng.normal(size=(b, h, w, d + 1)).astype(np.float32)
  logits[0, ..., 3] -= 100.0  # detection 2 of image 0 wins no pixel
  valid = np.array([[True, True, True, False, True], [False, True, True, True, False]])
  outputs = {"instance_logits": logits, "boxes": rng.uniform(0, 9, (b, d, 4)).astype(np.float32),
             "scores": rng.uniform(0.1, 1, (b, d)).astype(np.float32), "labels": rng.integers(1, 4, (b, d)),
             "valid": valid}
  p = jax.device_get(jax.jit(lambda o: dynamic_instance.predict(o, None))(outputs))
  for i in range(b):
    winner = logits[i].argmax(-1)
    kept = [k for k in range(d) if valid[i, k] and (winner == k + 1).any()]
    expected_map = np.where(np.isin(winner, [k + 1 for k in kept]), winner, 0)
    np.testing.assert_array_equal(p["panoptic"][i], expected_map)
    for k in range(d):
      np.testing.assert_array_equal(p["masks"][i, k], (expected_map == k + 1).astype(np.float32))
    assert list(p["valid"][i]) == [k in kept for k in range(d)]
    n = len(kept)
    assert list(p["segment_valid"][i]) == [True] * n + [False] * (d - n)
    assert list(p["segment_id"][i, :n]) == [k + 1 for k in kept] and not p["segment_id"][i, n:].any()
    assert list(p["segment_category"][i, :n]) == [outputs["labels"][i, k] for k in kept]
    np.testing.assert_allclose(p["segment_score"][i, :n], outputs["scores"][i, kept])
    assert list(p["segment_area"][i, :n]) == [(winner == k + 1).sum() for k in kept]
    assert p["segment_is_thing"][i, :n].all()
  assert not p["valid"][0, 2]


@pytest.mark.slow  # the detector's, semantic branch's and CRF's train step and inference compile
def test_tiny_network_learns_masks_that_beat_its_boxes():
  """Trained on a fixed batch of discs and triangles, the CRF's masks for the ground-truth boxes match the instances
  better than the boxes themselves do as masks (IoU pi/4 for a disc, 1/2 for a right triangle), on 3 seeds."""
  import optax  # pylint: disable=g-import-not-at-top
  from segjax.ops.masks import box_masks  # pylint: disable=g-import-not-at-top
  config = tiny_config()
  module = dynamic_instance.build(config, INFO)
  batch = _shapes_batch([2, 3])
  forward = {k: batch[k] for k in dynamic_instance.FORWARD_KEYS}
  optimizer = optax.adam(3e-3)
  traces = []

  @jax.jit
  def step(params, batch_stats, opt_state, batch, key):
    traces.append(1)

    def loss_fn(params):
      outputs, updates = module.apply({"params": params, "batch_stats": batch_stats}, batch["image"], train=True,
                                      mutable=["batch_stats"], rngs={"sampling": key},
                                      targets={k: batch[k] for k in dynamic_instance.FORWARD_KEYS})
      return dynamic_instance.loss(outputs, batch, config)[0], updates["batch_stats"]

    (value, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    deltas, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, deltas), batch_stats, opt_state, value

  detections = {"boxes": jnp.asarray(batch["boxes"]), "labels": jnp.asarray(batch["classes"]),
                "scores": jnp.ones(batch["classes"].shape), "valid": jnp.asarray(batch["instance_valid"])}
  infer = jax.jit(lambda variables: dynamic_instance.predict(
      module.apply(variables, batch["image"], train=False, detections=detections), config))
  boxes_as_masks = np.asarray(box_masks(jnp.asarray(batch["boxes"]), 64, 64))
  reference = np.mean([_matched_mean_iou(boxes_as_masks[b], batch["masks"][b], batch["instance_valid"][b])
                       for b in range(2)])
  for seed in range(3):
    variables = jax.jit(lambda key: module.init({"params": key, "sampling": key}, batch["image"], train=True,
                                                targets=forward))(jax.random.key(seed))
    params, batch_stats = variables["params"], variables["batch_stats"]
    opt_state = optimizer.init(params)
    for i in range(60):
      params, batch_stats, opt_state, value = step(params, batch_stats, opt_state, batch,
                                                   jax.random.key(1000 * seed + i))
    assert np.isfinite(float(value))
    predictions = jax.device_get(infer({"params": params, "batch_stats": batch_stats}))
    quality = np.mean([_matched_mean_iou(predictions["masks"][b], batch["masks"][b], batch["instance_valid"][b])
                       for b in range(2)])
    assert quality > reference, (seed, quality, reference)
  assert len(traces) == 1


@pytest.mark.slow  # two compiles of the whole train step
def test_eight_device_training_gives_the_losses_of_one_device():
  import optax  # pylint: disable=g-import-not-at-top
  from segjax.train import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from segjax.train.state import TrainState  # pylint: disable=g-import-not-at-top
  from segjax.train.steps import make_train_step  # pylint: disable=g-import-not-at-top
  assert jax.device_count() == 8
  config = tiny_config()
  module = dynamic_instance.build(config, INFO)
  # 8 images per step with different instance counts, so each device sees its own targets.
  batches = [_shapes_batch(counts, seed=i) for i, counts in enumerate(([3, 0, 2, 1, 3, 1, 0, 2], [1, 2, 3, 3, 0, 1, 2, 2]))]
  forward = {k: batches[0][k] for k in dynamic_instance.FORWARD_KEYS}
  variables = jax.device_get(jax.jit(lambda b: module.init({"params": jax.random.key(0), "sampling": jax.random.key(1)},
                                                           b["image"], train=True, targets=forward))(batches[0]))
  optimizer, schedule = optax.sgd(0.01, momentum=0.9), optax.constant_schedule(0.01)
  names = ("loss", "loss_sem_seg", "loss_instance", "loss_classifier")
  losses = {}
  for devices in (jax.devices()[:1], jax.devices()):
    mesh = mesh_lib.make_mesh(devices)
    state = jax.device_put(TrainState.create(variables, optimizer), mesh_lib.replicated(mesh))
    shardings = jax.tree.map(lambda _: mesh_lib.replicated(mesh), state)
    traces = []

    def counted_loss(outputs, batch, model_config):
      traces.append(1)  # once per trace of the train step
      return dynamic_instance.loss(outputs, batch, model_config)

    model_lib = types.SimpleNamespace(FORWARD_KEYS=dynamic_instance.FORWARD_KEYS, loss=counted_loss)
    step = make_train_step(module, model_lib, config, optimizer, schedule, mesh, shardings)
    losses[len(devices)] = []
    for i, batch in enumerate(batches):
      state, metrics = step(state, jax.device_put(batch, mesh_lib.batch_sharding(mesh)), jax.random.key(i))
      losses[len(devices)].append([float(metrics[k]) for k in names])
    assert len(traces) == 1  # the second batch's other instance counts run the same program
  assert np.all(np.array(losses[1])[:, 2] > 0)  # the instance CRF's loss is exercised
  np.testing.assert_allclose(losses[8], losses[1], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["dynamic_instance_voc", "demo_instance_crf"])
def test_experiment_configs_build(name):
  import importlib  # pylint: disable=g-import-not-at-top
  from segjax.train.optim import make_optimizer  # pylint: disable=g-import-not-at-top
  config = importlib.import_module(f"experiments.{name}").get_config()
  module = dynamic_instance.build(config.model, ml_collections.ConfigDict({"num_thing_classes": 20}))
  shapes = jax.eval_shape(lambda x: module.init(jax.random.key(0), x), jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))
  assert shapes["params"]["instance_crf"]["shape_templates"].shape[0] == 20
  assert shapes["params"]["semantic_head"]["predictor"]["kernel"].shape[-1] == 21
  jax.eval_shape(make_optimizer(config).init, shapes["params"])  # config.optimizer.frozen matches parameters
