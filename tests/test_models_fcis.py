"""FCIS: the assembling with joint mask prediction and classification equals a float64 NumPy port of Sec. 3.1 of
Li et al. 2017 on random score maps; mask voting equals a NumPy loop over the detections and voters; a tiny model's
losses fall on a fixed batch and its train step compiles once for batches with 0 to max_instances instances; the
paper config and the demo build."""
import functools
import importlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from segjax.models import fcis
from segjax.ops.fcis import mask_voting, voting_regions
from segjax.ops.masks import paste_masks_in_image
from train_util import counting_jit


def _assemble_reference(maps, boxes, k, m):
  """Sec. 3.1 in float64, boxes on the map's grid (integers x0, y0, x0 + w, y0 + h).

  The RoI is divided into m x m bins (floor(i h / m) <= y - y0 < ceil((i + 1) h / m), R-FCN's footnote), grouped
  into k x k cells of (m / k)^2 bins; bin (i, j) averages the score map of its cell (i k / m, j k / m) for each
  class and for inside / outside (channel (2 c + s) k^2 + cell, s = 1 inside). Per class: mask logit = inside -
  outside (its two-way softmax), class logit = the mean over the m x m bins of max(inside, outside).
  """
  classes = maps.shape[-1] // (2 * k * k)
  logits = np.zeros((len(boxes), classes))
  masks = np.zeros((len(boxes), m, m, classes))
  for r, (x0, y0, x1, y1) in enumerate(boxes):
    w, h = x1 - x0, y1 - y0
    for i in range(m):
      for j in range(m):
        ys = slice(y0 + (i * h) // m, y0 - ((-(i + 1) * h) // m))
        xs = slice(x0 + (j * w) // m, x0 - ((-(j + 1) * w) // m))
        cell = (i * k // m) * k + j * k // m
        outside = maps[ys, xs, (2 * np.arange(classes)) * k * k + cell].mean((0, 1))
        inside = maps[ys, xs, (2 * np.arange(classes) + 1) * k * k + cell].mean((0, 1))
        masks[r, i, j] = inside - outside
        logits[r] += np.maximum(inside, outside) / m**2
  return logits, masks


def test_assembling_and_joint_scores_equal_the_papers_sec_3_1():
  """k = 7, m = 21 (the reference's group and pooled sizes), 3 classes, 2 images of 20 x 24 cells; RoIs on the map's
  grid, ending before the last row and column (which ps_roi_pool clips away, as torchvision), 1 to 23 cells wide."""
  k, m, classes, stride = 7, 21, 3, 16
  rng = np.random.default_rng(0)
  maps = rng.normal(size=(2, 20, 24, 2 * k * k * classes))
  grid = []
  for _ in range(2):
    x0, y0 = rng.integers(0, 12, 6), rng.integers(0, 10, 6)
    x1 = np.minimum(x0 + rng.integers(1, 24, 6), 23)
    y1 = np.minimum(y0 + rng.integers(1, 20, 6), 19)
    grid.append(np.stack([x0, y0, x1, y1], 1))
  grid = np.stack(grid)
  grid[0, 0] = (0, 0, 23, 19)
  grid[0, 1] = (5, 5, 6, 6)
  logits, masks = fcis.assemble(jnp.asarray(maps, jnp.float32), jnp.asarray(grid * stride, jnp.float32), k, m,
                                1 / stride)
  for n in range(2):
    ref_logits, ref_masks = _assemble_reference(maps[n], grid[n], k, m)
    np.testing.assert_allclose(logits[n], ref_logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(masks[n], ref_masks, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pooler", ["pool", "align"])
def test_grouped_pooling_is_pooling_of_the_cells_channels_repeated(pooler):
  """group_size k < output m: bin (i, j) reads cell (i k / m, j k / m); the same as the ungrouped op on maps whose
  channel of every bin is a copy of its cell's (k = 3, m = 9, 2 outputs)."""
  from segjax.ops.roi import ps_roi_align, ps_roi_pool  # pylint: disable=g-import-not-at-top
  k, m, d = 3, 9, 2
  rng = np.random.default_rng(1)
  maps = jnp.asarray(rng.normal(size=(2, 12, 10, d * k * k)), jnp.float32)
  rois = jnp.asarray([[0, 8, 4, 120, 90], [1, 0, 0, 159, 191], [1, 30.5, 40.2, 70.7, 77.1]], jnp.float32)
  cell = (np.arange(m)[:, None] * k // m) * k + np.arange(m)[None] * k // m  # [m, m]
  expanded = maps[..., (np.arange(d)[:, None, None] * k * k + cell).reshape(-1)]
  op = ps_roi_pool if pooler == "pool" else functools.partial(ps_roi_align, sampling_ratio=2)
  np.testing.assert_allclose(op(maps, rois, m, 1 / 16, group_size=k), op(expanded, rois, m, 1 / 16),
                             rtol=1e-5, atol=1e-6)


def _read(mask, box, y, x):
  """A voter's m x m mask read bilinearly at image point (y, x): cell centres at box start + (u + 0.5) side / m,
  positions clamped to the outer cell centres, zero outside the box."""
  x1, y1, x2, y2 = box
  if not (x1 <= x <= x2 and y1 <= y <= y2):
    return 0.0
  m = mask.shape[0]
  u = np.clip((y - y1) / max(y2 - y1, 1e-6) * m - 0.5, 0, m - 1)
  v = np.clip((x - x1) / max(x2 - x1, 1e-6) * m - 0.5, 0, m - 1)
  u0, v0 = int(np.floor(u)), int(np.floor(v))
  u1, v1 = min(u0 + 1, m - 1), min(v0 + 1, m - 1)
  fu, fv = u - u0, v - v0
  return ((1 - fu) * (1 - fv) * mask[u0, v0] + (1 - fu) * fv * mask[u0, v1] + fu * (1 - fv) * mask[u1, v0]
          + fu * fv * mask[u1, v1])


def _iou(a, b):
  ix = max(min(a[2], b[2]) - max(a[0], b[0]), 0)
  iy = max(min(a[3], b[3]) - max(a[1], b[1]), 0)
  union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy
  return ix * iy / union if union > 0 else 0.0


def _voters_reference(box, label, vboxes, vlabels, vvalid, iou_thr):
  return [v for v in range(len(vboxes)) if vvalid[v] and vlabels[v] == label and _iou(box, vboxes[v]) >= iou_thr]


def _regions_reference(boxes, labels, vboxes, vlabels, vvalid, iou_thr):
  """The box enclosing each detection's box and its voters' boxes."""
  out = np.array(boxes, np.float64)
  for d, box in enumerate(boxes):
    for v in _voters_reference(box, labels[d], vboxes, vlabels, vvalid, iou_thr):
      out[d, :2] = np.minimum(out[d, :2], vboxes[v, :2])
      out[d, 2:] = np.maximum(out[d, 2:], vboxes[v, 2:])
  return out


def _voting_reference(boxes, labels, vboxes, vlabels, vscores, vmasks, vvalid, size, iou_thr, bin_thr, regions):
  """FCIS mask voting (Sec. 3.2): for each detection, the voters of its class with box IoU >= iou_thr, each
  binarised at bin_thr at the centres of the size x size cells of the detection's region, averaged weighted by
  their scores."""
  out = np.zeros((len(boxes), size, size))
  for d, (box, region) in enumerate(zip(boxes, regions)):
    voters = _voters_reference(box, labels[d], vboxes, vlabels, vvalid, iou_thr)
    total = sum(vscores[v] for v in voters)
    for i in range(size):
      for j in range(size):
        y = region[1] + (i + 0.5) / size * (region[3] - region[1])
        x = region[0] + (j + 0.5) / size * (region[2] - region[0])
        out[d, i, j] = sum(vscores[v] * (_read(vmasks[v], vboxes[v], y, x) >= bin_thr) for v in voters)
    out[d] /= max(total, 1e-12)
  return out


@pytest.mark.parametrize("enclosing", [False, True])
def test_mask_voting_equals_a_numpy_loop(enclosing):
  """12 voters of 2 classes around 3 objects (jittered copies of their boxes, some invalid), 4 detections (one with
  no voter of its class): the voted 9 x 9 masks on the detections' boxes, or on the boxes enclosing them and their
  voters (voting_regions), equal the loops above."""
  rng = np.random.default_rng(3)
  centres = np.array([[30, 30, 70, 80], [50, 20, 90, 60], [5, 5, 25, 20]], np.float64)
  vboxes = centres[rng.integers(0, 3, 12)] + rng.uniform(-6, 6, (12, 4))
  vlabels = rng.integers(1, 3, 12)
  vscores = rng.uniform(0.1, 1, 12)
  vmasks = rng.uniform(0, 1, (12, 7, 7))
  vvalid = rng.uniform(size=12) < 0.8
  boxes = np.concatenate([vboxes[:3], [[0, 60, 40, 100]]])
  labels = np.concatenate([vlabels[:3], [2]])
  args = [jnp.asarray(a, jnp.float32) if a.dtype.kind == "f" else jnp.asarray(a) for a in
          (boxes, labels, vboxes, vlabels, vscores, vmasks, vvalid)]
  regions = boxes
  if enclosing:
    regions = _regions_reference(boxes, labels, vboxes, vlabels, vvalid, 0.5)
    assert np.any(regions != boxes)
    np.testing.assert_allclose(voting_regions(*args[:4], args[6], 0.5), regions, atol=1e-5)
  ours = mask_voting(*args, 9, 0.5, 0.4, regions=jnp.asarray(regions, jnp.float32) if enclosing else None)
  ref = _voting_reference(boxes, labels, vboxes, vlabels, vscores, vmasks, vvalid, 9, 0.5, 0.4, regions)
  assert np.count_nonzero(ref.reshape(4, -1).max(1)) >= 3  # the detections with voters get masks
  # A sample near a 0.4 crossing may land on either side in float32: at most a few cells differ.
  mismatched = np.abs(np.asarray(ours) - ref) > 1e-4
  assert mismatched.mean() < 0.01, mismatched.sum()
  np.testing.assert_allclose(np.asarray(ours)[~mismatched], ref[~mismatched], atol=1e-4)


@pytest.mark.parametrize("voting", [True, False])
def test_a_detections_mask_is_binarised_in_the_image(voting):
  """Inference pastes the soft mask and binarises it in the image, as the reference's evaluation (msracver/FCIS,
  lib/utils/mask_voc2coco.py at 9ae6adeb1753044be82f1ff25ba6b5e1ce2ced6e: each mask resized to its box in image
  pixels, then >= BINARY_THRESH 0.4). One detection, its own only voter, box 60 px wide, its 15 x 15 mask a ramp
  across x whose bilinear reading crosses 0.4 at x = 31.6, between the centres of cells 6 and 7 (x = 28 and 32).
  In every row the first foreground column must be the reference's (the first pixel centre past 31.6, column 32)
  to within one pixel; binarising the 15 x 15 cells before pasting moves it to their midpoint, column 30. With
  voting, the box is the tight box of the mask (lib/mask/mask_transform.py, mask_aggregation, same commit)."""
  config = fcis.model_config()
  config.update({"roi_size": 15, "ps_size": 3, "vote_size": 30, "mask_voting": voting, "detections_per_image": 2,
                 "detection_candidates": 4})
  module = fcis.FCIS(num_classes=2, config=fcis._config(config))  # pylint: disable=protected-access
  box = np.array([2.0, 2.0, 62.0, 62.0])
  ramp = np.clip(0.4 + 0.05 * (np.arange(15) - 6.9), 0, 1)
  masks = np.zeros((1, 15, 15, 2), np.float32)
  masks[0, :, :, 1] = ramp[None, :]
  detect = module._detect_image  # pylint: disable=protected-access
  out = detect(jnp.asarray(box[None], jnp.float32), jnp.asarray([[0.1, 0.9]]), jnp.asarray(masks),
               jnp.asarray([True]), image_hw=(64, 64))
  assert bool(out["valid"][0]) and int(out["labels"][0]) == 1
  reference = np.array([[_read(masks[0, :, :, 1], box, y + 0.5, x + 0.5) >= 0.4 for x in range(64)]
                        for y in range(64)])
  pasted = np.asarray(out["masks"][0]) > 0.5
  rows = range(4, 60)
  first = [int(np.argmax(pasted[y])) for y in rows]
  expected = [int(np.argmax(reference[y])) for y in rows]
  assert set(expected) == {32}
  assert np.all(pasted[rows.start:rows.stop].any(1)) and np.all(np.abs(np.array(first) - 32) <= 1), first
  if voting:  # the reference's voted box: the tight box of the voted mask (mask_transform.py, mask_aggregation)
    ys, xs = np.nonzero(reference)
    np.testing.assert_allclose(out["boxes"][0], [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], atol=1)


def tiny_config():
  config = fcis.model_config()
  config.update({"depth": 18, "width": 8, "norm": "batch", "head_channels": 32, "ps_size": 3, "roi_size": 9,
                 "anchor_sizes": ((16, 32, 64),), "rpn_pre_nms_top_n_train": 200, "rpn_post_nms_top_n_train": 60,
                 "rpn_pre_nms_top_n_test": 200, "rpn_post_nms_top_n_test": 60, "ohem_rois": 16,
                 "detections_per_image": 10, "detection_candidates": 100})
  return config


SIZE = 96


def _batch(num_instances, max_instances=4, seed=0):
  """Two images with num_instances bright discs of class 1 (yellow) or 2 (cyan), their boxes and masks."""
  rng = np.random.default_rng(seed)
  image = rng.uniform(0, 0.2, (2, SIZE, SIZE, 3)).astype(np.float32)
  boxes = np.zeros((2, max_instances, 4), np.float32)
  classes = np.zeros((2, max_instances), np.int32)
  masks = np.zeros((2, max_instances, SIZE, SIZE), np.float32)
  yy, xx = np.mgrid[:SIZE, :SIZE] + 0.5
  for b in range(2):
    for i in range(num_instances):
      side = int(rng.integers(24, 40))
      x, y = rng.integers(0, SIZE - side, 2)
      disc = (yy - y - side / 2) ** 2 + (xx - x - side / 2) ** 2 <= (side / 2) ** 2
      boxes[b, i] = (x, y, x + side, y + side)
      classes[b, i] = 1 + i % 2
      masks[b, i] = disc
      image[b, disc] = (0.9, 0.8, 0.1) if i % 2 == 0 else (0.1, 0.8, 0.9)
  valid = np.arange(max_instances)[None].repeat(2, 0) < num_instances
  return {"image": image, "boxes": boxes, "classes": classes, "masks": masks,
          "is_crowd": np.zeros((2, max_instances), bool), "instance_valid": valid}


def _module(config):
  return fcis.build(config, ml_collections.ConfigDict({"num_thing_classes": 2}))


def _train_step(module, config, optimizer):
  @counting_jit
  def step(state, batch, key):
    params, batch_stats, opt_state = state

    def loss_fn(params):
      outputs, updates = module.apply(
          {"params": params, "batch_stats": batch_stats}, batch["image"], train=True, mutable=["batch_stats"],
          rngs={"sampling": key}, targets={k: batch[k] for k in fcis.FORWARD_KEYS})
      total, metrics = fcis.loss(outputs, batch, config)
      return total, (metrics, updates)

    (value, (metrics, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    deltas, opt_state = optimizer.update(grads, opt_state)
    return (optax.apply_updates(params, deltas), updates["batch_stats"], opt_state), (value, metrics)

  return step


STEPS = 40
SEED = 0


@pytest.mark.slow  # compiles the whole train step and runs 40 steps: past the non-slow budget
def test_tiny_model_trains_without_recompiling():
  """40 Adam steps on one batch of 2 images with 3 discs of 2 classes, balanced RoI sample, C5 at stride 8. At
  initialisation the maps' std-0.01 weights give near-zero logits: the class cross-entropy is log 3 (the uniform
  guess) and the mask cross-entropy log 2. After training, the classifier (mean of the last 3 steps) must be below
  half of log 3, and on a fresh RoI sample the positives' mask cross-entropy below 0.8 x that of the best constant
  predictor of their targets (the entropy of their mean foreground fraction). Met for seeds 0, 1 and 2 of the
  batch and initialisation. Then batches with 0 and 4 instances run the same compiled step, and inference
  returns static-shape detections of the trained classes with masks at input size."""
  config = tiny_config()
  config.update({"ohem": False, "output_stride": 8})
  module = _module(config)
  batch = _batch(3, seed=SEED)
  variables = jax.jit(lambda x: module.init(jax.random.key(SEED), x, train=False))(batch["image"])
  optimizer = optax.adam(1e-2)
  state = (variables["params"], variables["batch_stats"], optimizer.init(variables["params"]))
  step = _train_step(module, config, optimizer)
  history = []
  for i in range(STEPS):
    state, (_, metrics) = step(state, batch, jax.random.key(i))
    history.append({k: float(v) for k, v in metrics.items()})
    if i == 0:
      assert abs(history[0]["loss_classifier"] - np.log(3)) < 0.05, history[0]
      assert abs(history[0]["loss_mask"] - np.log(2)) < 0.05, history[0]
  assert np.mean([h["loss_classifier"] for h in history[-3:]]) < 0.5 * np.log(3), history

  forward = jax.jit(lambda v, x, t, key: module.apply(v, x, train=True, mutable=["batch_stats"],
                                                        rngs={"sampling": key}, targets=t)[0])
  outputs = forward({"params": state[0], "batch_stats": state[1]}, batch["image"],
                    {k: batch[k] for k in fcis.FORWARD_KEYS}, jax.random.key(STEPS))
  positive = np.asarray(outputs["roi_positive"] & outputs["roi_selected"])
  targets = np.asarray(outputs["mask_targets"], np.float64)[positive]
  fraction = targets.mean()
  constant = -(fraction * np.log(fraction) + (1 - fraction) * np.log(1 - fraction))
  assert positive.sum() >= 8 and float(fcis.loss(outputs, batch, config)[1]["loss_mask"]) < 0.8 * constant

  for count in (0, 4):
    state, (value, _) = step(state, _batch(count, seed=count), jax.random.key(100 + count))
    assert np.isfinite(float(value))
  assert step.traces == 1

  predict = jax.jit(lambda v, x: fcis.predict(module.apply(v, x, train=False), None))
  outputs = predict({"params": state[0], "batch_stats": state[1]}, batch["image"])
  assert outputs["masks"].shape == (2, 10, SIZE, SIZE) and outputs["valid"].dtype == jnp.bool_
  assert outputs["valid"].any() and np.all(np.isin(outputs["labels"][outputs["valid"]], (1, 2)))


def test_each_detection_keeps_the_roi_its_mask_was_assembled_on():
  """Inference pairs every score and mask with the RoI they were assembled on (the reference's im_detect,
  msracver/FCIS fcis/core/tester.py at 97a2859db3b617e9f198fc834969aa79ef1ce9da: pred_boxes = rois, the RPN's RoIs
  then the once-regressed ones). Random weights, the box maps' bias 0.5 (every RoI regressed to a box moved by a
  twentieth and grown by a tenth of its size) and the score maps scaled up so that masks vary inside a box;
  without voting, each detection's mask in the image must be the mask assembled on its own box for its class,
  pasted and binarised at 0.4 (a mask assembled on one box and pasted into another misses that in most pixels)."""
  config = tiny_config()
  config.update({"mask_voting": False, "detections_per_image": 20})
  module = _module(config)
  images = jnp.asarray(_batch(3)["image"])
  variables = jax.jit(lambda x: module.init(jax.random.key(0), x))(images)
  head = variables["params"]["fcis_head"]
  head["fcis_bbox"]["bias"] = jnp.full_like(head["fcis_bbox"]["bias"], 0.5)
  head["fcis_cls_seg"]["kernel"] = head["fcis_cls_seg"]["kernel"] * 1e3
  apply = jax.jit(lambda v, x: module.apply(v, x, capture_intermediates=lambda m, _: m.name == "fcis_head",
                                            mutable=["intermediates"]))
  outputs, state = apply(variables, images)
  score_maps = state["intermediates"]["fcis_head"]["__call__"][0][0]
  _, mask_logits = fcis.assemble(score_maps, outputs["boxes"], config.ps_size, config.roi_size,
                                 1 / config.output_stride, config.ps_pooler, config.sampling_ratio)
  own = jnp.take_along_axis(mask_logits, outputs["labels"][:, :, None, None, None], -1)[..., 0]
  expected = jax.vmap(lambda m, b: paste_masks_in_image(jax.nn.sigmoid(m), b, SIZE, SIZE))(own, outputs["boxes"])
  valid = np.asarray(outputs["valid"])
  assert valid.sum() >= 10
  expected, masks = np.asarray(expected)[valid] >= 0.4, np.asarray(outputs["masks"])[valid] > 0.5
  boxes = np.asarray(outputs["boxes"])[valid]
  filled = masks.sum() / np.prod(boxes[:, 2:] - boxes[:, :2], -1).sum()
  assert 0.2 < filled < 0.8, filled  # the masks are neither empty nor their whole boxes
  assert np.mean(expected != masks) < 1e-3


def test_unknown_config_key_is_an_error():
  config = fcis.model_config()
  config.roi_sise = 21
  with pytest.raises(ValueError, match="roi_sise"):
    _module(config)


@pytest.mark.parametrize("name", ["fcis_r101_coco", "demo_fcis"])
def test_experiment_configs_build(name):
  """The paper config: ResNet-101, a 1024-d reduction, 2 k^2 (C + 1) = 98 x 81 inside / outside maps and
  4 k^2 = 196 box maps, M = 21, OHEM 128 of 300; the demo builds; both optimizers initialise."""
  from segjax.models import get_model  # pylint: disable=g-import-not-at-top
  from segjax.train.optim import make_optimizer  # pylint: disable=g-import-not-at-top
  experiment = importlib.import_module(f"experiments.{name}")
  config = experiment.get_config()
  assert config.model.name == "fcis" and get_model("fcis").build is fcis.build
  assert f"--config=experiments/{name}.py" in experiment.__doc__
  classes = 80 if name == "fcis_r101_coco" else 4
  module = get_model("fcis").build(config.model, ml_collections.ConfigDict({"num_thing_classes": classes}))
  shapes = jax.eval_shape(lambda x: module.init(jax.random.key(0), x), jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))
  head = shapes["params"]["fcis_head"]
  if name == "fcis_r101_coco":
    assert "Needs" in experiment.__doc__
    assert head["conv_new"]["kernel"].shape == (1, 1, 2048, 1024)
    assert head["fcis_cls_seg"]["kernel"].shape[-1] == 2 * 49 * 81 and head["fcis_bbox"]["kernel"].shape[-1] == 196
    assert len([k for k in shapes["params"]["backbone"] if k.startswith("layer3_")]) == 23
    assert config.model.roi_size == 21 and config.model.ohem and config.model.ohem_rois == 128
    assert config.model.rpn_post_nms_top_n_train == 300 and config.model.nms_threshold == 0.3
  jax.eval_shape(make_optimizer(config).init, shapes["params"])


@pytest.mark.slow  # ~60 s of a fresh-cache make test: R-FCN's sibling test covers the position-sensitive path there
def test_eight_device_training_gives_the_losses_of_one_device():
  """Data-parallel FCIS (RPN and RoI sampling, OHEM, the assembled masks) equals one device over two steps."""
  from train_util import concatenated_batches, losses_on_one_and_eight_devices  # pylint: disable=g-import-not-at-top
  config = tiny_config()
  module = _module(config)
  batches = [concatenated_batches(_batch, (3, 0, 4, 1), 1), concatenated_batches(_batch, (2, 4, 1, 3), 5)]
  variables = jax.device_get(module.init(jax.random.key(0), batches[0]["image"], train=False))
  keys = ("loss", "loss_objectness", "loss_classifier", "loss_mask")
  losses = losses_on_one_and_eight_devices(module, fcis, config, variables, batches, keys)
  assert np.all(np.array(losses[1])[:, 3] > 0)  # foreground RoIs reached the mask loss
  np.testing.assert_allclose(losses[8], losses[1], rtol=1e-4, atol=1e-6)
