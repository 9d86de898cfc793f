"""SDS (Hariharan et al. 2014; segjax.models.sds): the box and region pathways' inputs, region sampling by region
overlap, the refinement's paste-back, compile-once training across instance counts, fitting a fixed batch, and the
stand-in region proposals (segjax.data.region_proposals)."""
import types

import jax
import numpy as np
import optax
import pytest
from scipy import ndimage

from segjax.data import region_proposals
from segjax.models import get_model, sds
from train_util import counting_jit


def _config(**overrides):
  config = sds.model_config()
  config.update({"width": 12, "representation_size": 32, "warp_size": 67, "context_padding": 5,
                 "box_head_dropout": 0.0, "roi_batch_size_per_image": 16, "detections_per_image": 8,
                 "detection_candidates": 64, **overrides})
  return config


def _batch(counts, size=48, m=4, p=12, seed=0):
  """Images with a bright disc or square per object (class 1 yellow discs, class 2 cyan squares), their padded masks,
  and region proposals: each object's mask grown by a pixel, shifted, or cut in half, plus random rectangles."""
  rng = np.random.default_rng(seed)
  n = len(counts)
  image = rng.uniform(0, 0.2, (n, size, size, 3)).astype(np.float32)
  masks, classes, valid = np.zeros((n, m, size, size), np.uint8), np.zeros((n, m), np.int32), np.zeros((n, m), bool)
  regions, region_valid = np.zeros((n, p, size, size), np.uint8), np.zeros((n, p), bool)
  y, x = np.mgrid[:size, :size]
  for b, count in enumerate(counts):
    for i in range(count):
      cx, cy = rng.integers(8, size - 8, 2)
      r = int(rng.integers(4, 8))
      label = int(rng.integers(1, 3))
      shape = (x - cx) ** 2 + (y - cy) ** 2 <= r * r if label == 1 else (abs(x - cx) <= r) & (abs(y - cy) <= r)
      masks[b, i], classes[b, i], valid[b, i] = shape, label, True
      image[b][shape] = (0.9, 0.8, 0.1) if label == 1 else (0.1, 0.8, 0.9)
    for j in range(p):
      if count and j < 2 * count:
        source = masks[b, j % count].astype(bool)
        regions[b, j] = (ndimage.binary_dilation(source) if j < count else
                         np.roll(source, int(rng.integers(-3, 4)), axis=1))
      else:
        x1, y1 = rng.integers(0, size - 10, 2)
        regions[b, j, y1:y1 + int(rng.integers(4, 20)), x1:x1 + int(rng.integers(4, 20))] = 1
      region_valid[b, j] = regions[b, j].any()
  return {"image": image, "masks": masks, "classes": classes, "instance_valid": valid,
          "is_crowd": np.zeros((n, m), bool), "region_masks": regions, "region_valid": region_valid}


def _numpy_iou(a, b):
  a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
  inter = a @ b.T
  union = a.sum(1)[:, None] + b.sum(1)[None] - inter
  return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def test_registered():
  assert get_model("sds") is sds


