"""Panoptic FCN: the centre and region targets against float64 NumPy ports of the official GenerateGT (bilinear
resizing by torch in float64), kernel fusion and the stuff kernels against NumPy ports of the official
kernel_fusion / inference_single_level, the weighted Dice against NumPy, a tiny model's loss falls without
recompiling for 0 and max_instances instances, its predictions follow the contract, the experiment configs build and
follow the official schedule, and a tiny run through train_and_evaluate writes PQ and its region maps beat the
best image-blind predictor's stuff focal loss.

References ported, all from dvlab-research/PanopticFCN at commit 9201b06d871df128547ce36b80f6caceb105465d:
panopticfcn/gt_generate.py (GenerateGT: the centre heatmaps, draw_gaussian and the region targets of sem_assign),
panopticfcn/head.py (ThingGenerator's kernel fusion) and panopticfcn/panoptic_seg.py (inference_single_level, the
losses).
"""
import importlib
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from segjax.models import panoptic_fcn
from segjax.ops.losses import weighted_dice_loss
from test_models_panoptic_fpn import IS_THING, _info, _panoptic_batch
from train_util import FAST_OPTIMIZER, read_metrics, tiny_config as tiny_loop_config, counting_jit
from references import requires_torch, torch

F = torch.nn.functional if torch else None

SCALES = ((1, 16), (8, 32), (16, 64), (32, 128), (64, 2048))  # the official ranges / 4, for 64..128-pixel images


def tiny_config():
  config = panoptic_fcn.model_config()
  config.update({"depth": 18, "width": 8, "norm": "batch", "fpn_channels": 32, "semantic_channels": 32,
                 "head_channels": 32, "head_convs": 1, "position_deform": False, "encoder_channels": 16,
                 "encoder_convs": 1, "instance_scales": SCALES, "stuff_area_threshold": 16})
  return config