def test_region_pathway_input_is_the_box_warp_with_the_background_zeroed():
  """float64 NumPy: each region's frame (its mask's tight box dilated by warp / (warp - 2 context)) sampled
  bilinearly at the output pixels' centres (scipy.ndimage.map_coordinates, order 1); the region input is that warp
  where the mask sampled the same way is >= 0.5, else 0. Frames lie inside the image, away from border handling."""
  rng = np.random.default_rng(0)
  size, padding, h, w = 31, 3, 60, 70
  image = rng.normal(size=(1, h, w, 3)).astype(np.float32)
  masks = np.zeros((1, 3, h, w), np.float32)
  y, x = np.mgrid[:h, :w]
  masks[0, 0] = (x - 30) ** 2 / 100 + (y - 28) ** 2 / 49 <= 1
  masks[0, 1] = (x >= 20) & (x < 45) & (y >= 15) & (y < 40) & (x + y < 62)
  masks[0, 2] = ndimage.binary_dilation(rng.random((h, w)) > 0.97, iterations=2) & (x > 15) & (x < 55) & (y > 12) \
      & (y < 48)
  boxes = np.asarray(sds.region_boxes(masks))
  box_input, region_input = (np.asarray(a) for a in sds.region_inputs(image, boxes, masks, size, padding))
  for k in range(3):
    ys, xs = np.nonzero(masks[0, k])
    np.testing.assert_array_equal(boxes[0, k], [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    x1, y1, x2, y2 = boxes[0, k].astype(np.float64)
    scale = size / (size - 2 * padding)
    cx, cy, hw, hh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2 * scale, (y2 - y1) / 2 * scale
    xs = cx - hw + (np.arange(size) + 0.5) * 2 * hw / size - 0.5  # pixel i's centre is at index coordinate i
    ys = cy - hh + (np.arange(size) + 0.5) * 2 * hh / size - 0.5
    assert xs.min() >= 0 and ys.min() >= 0 and xs.max() <= w - 1 and ys.max() <= h - 1
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    warp = np.stack([ndimage.map_coordinates(image[0, :, :, c].astype(np.float64), [yy, xx], order=1)
                     for c in range(3)], -1)
    inside = ndimage.map_coordinates(masks[0, k].astype(np.float64), [yy, xx], order=1)
    np.testing.assert_allclose(box_input[k], warp, atol=1e-4)
    clear = np.abs(inside - 0.5) > 1e-4  # float32 sample positions decide ties at exactly 0.5
    expected = warp * (inside >= 0.5)[..., None]
    np.testing.assert_allclose(region_input[k][clear], expected[clear], atol=1e-4)
    assert 0 < (inside >= 0.5).mean() < 1


def test_sampled_region_labels_follow_region_overlap():
  """Each sampled region is a proposal or a ground-truth mask; its label is the class of the object it overlaps
  most when that NumPy mask IoU is >= 0.5, else background; positives are min(foreground, 25% of 16)."""
  batch = _batch((3,), p=20, seed=3)
  masks, gt = batch["region_masks"][0].astype(np.float32), batch["masks"][0].astype(np.float32)
  valid, gt_valid = batch["region_valid"][0], batch["instance_valid"][0]
  regions, labels, matched, overlap, positive, sampled = (np.asarray(a) for a in sds.sample_regions(
      jax.random.key(0), masks, valid, gt, batch["classes"][0], gt_valid, fg_iou=0.5, bg_iou=0.5, num_samples=16,
      positive_fraction=0.25))
  candidates = np.concatenate([masks, gt])
  candidate_valid = np.concatenate([valid, gt_valid])
  iou = _numpy_iou(gt[gt_valid], candidates)
  best = iou.max(0)
  expected = np.where(best >= 0.5, batch["classes"][0][gt_valid][iou.argmax(0)], 0)
  assert positive.sum() == min(int(((best >= 0.5) & candidate_valid).sum()), 4)
  assert sampled.sum() == 16 and np.all(positive[:positive.sum()])
  for k in np.flatnonzero(sampled):
    index = [i for i in range(len(candidates)) if np.array_equal(candidates[i], regions[k]) and candidate_valid[i]]
    assert index, "a sampled region is one of the valid candidates"
    assert labels[k] == expected[index[0]]
    np.testing.assert_allclose(overlap[k], best[index[0]], atol=1e-6)
    if positive[k]:
      assert np.flatnonzero(gt_valid)[iou[:, index[0]].argmax()] == matched[k]


def test_paste_grid_matches_a_numpy_loop():
  """Every pixel whose centre lies in the box takes its cell's value (floor of the centre's position in G even
  steps), the others 0; boxes may cross the image border."""
  rng = np.random.default_rng(1)
  h, w, g = 23, 29, 10
  grids = rng.random((4, g, g)).astype(np.float32)
  boxes = np.array([[2.0, 3.5, 20.0, 17.0], [-5.0, -4.0, 12.3, 9.9], [10.2, 6.0, 35.0, 30.0], [4.0, 4.0, 7.0, 5.5]],
                   np.float32)
  pasted = np.asarray(sds.paste_grid(grids, boxes, h, w))
  expected = np.zeros((4, h, w))
  for r, (x1, y1, x2, y2) in enumerate(boxes.astype(np.float64)):
    for i in range(h):
      for j in range(w):
        cy, cx = int(np.floor((i + 0.5 - y1) / (y2 - y1) * g)), int(np.floor((j + 0.5 - x1) / (x2 - x1) * g))
        if 0 <= cy < g and 0 <= cx < g:
          expected[r, i, j] = grids[r, cy, cx]
  np.testing.assert_allclose(pasted, expected, atol=1e-6)


def _step(module, config):
  @counting_jit
  def step(params, opt_state, batch, key):
    def loss_fn(params):
      outputs = module.apply({"params": params}, batch["image"], train=True, rngs={"sampling": key},
                             targets={k: batch[k] for k in sds.FORWARD_KEYS},
                             **{k: batch[k] for k in sds.INPUT_KEYS})
      return sds.loss(outputs, batch, config)

    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = optax.adam(1e-3).update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, metrics

  return step


def test_train_step_compiles_once_across_instance_counts():
  """The fine-tuning step with refinement on batches of 2 + 1, 0 + 0 and 4 + 4 objects: one trace."""
  config = _config()
  module = sds.build(config, types.SimpleNamespace(num_thing_classes=2))
  batch = _batch((2, 1))
  params = jax.jit(module.init)(jax.random.key(0), batch["image"])["params"]
  step = _step(module, config)
  opt_state = optax.adam(1e-3).init(params)
  for i, counts in enumerate(((2, 1), (0, 0), (4, 4))):
    params, opt_state, metrics = step(params, opt_state, _batch(counts, seed=i), jax.random.key(i))
    assert np.isfinite(float(metrics["loss_classifier"]))
    assert (float(metrics["num_refine_regions"]) > 0) == (sum(counts) > 0)
  assert step.traces == 1


@pytest.mark.slow  # 80 steps of two AlexNets on 32 regions
def test_fits_a_fixed_batch_beyond_the_blind_predictors():
  """On one fixed batch (fixed sampling key): the sampled regions' log loss falls below half the entropy of their
  labels (the cross-entropy of the best predictor that ignores the regions: the label frequencies), and the
  refinement grid cells' log loss below half the entropy of their targets (the best constant predictor's)."""
  config = _config(roi_batch_size_per_image=16)
  module = sds.build(config, types.SimpleNamespace(num_thing_classes=2))
  batch = _batch((3, 2), seed=5)
  params = jax.jit(module.init)(jax.random.key(0), batch["image"])["params"]
  step = _step(module, config)
  opt_state = optax.adam(1e-3).init(params)
  key = jax.random.key(7)
  for _ in range(80):
    params, opt_state, metrics = step(params, opt_state, batch, key)
  outputs = module.apply({"params": params}, batch["image"], train=True, rngs={"sampling": key},
                         targets={k: batch[k] for k in sds.FORWARD_KEYS}, **{k: batch[k] for k in sds.INPUT_KEYS})
  labels, sampled = np.asarray(outputs["roi_labels"]), np.asarray(outputs["roi_valid"])
  frequency = np.bincount(labels[sampled], minlength=3) / sampled.sum()
  entropy = -np.sum(frequency[frequency > 0] * np.log(frequency[frequency > 0]))
  assert float(metrics["loss_classifier"]) < 0.5 * entropy
  refine = np.asarray(outputs["refine_regions"])
  cells = np.asarray(outputs["coarse_targets"])[refine].mean()
  cell_entropy = -(cells * np.log(cells) + (1 - cells) * np.log(1 - cells))
  assert float(metrics["loss_refine_grid"]) < 0.5 * cell_entropy


@pytest.mark.parametrize("seed", [0, 1])
def test_stand_in_region_proposals(seed):
  """Drawn per image id: the same image gets the same masks; half come from the objects, so some overlap an object
  by >= 0.5; an image without objects gets masks that do not depend on the invalid ones (random ellipses)."""
  rng = np.random.default_rng(seed)
  masks = np.zeros((3, 40, 50), np.uint8)
  masks[0, 5:20, 5:25] = 1
  masks[1, 22:38, 20:45] = 1
  masks[2, 0:10, 40:50] = 1
  valid = np.array([True, True, False])
  first, first_valid = region_proposals.region_proposals(masks, valid, (40, 50), 16, 7 + seed)
  again, _ = region_proposals.region_proposals(masks, valid, (40, 50), 16, 7 + seed)
  np.testing.assert_array_equal(first, again)
  assert first.shape == (16, 40, 50) and first_valid.dtype == bool
  np.testing.assert_array_equal(first_valid, first.reshape(16, -1).any(1))
  assert (_numpy_iou(first[:8], masks[:2]).max(1) >= 0.5).any()
  image_id = int(rng.integers(100))
  none, none_valid = region_proposals.region_proposals(masks, np.zeros(3, bool), (40, 50), 16, image_id)
  other, _ = region_proposals.region_proposals(1 - masks, np.zeros(3, bool), (40, 50), 16, image_id)
  np.testing.assert_array_equal(none, other)
  assert none_valid.all()


@pytest.mark.slow  # writes the tiny synthetic set and compiles the train and eval steps
def test_trains_and_evaluates_through_the_loop(tmp_path):
  """segjax's loop with dataset.num_region_proposals: the batches carry the stand-in regions to the forward pass in
  training and evaluation. Regions near the objects are among the candidates, so even a barely trained model's
  detections (every class scores about 1/5 >= score_threshold) recall objects at region overlap 0.5."""
  from segjax.train.loop import train_and_evaluate  # pylint: disable=g-import-not-at-top
  from train_util import read_metrics, tiny_config  # pylint: disable=g-import-not-at-top
  config = tiny_config(tmp_path / "data", total_steps=2, eval_every_steps=2,
                       **{"dataset.num_region_proposals": 16})
  config.model = _config(representation_size=16, detections_per_image=20)  # width 12: AlexNet's groups divide it
  metrics = train_and_evaluate(config, str(tmp_path / "workdir"))
  rows = read_metrics(tmp_path / "workdir")
  assert rows and all(np.isfinite(r["loss"]) and r["num_positive_rois"] > 0 for r in rows)
  assert metrics["mask_AR100"] > 0 and "mask_APr50" in metrics