def _level_shapes(height, width):
  return tuple((-(-height // s), -(-width // s)) for s in (8, 16, 32, 64, 128))


def _torch_resize(x, size):
  """[C, h, w] float64 -> [C, H, W], F.interpolate(bilinear, align_corners=False) as the official code."""
  return F.interpolate(torch.from_numpy(np.asarray(x, np.float64))[None], size=size, mode="bilinear",
                       align_corners=False)[0].numpy()


# ---------------------------------------------------------------------------------------------------------------
# Targets.

def _reference_radius(w, h, min_overlap=0.7):
  r1 = ((h + w) + np.sqrt((h + w) ** 2 - 4 * w * h * (1 - min_overlap) / (1 + min_overlap))) / 2
  r2 = (2 * (h + w) + np.sqrt((2 * (h + w)) ** 2 - 16 * (1 - min_overlap) * w * h)) / 2
  a3, b3, c3 = 4 * min_overlap, -2 * min_overlap * (h + w), (min_overlap - 1) * w * h
  r3 = (b3 + np.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
  return min(r1, r2, r3)


def _reference_draw(fmap, x, y, radius, sigma_factor=3):
  """GenerateGT.draw_gaussian in float64."""
  sigma = (2 * radius + 1) / sigma_factor
  yy, xx = np.ogrid[-radius:radius + 1, -radius:radius + 1]
  gaussian = np.exp(-(xx * xx + yy * yy) / (2 * sigma * sigma))
  gaussian[gaussian < np.finfo(gaussian.dtype).eps * gaussian.max()] = 0
  height, width = fmap.shape
  left, right, top, bottom = min(x, radius), min(width - x, radius + 1), min(y, radius), min(height - y, radius + 1)
  patch = gaussian[radius - top:radius + bottom, radius - left:radius + right]
  fmap[y - top:y + bottom, x - left:x + right] = np.maximum(fmap[y - top:y + bottom, x - left:x + right], patch)


def _reference_thing_targets(boxes, masks, classes, valid, level_shapes, num_things):
  """GenerateGT's thing branch for the valid instances: 1/4 masks, mass centres, per level heatmaps and indices."""
  _, height, width = masks.shape
  small = _torch_resize(masks, (height // 4, width // 4))
  heatmaps, indices, assigned = [], [], []
  for (fh, fw), (lo, hi) in zip(level_shapes, SCALES):
    heat = np.zeros((num_things, fh, fw))
    index, hit = np.zeros(len(boxes), np.int64), np.zeros(len(boxes), bool)
    for m in np.flatnonzero(valid):
      x1, y1, x2, y2 = boxes[m].astype(np.float64)
      ys, xs = np.nonzero(small[m])
      if not lo <= np.sqrt((x2 - x1) * (y2 - y1)) <= hi or not len(ys):  # no centre: left out (stated difference)
        continue
      cx, cy = int(xs.mean() * fw / (width // 4)), int(ys.mean() * fh / (height // 4))
      radius = int(max(_reference_radius((x2 - x1) * fw / width, (y2 - y1) * fh / height), 0))
      _reference_draw(heat[classes[m] - 1], cx, cy, radius)
      index[m], hit[m] = cy * fw + cx, True
    heatmaps.append(heat.transpose(1, 2, 0))
    indices.append(index)
    assigned.append(hit)
  return small, heatmaps, indices, assigned


def _random_things(rng, m=8, size=(64, 96), num_things=4):
  h, w = size
  ys, xs = np.mgrid[:h, :w]
  masks = np.zeros((m, h, w), np.uint8)
  for i in range(m):
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    ry, rx = np.exp(rng.uniform(np.log(2), np.log(0.6 * h), 2))
    ellipse = ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 <= 1
    masks[i] = ellipse if i % 2 else (abs(ys - cy) <= ry) & (abs(xs - cx) <= rx)
  boxes = np.zeros((m, 4), np.float32)
  for i in range(m):
    yy, xx = np.nonzero(masks[i])
    boxes[i] = (xx.min(), yy.min(), xx.max() + 1, yy.max() + 1)
  valid = rng.random(m) < 0.8
  return boxes, masks, rng.integers(1, num_things + 1, m).astype(np.int32), valid


@requires_torch
def test_thing_targets_equal_the_official_generate_gt():
  rng = np.random.default_rng(0)
  shapes = _level_shapes(64, 96)
  assign = jax.jit(lambda b, m, c, v: panoptic_fcn.thing_targets(b, m, c, v, shapes, SCALES, 4, 0.7, 3.0))
  drawn = 0
  for _ in range(4):
    boxes, masks, classes, valid = _random_things(rng)
    small, heatmaps, indices, assigned = jax.device_get(assign(boxes, masks, classes, valid))
    expected = _reference_thing_targets(boxes, masks, classes, valid, shapes, 4)
    np.testing.assert_allclose(small, expected[0], atol=1e-6)  # float32 against float64
    for level in range(5):
      np.testing.assert_allclose(heatmaps[level], expected[1][level], atol=1e-6, err_msg=f"level {level}")
      np.testing.assert_array_equal(assigned[level], expected[3][level])
      np.testing.assert_array_equal(np.where(assigned[level], indices[level], 0), expected[2][level])
      drawn += assigned[level].sum()
  assert drawn >= 20  # the draws put instances on several levels


@requires_torch
def test_region_targets_equal_the_official_sem_assign():
  rng = np.random.default_rng(1)
  semantic = rng.choice([0, 2, 4, 5, 6, 255], size=(64, 96)).astype(np.int32)
  semantic[:, 20:80] = 5  # a large central region, so that a class passes the 0.5 floor on the coarse levels
  shapes = _level_shapes(64, 96)
  small, scores, present = jax.device_get(jax.jit(lambda s: panoptic_fcn.stuff_targets(s, IS_THING, shapes))(semantic))
  # WITH_THING: things -> 0, stuff -> 1..3, VOID -> no class.
  labels = np.select([np.isin(semantic, [0, 1, 2, 3]), semantic == 255], [0, 255], semantic - 3)
  one_hot = (labels[None] == np.arange(4)[:, None, None]).astype(np.float64)
  expected_small = _torch_resize(one_hot, (16, 24))
  np.testing.assert_allclose(small, expected_small.transpose(1, 2, 0), atol=1e-6)
  for level, shape in enumerate(shapes):
    score = np.minimum(_torch_resize(expected_small, shape), 1.0)
    score[score < 0.5] = 0
    np.testing.assert_allclose(scores[level], score.transpose(1, 2, 0), atol=1e-6)
    np.testing.assert_array_equal(present[level], score.reshape(4, -1).sum(-1) > 0)
  assert present[0].sum() >= 2 and present[0].sum() > present[4].sum() >= 1


# ---------------------------------------------------------------------------------------------------------------
# Kernel fusion and the stuff kernels.

def _reference_thing_fusion(weights, classes, threshold=0.9):
  """ThingGenerator.kernel_fusion (cosine, class-specific) on the kept kernels, in float64."""
  unit = weights / np.maximum(np.linalg.norm(weights, axis=1, keepdims=True), 1e-8)
  label = np.triu(unit @ unit.T) >= threshold
  label &= classes[:, None] == classes[None, :]
  first = np.cumsum(label, axis=0) < 2
  keep = np.diagonal(first).copy()
  joined = (label[keep] & first[keep]).astype(np.float64)
  return joined @ weights / joined.sum(1, keepdims=True), classes[keep]


def test_thing_kernel_fusion_equals_the_official_one():
  rng = np.random.default_rng(2)
  base = rng.normal(size=(4, 16))
  orthogonal = rng.normal(size=16)
  orthogonal -= orthogonal @ base[0] / (base[0] @ base[0]) * base[0]
  orthogonal *= np.linalg.norm(base[0]) / np.linalg.norm(orthogonal)
  at = lambda degrees: np.cos(np.radians(degrees)) * base[0] + np.sin(np.radians(degrees)) * orthogonal
  kernels = np.stack([
      at(0), at(15),  # cosine 0.966: merged
      at(30),  # 0.866 to the first, 0.966 to the second (which merged): dropped, as the official cumsum does
      base[1], 1.7 * base[1] + 0.01 * rng.normal(size=16),  # a scaled copy: merged
      at(5),  # close to the first but another class: kept
      base[2], base[3], -base[2]])
  classes = np.array([1, 1, 1, 2, 2, 3, 2, 2, 2])
  padded = np.concatenate([kernels, rng.normal(size=(3, 16))]).astype(np.float32)  # 3 invalid slots
  fused, keep = jax.device_get(panoptic_fcn.fuse_thing_kernels(
      jnp.asarray(padded), jnp.asarray(np.concatenate([classes, [1, 1, 2]])), jnp.arange(12) < 9, 0.9))
  expected, expected_classes = _reference_thing_fusion(kernels, classes)
  np.testing.assert_array_equal(keep, [True, False, False, True, False, True, True, True, True, False, False, False])
  np.testing.assert_allclose(fused[keep], expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(classes[keep[:9]], expected_classes)
  np.testing.assert_allclose(fused[0], (at(0) + at(15)) / 2, rtol=1e-5, atol=1e-5)


def test_stuff_kernels_average_each_class_over_its_region_and_the_levels():
  rng = np.random.default_rng(3)
  levels = [(8, 12), (4, 6), (2, 3)]
  logits = [rng.normal(0, 2, (h, w, 4)).astype(np.float32) for h, w in levels]
  logits[2][..., 3] = -9  # class 3 absent on the coarsest level
  logits[1][..., 2] = np.where(logits[1][..., 2] > logits[1].max(-1), -0.5, logits[1][..., 2])
  features = [rng.normal(size=(h, w, 6)).astype(np.float32) for h, w in levels]
  outs = [jax.device_get(panoptic_fcn.stuff_candidates(x, f, 0.3)) for x, f in zip(logits, features)]
  expected_kernels, expected_scores, expected_keep = [], [], []
  for x, f in zip(logits, features):  # inference_single_level's stuff branch in float64
    prob = 1 / (1 + np.exp(-x.astype(np.float64)))
    cate = prob.argmax(-1)
    kernels, scores, keep = np.zeros((4, 6)), np.zeros(4), np.zeros(4, bool)
    for s in np.unique(cate):
      region = cate == s
      scores[s] = prob[..., s][region].mean()
      kernels[s] = (f * region[..., None]).sum((0, 1)) / region.size  # adaptive_avg_pool2d of the masked map
      keep[s] = scores[s] > 0.3
    expected_kernels.append(kernels)
    expected_scores.append(scores)
    expected_keep.append(keep)
  for (kernels, scores, keep), ek, es, ep in zip(outs, expected_kernels, expected_scores, expected_keep):
    np.testing.assert_array_equal(keep, ep)
    np.testing.assert_allclose(np.where(keep[:, None], kernels, 0), np.where(ep[:, None], ek, 0), atol=1e-5)
    np.testing.assert_allclose(np.where(keep, scores, 0), np.where(ep, es, 0), atol=1e-6)
  fused, score, kept = jax.device_get(panoptic_fcn.fuse_stuff_kernels(*(np.stack(x) for x in zip(*outs))))
  ep = np.stack(expected_keep)
  assert not ep.all(0).all() and ep.any(0).any()  # some class kept on some levels only
  np.testing.assert_array_equal(kept, ep.any(0))
  for s in np.flatnonzero(ep.any(0)):  # StuffGenerator.kernel_fusion: the mean over the levels keeping the class
    np.testing.assert_allclose(fused[s], np.mean([k[s] for k, p in zip(expected_kernels, ep) if p[s]], 0), atol=1e-5)
    np.testing.assert_allclose(score[s], np.mean([x[s] for x, p in zip(expected_scores, ep) if p[s]]), atol=1e-6)


def test_weighted_dice_equals_numpy():
  rng = np.random.default_rng(4)
  logits = rng.normal(0, 3, (3, 7, 50)).astype(np.float32)
  targets = rng.uniform(size=(3, 7, 50)) * (rng.random((3, 7, 50)) < 0.4)
  weights = rng.uniform(size=(3, 7)) * (rng.random((3, 7)) < 0.7)
  weights /= np.maximum(weights.sum(-1, keepdims=True), 1e-8)
  p = 1 / (1 + np.exp(-logits.astype(np.float64)))
  dice = 1 - 2 * (p * targets).sum(-1) / ((p * p).sum(-1) + (targets * targets).sum(-1))
  expected = (dice * weights).sum()
  assert float(weighted_dice_loss(logits, targets.astype(np.float32), weights.astype(np.float32))) == pytest.approx(
      expected, rel=1e-5)
  with pytest.raises(ValueError, match="weights must have shape"):
    weighted_dice_loss(logits, targets, weights[:, :3])


# ---------------------------------------------------------------------------------------------------------------
# The model.

@pytest.fixture(scope="module")
def trained():
  config = tiny_config()
  module = panoptic_fcn.build(config, _info())
  batch = _panoptic_batch(3)
  forward = lambda b: {k: b[k] for k in panoptic_fcn.FORWARD_KEYS}
  # Initialised in train mode under jit: cheaper to compile than the inference path.
  variables = jax.jit(lambda b: module.init(jax.random.key(0), b["image"], train=True, targets=forward(b)))(batch)
  optimizer = optax.adam(3e-3)
  state = (variables["params"], variables["batch_stats"], optimizer.init(variables["params"]))

  @counting_jit
  def step(state, batch):
    params, batch_stats, opt_state = state

    def loss_fn(params):
      outputs, updates = module.apply({"params": params, "batch_stats": batch_stats}, batch["image"], train=True,
                                      mutable=["batch_stats"], targets=forward(batch))
      value, metrics = panoptic_fcn.loss(outputs, batch, config)
      return value, (metrics, updates)

    (value, (metrics, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    deltas, opt_state = optimizer.update(grads, opt_state)
    return (optax.apply_updates(params, deltas), updates["batch_stats"], opt_state), (value, metrics)

  history = []
  for _ in range(20):
    state, (value, metrics) = step(state, batch)
    history.append([float(value)] + [float(metrics[k]) for k in ("loss_pos_th", "loss_pos_st", "loss_seg_th",
                                                                  "loss_seg_st")])
  extremes = []
  for count in (0, 4):  # no instances, and max_instances: the same program
    state, (value, metrics) = step(state, _panoptic_batch(count, seed=count))
    extremes.append(jax.device_get((value, metrics)))
  outputs = jax.eval_shape(lambda v: module.apply(v, batch["image"], train=True, mutable=["batch_stats"],
                                                  targets=forward(batch))[0], variables)
  shapes = jax.tree.map(lambda x: x.shape, outputs)
  return module, step, state, np.array(history), batch, shapes, extremes


def test_tiny_model_trains_without_recompiling(trained):
  _, step, _, history, _, shapes, extremes = trained
  assert np.isfinite(history).all()
  for k in range(history.shape[1]):  # the total and each of L_pos_th, L_pos_st, L_seg_th, L_seg_st fall
    assert np.mean(history[-3:, k]) < 0.8 * np.mean(history[:3, k]), k
  assert np.mean(history[-3:, 0]) < 0.6 * np.mean(history[:3, 0])
  assert step.traces == 1
  (empty, empty_metrics), (full, _) = extremes
  assert np.isfinite(empty) and np.isfinite(full)
  assert empty_metrics["loss_pos_th"] > 0 and empty_metrics["loss_seg_th"] == 0  # negatives only, no thing kernels
  # Training outputs: P3..P7 of a 64 x 64 input, 4 instance slots, k = 7 points, 16 x 16 encoded pixels.
  assert [s for s in shapes["center_logits"]] == [(2, 8, 8, 4), (2, 4, 4, 4), (2, 2, 2, 4), (2, 1, 1, 4), (2, 1, 1, 4)]
  assert [s for s in shapes["region_logits"]] == [(2, 8, 8, 4), (2, 4, 4, 4), (2, 2, 2, 4), (2, 1, 1, 4), (2, 1, 1, 4)]
  assert shapes["thing_mask_logits"] == (2, 5, 4, 7, 256) and shapes["thing_weights"] == (2, 5, 4, 7)
  assert shapes["stuff_mask_logits"] == (2, 5, 4, 256) and shapes["stuff_valid"] == (2, 5, 4)


def test_predict_gives_the_contract_in_static_shapes(trained):
  module, _, state, _, batch, _, _ = trained
  predict = counting_jit(lambda v, x: panoptic_fcn.predict(module.apply(v, x, train=False), tiny_config()))
  outputs = jax.device_get(predict({"params": state[0], "batch_stats": state[1]}, batch["image"]))
  k = 50 + 16 + 4 + 1 + 1  # min(h w, 100 / 2) centres of P3..P7 on a 64 x 64 input
  assert outputs["panoptic"].shape == (2, 64, 64) and outputs["panoptic"].dtype == np.int32
  assert outputs["masks"].shape == (2, k, 64, 64) and outputs["boxes"].shape == (2, k, 4)
  for key in ("scores", "labels", "valid"):
    assert outputs[key].shape == (2, k), key
  for key in panoptic_fcn.SEGMENT_KEYS:
    assert outputs[f"segment_{key}"].shape == (2, k + 3), key
  assert np.all(np.diff(outputs["scores"], axis=1) <= 0)  # best first
  assert np.all((outputs["labels"][outputs["valid"]] >= 1) & (outputs["labels"][outputs["valid"]] <= 4))
  for b in range(2):  # the rows describe the map: ids, areas
    valid = outputs["segment_valid"][b]
    ids = outputs["segment_id"][b][valid]
    np.testing.assert_array_equal(ids, np.arange(1, len(ids) + 1))
    np.testing.assert_array_equal(np.bincount(outputs["panoptic"][b].ravel(), minlength=len(ids) + 1)[1:],
                                  outputs["segment_area"][b][valid])
  assert outputs["segment_valid"].any()
  _ = predict({"params": state[0], "batch_stats": state[1]}, _panoptic_batch(0)["image"])
  assert predict.traces == 1


def test_bad_config_names_the_field():
  config = tiny_config()
  config.pos_numb = 3
  with pytest.raises(ValueError, match="pos_numb"):
    panoptic_fcn.build(config, _info())
  config = tiny_config()
  config.head_channels = 48
  with pytest.raises(ValueError, match="config.model.head_channels"):
    panoptic_fcn.build(config, _info())
  config = tiny_config()
  config.instance_scales = SCALES[:4]
  with pytest.raises(ValueError, match="config.model.instance_scales"):
    panoptic_fcn.build(config, _info())


@pytest.mark.parametrize("name", ["panoptic_fcn_r50_1x_coco", "demo_panoptic_fcn"])
def test_experiment_configs_build(name):
  from segjax.train.optim import learning_rate_schedule, make_optimizer  # pylint: disable=g-import-not-at-top
  config = importlib.import_module(f"experiments.{name}").get_config()
  is_thing = (True,) * 80 + (False,) * 53 if "coco" in name else IS_THING
  module = panoptic_fcn.build(config.model, _info(is_thing))
  images = jax.ShapeDtypeStruct((1, 128, 128, 3), jnp.float32)
  shapes = jax.eval_shape(lambda x: module.init(jax.random.key(0), x), images)
  params = shapes["params"]
  assert params["position_head"]["out_inst"]["kernel"].shape[-1] == sum(is_thing)
  assert params["position_head"]["out_sem"]["kernel"].shape[-1] == len(is_thing) - sum(is_thing) + 1  # + things
  assert params["thing_generator"]["kernel"].shape[-1] == config.model.encoder_channels
  # The official POSITION_HEAD.DEFORM: modulated deformable convs with their offset/mask convs (27 = 3 x 3 x 3).
  deform = "offset_mask_conv" in params["position_head"]["position_conv0"]
  assert deform == ("coco" in name)
  if deform:
    assert params["position_head"]["position_conv2"]["offset_mask_conv"]["kernel"].shape == (3, 3, 256, 27)
  jax.eval_shape(make_optimizer(config).init, params)  # config.optimizer.frozen matches parameters
  schedule = learning_rate_schedule(config)
  if "coco" in name:  # PanopticFCN-R50-1x: lr 0.01, batch 16, 90k iterations, WarmupPolyLR (power 0.9, 1000 warm-up)
    assert config.batch_size == 16 and config.total_steps == 90_000
    c = config.model
    assert (c.head_channels, c.encoder_channels, c.pos_num, c.segment_weight) == (256, 64, 7, 3.0)
    assert (c.mask_threshold, c.similarity_threshold, c.instance_score_threshold) == (0.4, 0.9, 0.2)
    assert float(schedule(0)) == pytest.approx(0.01 * 0.001, rel=1e-4)
    assert float(schedule(1000)) == pytest.approx(0.01, rel=1e-4)
    for step in (5_000, 45_000, 85_000):  # detectron2's (1 - step / 90k)^0.9
      assert float(schedule(step)) == pytest.approx(0.01 * (1 - step / 90_000) ** 0.9, rel=0.015)
    assert float(schedule(90_000)) == pytest.approx(0.0, abs=1e-9)


def _focal64(logits, targets):
  """Sigmoid focal loss (Lin et al. 2017, Eq. 5; alpha 0.25, gamma 2) in float64 with soft targets t: the weight
  alpha t + (1 - alpha)(1 - t) times (1 - p_t)^2 times the binary cross-entropy, p_t = p t + (1 - p)(1 - t)."""
  p = 1 / (1 + np.exp(-logits))
  ce = (1 - targets) * logits + np.log1p(np.exp(-logits))
  p_t = p * targets + (1 - p) * (1 - targets)
  alpha = panoptic_fcn.FOCAL_ALPHA
  return (alpha * targets + (1 - alpha) * (1 - targets)) * ce * (1 - p_t) ** panoptic_fcn.FOCAL_GAMMA


def _image_blind_region_focal(config, first_step, last_step):
  """The stuff focal loss (loss_pos_st / position_weight: per image, the sum over levels and region classes of the
  mean over the level's positions) of the best predictor that ignores the image, on the training examples of steps
  first_step..last_step (the same batches the loop trains on: same seed, same augmentation). Such a predictor gives
  every example the same logit at each (level, position, class), so the best one takes there the logit minimising
  the mean focal loss over the examples (searched on a 0.005-spaced grid over [-12, 12]); it may use the position,
  so it knows that sky lies above grass above road."""
  from segjax.data import pipeline  # pylint: disable=g-import-not-at-top
  is_thing = tuple(bool(c.isthing) for c in pipeline.dataset_info(config).categories)
  batches = pipeline.make_train_iterator(config, start_step=first_step - 1, keys=("semantic",))
  level_shapes = _level_shapes(*config.dataset.image_size)
  targets = [[] for _ in level_shapes]
  for _ in range(last_step - first_step + 1):
    for semantic in np.asarray(next(batches)["semantic"]):
      _, region_targets, _ = panoptic_fcn.stuff_targets(semantic, is_thing, level_shapes)
      for level, target in enumerate(region_targets):
        targets[level].append(np.asarray(target, np.float64))
  logits = np.linspace(-12, 12, 4801)[:, None, None, None, None]
  return sum(_focal64(logits, np.stack(t)[None]).mean(1).min(0).mean((0, 1)).sum() for t in targets)


@pytest.mark.slow
def test_tiny_run_through_the_loop_writes_pq_and_pictures(tmp_path):
  """200 steps of FAST_OPTIMIZER: the position head's stuff focal loss (loss_pos_st) over the last 8 steps (four
  epochs of the 16 training images) ends below 0.8 x that of the best image-blind predictor on the same batches
  (_image_blind_region_focal), so the region maps use the image; PQ, box/mask AP and the pictures are written."""
  from segjax.train.loop import train_and_evaluate  # pylint: disable=g-import-not-at-top
  steps, last = 200, 8
  config = tiny_loop_config(tmp_path / "data", total_steps=steps, eval_every_steps=steps,
                            checkpoint_every_steps=steps,
                            **{"dataset.num_train": 16, "dataset.num_val": 8, **FAST_OPTIMIZER})
  config.model = tiny_config()
  metrics = train_and_evaluate(config, str(tmp_path / "workdir"))
  evaluation = read_metrics(tmp_path / "workdir", "eval")
  assert [r["step"] for r in evaluation] == [steps]
  for name in ("PQ", "SQ", "RQ", "PQ_th", "PQ_st", "box_AP", "mask_AP"):
    assert evaluation[0][name] == pytest.approx(metrics[name])
    assert -1.0 <= metrics[name] <= 1.0
  assert 0.0 <= metrics["PQ"] <= 1.0
  train = read_metrics(tmp_path / "workdir")
  assert [r["step"] for r in train] == list(range(1, steps + 1))
  assert all(np.isfinite(r["loss_seg_st"]) and r["loss_seg_st"] > 0 for r in train)
  region_losses = [r["loss_pos_st"] / config.model.position_weight for r in train[-last:]]
  image_blind = _image_blind_region_focal(config, steps - last + 1, steps)
  assert np.mean(region_losses) < 0.8 * image_blind, (region_losses, image_blind)
  assert os.path.getsize(tmp_path / "workdir" / "pictures" / f"eval_step{steps:06d}.png") > 0
