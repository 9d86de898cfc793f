"""SOLOv2: target assignment against a NumPy port of the reference's loop (WXinlong/SOLO solov2_target_single),
loss and inference against torch ports of its loss and get_seg_single, the head against its forward in torch,
parameter counts from its layer shapes, training steps, no recompiles, the predict contract.

Reference ported: WXinlong/SOLO, mmdet/models/anchor_heads/solov2_head.py (solov2_target_single, loss,
get_seg_single, points_nms), commit a14e63cc6cbd74c1138e82b1b1e8d39d73337040.
"""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from segjax.models import solov2
from references import requires_torch, torch, torchvision

F = torch.nn.functional if torch else None

IMAGE = (96, 128)
GRIDS = (40, 36, 24, 16, 12)  # the reference's
SMALL_RANGES = ((1, 12), (6, 24), (12, 48), (24, 96), (48, 256))  # COCO's / 8: objects here span all levels
TINY = dict(depth=18, width=8, norm="batch", fpn_channels=32, seg_feat_channels=32, stacked_convs=2,
            ins_out_channels=32, mask_feat_channels=32, num_grids=(12, 10, 8, 6, 4), dtype="float32",
            scale_ranges=((1, 24), (12, 48), (24, 96), (48, 192), (96, 2048)), max_positives=48,
            min_mask_area=(2, 2, 4, 8, 8))


# ---------------------------------------------------------------------------------------------------------------
# NumPy port of the reference's target assignment.

def _cv2_linear_resize(mask, dst_h, dst_w):
  """cv2.resize(uint8, INTER_LINEAR) for shrinking: 11-bit coefficients, rounding shift of 22 bits."""
  def taps(dst, src):
    f = (np.arange(dst) + 0.5) * (src / dst) - 0.5
    s = np.floor(f).astype(np.int64)
    f = f - s
    f, s = np.where(s < 0, 0, f), np.maximum(s, 0)
    f, s = np.where(s >= src - 1, 0, f), np.minimum(s, src - 1)
    return s, np.minimum(s + 1, src - 1), np.rint((1 - f) * 2048).astype(np.int64), np.rint(f * 2048).astype(np.int64)
  r0, r1, b0, b1 = taps(dst_h, mask.shape[0])
  c0, c1, a0, a1 = taps(dst_w, mask.shape[1])
  m = mask.astype(np.int64)
  horizontal = m[:, c0] * a0 + m[:, c1] * a1
  vertical = horizontal[r0] * b0[:, None] + horizontal[r1] * b1[:, None]
  return ((vertical + (1 << 21)) >> 22).astype(np.uint8)


def _reference_targets(boxes, labels, masks, num_grids, scale_ranges, sigma=0.2):
  """solov2_target_single, loop for loop, in float32 as torch; inputs are the image's real instances only.

  Returns per level: cate_label [S, S], ins_ind_label [S^2], grid_order [list], instance index per entry, and
  ins_label [n, H/4, W/4].
  """
  f32 = np.float32
  mask_feat_size = (masks.shape[1] // 4, masks.shape[2] // 4)
  gt_areas = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
  out = []
  for (lower_bound, upper_bound), num_grid in zip(scale_ranges, num_grids):
    hit_indices = np.flatnonzero((gt_areas >= lower_bound) & (gt_areas <= upper_bound))
    cate_label = np.zeros([num_grid, num_grid], np.int64)
    ins_ind_label = np.zeros([num_grid ** 2], bool)
    ins_label, grid_order, owner = [], [], []
    half_ws = f32(0.5) * (boxes[hit_indices, 2] - boxes[hit_indices, 0]) * f32(sigma)
    half_hs = f32(0.5) * (boxes[hit_indices, 3] - boxes[hit_indices, 1]) * f32(sigma)
    gt_masks = masks[hit_indices].astype(f32)
    m00 = np.maximum(gt_masks.sum((1, 2)), f32(1e-6))
    center_ws = (gt_masks * np.arange(masks.shape[2], dtype=f32)).sum((1, 2)) / m00
    center_hs = (gt_masks * np.arange(masks.shape[1], dtype=f32)[:, None]).sum((1, 2)) / m00
    for k, index in enumerate(hit_indices):
      if not gt_masks[k].sum() > 0:
        continue
      center_h, center_w, half_h, half_w = center_hs[k], center_ws[k], half_hs[k], half_ws[k]
      upsampled_size = (mask_feat_size[0] * 4, mask_feat_size[1] * 4)
      step = f32(1. / num_grid)
      coord_w = int((center_w / f32(upsampled_size[1])) // step)
      coord_h = int((center_h / f32(upsampled_size[0])) // step)
      top_box = max(0, int(((center_h - half_h) / f32(upsampled_size[0])) // step))
      down_box = min(num_grid - 1, int(((center_h + half_h) / f32(upsampled_size[0])) // step))
      left_box = max(0, int(((center_w - half_w) / f32(upsampled_size[1])) // step))
      right_box = min(num_grid - 1, int(((center_w + half_w) / f32(upsampled_size[1])) // step))
      top, down = max(top_box, coord_h - 1), min(down_box, coord_h + 1)
      left, right = max(coord_w - 1, left_box), min(right_box, coord_w + 1)
      cate_label[top:(down + 1), left:(right + 1)] = labels[index]
      seg_mask = _cv2_linear_resize(masks[index], int(masks.shape[1] * 0.25 + 0.5), int(masks.shape[2] * 0.25 + 0.5))
      for i in range(top, down + 1):
        for j in range(left, right + 1):
          cur_ins_label = np.zeros(mask_feat_size, np.uint8)
          cur_ins_label[:seg_mask.shape[0], :seg_mask.shape[1]] = seg_mask
          ins_label.append(cur_ins_label)
          ins_ind_label[i * num_grid + j] = True
          grid_order.append(i * num_grid + j)
          owner.append(index)
    out.append((cate_label, ins_ind_label, grid_order, owner, np.array(ins_label).reshape(-1, *mask_feat_size)))
  return out


def _random_image(rng, m, size=IMAGE):
  """Padded GT of one image: ellipses and rectangles of many sizes, some across the border, some empty, invalid
  slots anywhere; boxes are the tight extents jittered by up to a pixel (float rounding at cell edges)."""
  h, w = size
  masks = np.zeros((m, h, w), np.uint8)
  ys, xs = np.mgrid[:h, :w]
  valid = rng.random(m) < 0.8
  for i in np.flatnonzero(valid):
    cy, cx = rng.uniform(-0.1, 1.1) * h, rng.uniform(-0.1, 1.1) * w
    ry, rx = np.exp(rng.uniform(np.log(1.0), np.log(0.6 * h), 2))
    if rng.random() < 0.5:
      masks[i] = ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 <= 1
    else:
      masks[i] = (np.abs(ys - cy) <= ry) & (np.abs(xs - cx) <= rx)
  boxes = np.zeros((m, 4), np.float32)
  for i in range(m):
    yy, xx = np.nonzero(masks[i])
    if len(yy):
      boxes[i] = [xx.min(), yy.min(), xx.max() + 1, yy.max() + 1]
  boxes = (boxes + rng.uniform(-1, 1, boxes.shape) * (boxes.any(1, keepdims=True))).astype(np.float32)
  if valid.any() and rng.random() < 0.3:  # a valid instance whose mask is empty: the reference skips it
    masks[rng.choice(np.flatnonzero(valid))] = 0
  classes = np.where(valid, rng.integers(1, 5, m), 0).astype(np.int32)
  return boxes, masks, classes, valid


def _assign(num_grids, ranges, max_positives):
  return jax.jit(jax.vmap(lambda b, m, c, v: solov2.solov2_targets(b, m, c, v, num_grids, ranges, max_positives)))


@pytest.mark.parametrize("num_grids,ranges", [(GRIDS, SMALL_RANGES), (TINY["num_grids"], TINY["scale_ranges"])])
def test_targets_equal_reference_loop(num_grids, ranges):
  rng = np.random.default_rng(0)
  images = [_random_image(rng, 10) for _ in range(12)]
  # Mass centre on row 80 of 96: 80 / 96 // (1 / 36) is 29 in float32 division, 30 with a reciprocal multiply.
  boxes, masks, classes, valid = _random_image(rng, 10)
  masks[0] = 0
  masks[0, 75:86, 40:52] = 1
  boxes[0], valid[0], classes[0] = (40, 75, 52, 86), True, 2
  images.append((boxes, masks, classes, valid))
  stacked = [np.stack(x) for x in zip(*images)]
  category, positive, cells, instances, targets, slot_valid, dropped = jax.device_get(
      _assign(num_grids, ranges, 400)(*stacked))
  total_positives = 0
  for b, (boxes, masks, classes, valid) in enumerate(images):
    keep = np.flatnonzero(valid)
    levels = _reference_targets(boxes[keep], classes[keep], masks[keep], num_grids, ranges)
    np.testing.assert_array_equal(category[b], np.concatenate([lv[0].ravel() for lv in levels]))
    np.testing.assert_array_equal(positive[b], np.concatenate([lv[1] for lv in levels]))
    offsets = np.cumsum([0] + [s * s for s in num_grids])
    ref_cells = np.concatenate([np.asarray(lv[2], np.int64) + o for lv, o in zip(levels, offsets)])
    ref_instances = keep[np.concatenate([np.asarray(lv[3], np.int64) for lv in levels])]
    ref_masks = np.concatenate([lv[4] for lv in levels])
    n = len(ref_cells)
    total_positives += n
    assert slot_valid[b].sum() == n and slot_valid[b, :n].all() and dropped[b] == 0
    np.testing.assert_array_equal(cells[b, :n], ref_cells)
    np.testing.assert_array_equal(instances[b, :n], ref_instances)
    np.testing.assert_array_equal(targets[b, :n], ref_masks)
    assert not targets[b, n:].any()
  level = np.searchsorted(np.cumsum([s * s for s in num_grids]), np.flatnonzero(positive.any(0)), side="right")
  assert total_positives > 100 and len(set(level)) >= 3  # the draw exercises the assignment on several levels


def test_targets_beyond_max_positives_keep_the_reference_order():
  rng = np.random.default_rng(1)
  stacked = [np.stack(x) for x in zip(*[_random_image(rng, 10) for _ in range(4)])]
  full = jax.device_get(_assign(GRIDS, SMALL_RANGES, 400)(*stacked))
  cut = jax.device_get(_assign(GRIDS, SMALL_RANGES, 5)(*stacked))
  counts = full[5].sum(1)
  assert (counts > 5).any()
  for b in range(4):
    k = min(5, counts[b])
    np.testing.assert_array_equal(cut[2][b, :k], full[2][b, :k])
    np.testing.assert_array_equal(cut[4][b, :k], full[4][b, :k])
    assert cut[5][b].sum() == k and cut[6][b] == counts[b] - k
    np.testing.assert_array_equal(cut[0][b], full[0][b])  # category targets are never cut


# ---------------------------------------------------------------------------------------------------------------
# Loss against the reference's loss in torch.

def _random_outputs(rng, batch, num_grids, classes, channels, size, scale=1.0):
  return {"cate_logits": tuple(jnp.asarray(rng.normal(-2, 2, (batch, s, s, classes)), jnp.float32) for s in num_grids),
          "kernels": tuple(jnp.asarray(rng.normal(0, scale, (batch, s, s, channels)), jnp.float32) for s in num_grids),
          "mask_features": jnp.asarray(rng.normal(0, 1, (batch, size[0] // 4, size[1] // 4, channels)), jnp.float32)}


def _reference_loss(outputs, images, num_grids, ranges):
  """SOLOv2Head.loss: dice over every (cell, instance) entry (mean, x3) + focal sum / (positive cells + 1)."""
  dice, cate_preds, cate_labels, num_ins = [], [], [], 0
  for b, (boxes, masks, classes, valid) in enumerate(images):
    keep = np.flatnonzero(valid)
    levels = _reference_targets(boxes[keep], classes[keep], masks[keep], num_grids, ranges)
    ins_pred = torch.from_numpy(np.array(outputs["mask_features"][b])).permute(2, 0, 1)[None]
    for lv, (cate_label, ind, grid_order, _, ins_label) in enumerate(levels):
      kernel = torch.from_numpy(np.array(outputs["kernels"][lv][b])).permute(2, 0, 1)
      num_ins += int(ind.sum())
      cate_labels.append(torch.from_numpy(cate_label.ravel()))
      cate_preds.append(torch.from_numpy(np.array(outputs["cate_logits"][lv][b])).reshape(-1, 4))
      if not grid_order:
        continue
      kernel_pred = kernel.reshape(kernel.shape[0], -1)[:, grid_order]
      pred = F.conv2d(ins_pred, kernel_pred.permute(1, 0)[..., None, None]).sigmoid()[0]
      target = torch.from_numpy(ins_label).float()
      a = (pred * target).flatten(1).sum(1)
      d = 2 * a / ((pred * pred).flatten(1).sum(1) + 0.001 + (target * target).flatten(1).sum(1) + 0.001)
      dice.append(1 - d)
  loss_ins = torch.cat(dice).mean() * 3
  labels = torch.cat(cate_labels)
  one_hot = (labels[:, None] == torch.arange(1, 5)[None]).float()
  loss_cate = torchvision.ops.sigmoid_focal_loss(torch.cat(cate_preds), one_hot, 0.25, 2.0, "sum") / (num_ins + 1)
  return float(loss_ins), float(loss_cate)


@requires_torch
def test_loss_equals_reference_loss_and_ignores_crowds():
  rng = np.random.default_rng(2)
  images = [_random_image(rng, 10) for _ in range(3)]
  batch = dict(zip(("boxes", "masks", "classes", "instance_valid"), (np.stack(x) for x in zip(*images))))
  batch["is_crowd"] = np.zeros_like(batch["instance_valid"])
  config = ml_collections.ConfigDict({"scale_ranges": SMALL_RANGES, "max_positives": 400})
  outputs = _random_outputs(rng, 3, GRIDS, 4, 16, IMAGE, scale=0.3)
  loss = jax.jit(lambda o, b: solov2.loss(o, b, config))
  total, aux = loss(outputs, batch)
  loss_ins, loss_cate = _reference_loss(outputs, images, GRIDS, SMALL_RANGES)
  assert float(aux["loss_ins"]) == pytest.approx(loss_ins, rel=1e-5)
  assert float(aux["loss_cate"]) == pytest.approx(loss_cate, rel=1e-5)
  assert float(total) == pytest.approx(loss_ins + loss_cate, rel=1e-5) and float(aux["dropped_positives"]) == 0
  # Crowds are the reference's gt_bboxes_ignore: not targets at all.
  crowd = dict(batch, is_crowd=batch["instance_valid"] & (np.arange(10) % 2 == 0))
  without = [(b, m, c, v & ~k) for (b, m, c, v), k in zip(images, crowd["is_crowd"])]
  _, aux = loss(outputs, crowd)
  loss_ins, loss_cate = _reference_loss(outputs, without, GRIDS, SMALL_RANGES)
  assert float(aux["loss_ins"]) == pytest.approx(loss_ins, rel=1e-5)
  assert float(aux["loss_cate"]) == pytest.approx(loss_cate, rel=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# Inference against the reference's get_seg_single in torch.

def _reference_matrix_nms(seg_masks, cate_labels, cate_scores, sigma, sum_masks):
  n = len(cate_labels)
  seg_masks = seg_masks.reshape(n, -1).float()
  inter = seg_masks @ seg_masks.T
  sums = sum_masks.expand(n, n)
  iou = (inter / (sums + sums.T - inter)).triu(diagonal=1)
  labels = cate_labels.expand(n, n)
  label_matrix = (labels == labels.T).float().triu(diagonal=1)
  compensate = (iou * label_matrix).max(0)[0].expand(n, n).T
  decay = torch.exp(-sigma * (iou * label_matrix) ** 2) / torch.exp(-sigma * compensate ** 2)
  return cate_scores * decay.min(0)[0]


def _reference_get_seg_single(cate_logits, kernels, features, num_grids, strides=(8, 8, 16, 32, 32)):
  """points_nms + get_seg_single (score_thr 0.1, mask_thr 0.5, nms_pre 500, update_thr 0.05, max 100)."""
  cate_preds, kernel_preds = [], []
  for c, k in zip(cate_logits, kernels):
    heat = torch.from_numpy(np.array(c)).permute(2, 0, 1)[None].sigmoid()
    hmax = F.max_pool2d(heat, (2, 2), stride=1, padding=1)
    cate_preds.append((heat * (hmax[:, :, :-1, :-1] == heat).float())[0].permute(1, 2, 0).reshape(-1, c.shape[-1]))
    kernel_preds.append(torch.from_numpy(np.array(k)).reshape(-1, k.shape[-1]))
  cate_preds, kernel_preds = torch.cat(cate_preds), torch.cat(kernel_preds)
  seg_preds = torch.from_numpy(np.array(features)).permute(2, 0, 1)[None]
  inds = cate_preds > 0.1
  cate_scores = cate_preds[inds]
  inds = inds.nonzero()
  cate_labels = inds[:, 1]
  kernel_preds = kernel_preds[inds[:, 0]]
  size_trans = torch.tensor(num_grids).pow(2).cumsum(0)
  stride = torch.ones(int(size_trans[-1]))
  stride[:size_trans[0]] *= strides[0]
  for i in range(1, len(num_grids)):
    stride[size_trans[i - 1]:size_trans[i]] *= strides[i]
  stride = stride[inds[:, 0]]
  seg_preds = F.conv2d(seg_preds, kernel_preds[..., None, None]).squeeze(0).sigmoid()
  seg_masks = seg_preds > 0.5
  sum_masks = seg_masks.sum((1, 2)).float()
  keep = sum_masks > stride
  seg_masks, seg_preds, sum_masks = seg_masks[keep], seg_preds[keep], sum_masks[keep]
  cate_scores, cate_labels = cate_scores[keep], cate_labels[keep]
  cate_scores = cate_scores * (seg_preds * seg_masks.float()).sum((1, 2)) / sum_masks
  order = torch.argsort(cate_scores, descending=True)[:500]
  seg_masks, seg_preds, sum_masks = seg_masks[order], seg_preds[order], sum_masks[order]
  cate_scores, cate_labels = cate_scores[order], cate_labels[order]
  cate_scores = _reference_matrix_nms(seg_masks, cate_labels, cate_scores, 2.0, sum_masks)
  keep = cate_scores >= 0.05
  seg_preds, cate_scores, cate_labels = seg_preds[keep], cate_scores[keep], cate_labels[keep]
  order = torch.argsort(cate_scores, descending=True)[:100]
  seg_preds, cate_scores, cate_labels = seg_preds[order], cate_scores[order], cate_labels[order]
  h, w = seg_preds.shape[-2:]
  seg_preds = F.interpolate(seg_preds[None], size=(4 * h, 4 * w), mode="bilinear")[0]
  return seg_preds.numpy(), cate_scores.numpy(), cate_labels.numpy()


@requires_torch
@pytest.mark.parametrize("min_mask_area", [solov2.STRIDES, (2, 2, 4, 8, 8)])  # the reference's; a demo's
def test_predict_equals_reference_get_seg_single(min_mask_area):
  rng = np.random.default_rng(3)
  grids = (12, 10, 8, 6, 4)
  outputs = _random_outputs(rng, 2, grids, 4, 8, (64, 96))
  # Image 0 fills the 100 detections; image 1 has fewer, cut by the update threshold.
  outputs["cate_logits"] = tuple(x - jnp.array([1.5, 3.5])[:, None, None, None] for x in outputs["cate_logits"])
  config = ml_collections.ConfigDict({"min_mask_area": min_mask_area})  # the other settings: the reference's
  predictions = jax.device_get(jax.jit(lambda o: solov2.predict(o, config))(outputs))
  assert predictions["masks"].shape == (2, 100, 64, 96) and predictions["boxes"].shape == (2, 100, 4)
  for b in range(2):
    masks, scores, labels = _reference_get_seg_single([x[b] for x in outputs["cate_logits"]],
                                                      [x[b] for x in outputs["kernels"]],
                                                      outputs["mask_features"][b], grids, min_mask_area)
    n = len(scores)
    assert n == 100 if b == 0 else 10 < n < 100
    assert predictions["valid"][b].sum() == n and predictions["valid"][b, :n].all()
    np.testing.assert_allclose(predictions["scores"][b, :n], scores, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(predictions["labels"][b, :n], labels + 1)
    np.testing.assert_allclose(predictions["masks"][b, :n], masks, atol=1e-5)
    assert not predictions["masks"][b, n:].any() and not predictions["scores"][b, n:].any()


def test_predict_contract():
  rng = np.random.default_rng(4)
  outputs = _random_outputs(rng, 2, (12, 10, 8, 6, 4), 4, 8, (64, 64))
  outputs["cate_logits"] = tuple(x - 1.5 for x in outputs["cate_logits"])
  predict = jax.jit(lambda o: solov2.predict(o, ml_collections.ConfigDict()))
  p = jax.device_get(predict(outputs))
  assert p["boxes"].dtype == np.float32 and p["labels"].dtype == np.int32 and p["valid"].dtype == bool
  assert p["masks"].dtype == np.float32 and 0 <= p["masks"].min() and p["masks"].max() <= 1
  for b in range(2):
    valid = p["valid"][b]
    assert valid.any() and (np.diff(p["scores"][b][valid]) <= 0).all() and (p["scores"][b][valid] >= 0.05).all()
    assert set(p["labels"][b][valid]) <= {1, 2, 3, 4}
    for box, mask in zip(p["boxes"][b][valid], p["masks"][b][valid] > 0.5):
      yy, xx = np.nonzero(mask)
      np.testing.assert_array_equal(box, [xx.min(), yy.min(), xx.max() + 1, yy.max() + 1])
  empty = dict(outputs, cate_logits=tuple(x - 100 for x in outputs["cate_logits"]))
  p = jax.device_get(predict(empty))
  assert not p["valid"].any() and not p["boxes"].any() and not p["masks"].any()


def _greedy_mask_nms(masks, labels, threshold):
  """Greedy NMS over masks sorted by descending score, written here: a mask survives unless a kept mask of its label
  overlaps it with IoU >= threshold (the hard rule of Soft-NMS's Algorithm 1)."""
  flat = masks.reshape(len(masks), -1).astype(np.float64)
  kept = []
  for i in range(len(masks)):
    ious = [(flat[i] * flat[j]).sum() / max(np.maximum(flat[i], flat[j]).sum(), 1) for j in kept
            if labels[j] == labels[i]]
    if all(iou < threshold for iou in ious):
      kept.append(i)
  return np.isin(np.arange(len(masks)), kept)


@pytest.mark.parametrize("threshold", [0.3, 0.5])
def test_hard_mask_nms_keeps_what_greedy_nms_keeps(threshold):
  """config.model.nms "hard": the NMS ablation's baseline row; "soft" and "matrix" only decay, never zero a score."""
  rng = np.random.default_rng(6)
  n, size = 40, 24
  masks = np.zeros((n, size, size), bool)
  for k in range(n):
    y, x = rng.integers(0, 12, 2)
    h, w = rng.integers(6, 12, 2)
    masks[k, y:y + h, x:x + w] = True
  labels = rng.integers(0, 3, n)
  scores = np.sort(rng.uniform(0.2, 1.0, n))[::-1].astype(np.float32)
  area = masks.sum((1, 2)).astype(np.float32)
  config = ml_collections.ConfigDict({"nms": "hard", "nms_iou_threshold": threshold})
  decayed = np.asarray(solov2.suppress(masks, labels, scores, area, solov2.predict_config(config)))
  expected = _greedy_mask_nms(masks, labels, threshold)
  assert 0 < expected.sum() < n
  np.testing.assert_array_equal(decayed > 0, expected)
  np.testing.assert_allclose(decayed[expected], scores[expected])
  for nms in ("soft", "matrix"):
    c = solov2.predict_config(ml_collections.ConfigDict({"nms": nms}))
    decayed = np.asarray(solov2.suppress(masks, labels, scores, area, c))
    assert (decayed > 0).all() and (decayed <= scores + 1e-7).all() and decayed[0] == scores[0]
  with pytest.raises(ValueError, match="config.model.nms"):
    solov2.predict_config(ml_collections.ConfigDict({"nms": "greedy"}))


# ---------------------------------------------------------------------------------------------------------------
# The network: head and mask features against the reference forward in torch, shapes and parameter counts.

def _torch_conv(params, x, bias=True):
  weight = torch.from_numpy(np.array(params["kernel"])).permute(3, 2, 0, 1)
  return F.conv2d(x, weight, torch.from_numpy(np.array(params["bias"])) if bias else None,
                  padding=weight.shape[-1] // 2)


def _torch_conv_module(params, name, x):
  gn = params[f"{name}_gn"]
  y = F.group_norm(_torch_conv(params[f"{name}_conv"], x, bias=False), 32,
                   torch.from_numpy(np.array(gn["scale"])), torch.from_numpy(np.array(gn["bias"])), 1e-5)
  return F.relu(y)


def _torch_coord(x):
  y, xx = torch.meshgrid(torch.linspace(-1, 1, x.shape[-2]), torch.linspace(-1, 1, x.shape[-1]), indexing="ij")
  return torch.cat([x, xx.expand(x.shape[0], 1, -1, -1), y.expand(x.shape[0], 1, -1, -1)], 1)


@requires_torch
def test_head_and_mask_features_equal_reference_forward():
  rng = np.random.default_rng(5)
  p = {f"P{i}": jnp.asarray(rng.normal(size=(2, 64 // 2 ** (i - 2), 96 // 2 ** (i - 2), 32)), jnp.float32)
       for i in range(2, 7)}
  t = {k: torch.from_numpy(np.array(v)).permute(0, 3, 1, 2) for k, v in p.items()}
  levels = solov2.split_feats(p)
  reference_levels = (F.interpolate(t["P2"], scale_factor=0.5, mode="bilinear"), t["P3"], t["P4"], t["P5"],
                      F.interpolate(t["P6"], size=t["P5"].shape[-2:], mode="bilinear"))
  for ours, ref in zip(levels, reference_levels):
    np.testing.assert_allclose(np.asarray(ours), ref.permute(0, 2, 3, 1).numpy(), atol=1e-5)

  head = solov2.SOLOv2Head(num_classes=4, seg_feat_channels=32, stacked_convs=2, ins_out_channels=32)
  variables = head.init(jax.random.key(0), levels[0], 12)
  variables = jax.tree.map(lambda x: x + jnp.asarray(rng.normal(0, 0.1, x.shape), jnp.float32), variables)
  hp = variables["params"]
  apply = jax.jit(head.apply, static_argnums=2)
  for level in (0, 4):  # forward_single on the two resized levels
    x, ref, s = levels[level], reference_levels[level], GRIDS[level]
    cate, kernel = apply(variables, x, s)
    kernel_feat = F.interpolate(_torch_coord(ref), size=s, mode="bilinear")
    cate_feat = kernel_feat[:, :-2]
    for i in range(2):
      kernel_feat = _torch_conv_module(hp, f"kernel_convs_{i}", kernel_feat)
      cate_feat = _torch_conv_module(hp, f"cate_convs_{i}", cate_feat)
    np.testing.assert_allclose(np.asarray(kernel), _torch_conv(hp["solo_kernel"], kernel_feat).permute(0, 2, 3, 1),
                               atol=1e-4)
    np.testing.assert_allclose(np.asarray(cate), _torch_conv(hp["solo_cate"], cate_feat).permute(0, 2, 3, 1),
                               atol=1e-4)

  mask_head = solov2.MaskFeatHead(mask_feat_channels=32, ins_out_channels=64)
  inputs = [p["P2"], p["P3"], p["P4"], p["P5"]]
  variables = mask_head.init(jax.random.key(1), inputs)
  variables = jax.tree.map(lambda x: x + jnp.asarray(rng.normal(0, 0.1, x.shape), jnp.float32), variables)
  mp = variables["params"]
  total = _torch_conv_module(mp, "level0_conv0", t["P2"])
  for i in range(1, 4):
    y = _torch_coord(t[f"P{i + 2}"]) if i == 3 else t[f"P{i + 2}"]
    for j in range(i):
      y = F.interpolate(_torch_conv_module(mp, f"level{i}_conv{j}", y), scale_factor=2, mode="bilinear")
    total = total + y
  expected = _torch_conv_module(mp, "conv_pred", total).permute(0, 2, 3, 1).numpy()
  np.testing.assert_allclose(np.asarray(mask_head.apply(variables, inputs)), expected, atol=1e-4)


def _reference_head_count(cin, seg, convs, classes, e, mid):
  """Parameters of SOLOv2Head + MaskFeatHead from their layer shapes (convs without bias before GN)."""
  conv_gn = lambda i, o, k: i * o * k * k + 2 * o
  head = sum(conv_gn(cin + 2 if i == 0 else seg, seg, 3) + conv_gn(cin if i == 0 else seg, seg, 3)
             for i in range(convs))
  head += seg * classes * 9 + classes + seg * e * 9 + e
  mask = conv_gn(cin, mid, 3) + sum(conv_gn(cin + (2 if i == 3 else 0), mid, 3) + (i - 1) * conv_gn(mid, mid, 3)
                                    for i in range(1, 4))
  return head, mask + conv_gn(mid, e, 1)


def test_r50_shapes_and_head_parameter_counts():
  config = ml_collections.ConfigDict(dict(TINY, depth=50, width=64, fpn_channels=256, seg_feat_channels=512,
                                          stacked_convs=4, ins_out_channels=256, mask_feat_channels=128,
                                          num_grids=GRIDS))
  model = solov2.build(config, ml_collections.ConfigDict({"num_thing_classes": 80}))
  images = jnp.zeros((1, 320, 416, 3))
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), images))
  out = jax.eval_shape(lambda v: model.apply(v, images), variables)
  assert [x.shape for x in out["cate_logits"]] == [(1, s, s, 80) for s in GRIDS]
  assert [x.shape for x in out["kernels"]] == [(1, s, s, 256) for s in GRIDS]
  assert out["mask_features"].shape == (1, 80, 104, 256)
  count = lambda tree: sum(x.size for x in jax.tree.leaves(tree))
  head, mask = _reference_head_count(256, 512, 4, 80, 256, 128)
  assert count(variables["params"]["head"]) == head
  assert count(variables["params"]["mask_feat_head"]) == mask
  with pytest.raises(ValueError, match="divisible by 32"):
    model.init(jax.random.key(0), jnp.zeros((1, 100, 128, 3)))


# ---------------------------------------------------------------------------------------------------------------
# Training steps and compilation.

@pytest.fixture(scope="module")
def tiny_steps():
  config = ml_collections.ConfigDict(TINY)
  model = solov2.build(config, ml_collections.ConfigDict({"num_thing_classes": 4}))
  variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((2, 64, 64, 3)))
  optimizer = optax.adam(3e-3)
  traces = {"train": 0, "predict": 0}

  @jax.jit
  def train_step(params, batch_stats, opt_state, batch):
    traces["train"] += 1

    def loss_fn(params):
      outputs, updates = model.apply({"params": params, "batch_stats": batch_stats}, batch["image"], train=True,
                                     mutable=["batch_stats"])
      value, aux = solov2.loss(outputs, batch, config)
      return value, (aux, updates["batch_stats"])
    (value, (aux, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    deltas, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, deltas), batch_stats, opt_state, value, aux

  @jax.jit
  def predict(variables, images):
    traces["predict"] += 1
    return solov2.predict(model.apply(variables, images), config)

  return variables, optimizer.init(variables["params"]), train_step, predict, traces


def _tiny_batch(rng, num_instances, m=6):
  boxes, masks, classes, valid = (np.stack(x) for x in zip(*[_random_image(rng, m, (64, 64)) for _ in range(2)]))
  valid &= np.arange(m) < num_instances
  masks *= valid[..., None, None].astype(np.uint8)
  image = np.clip(0.2 + 0.6 * masks.max(1)[..., None] * (np.arange(3) + 1) / 3, 0, 1).astype(np.float32)
  return {"image": image, "boxes": boxes * valid[..., None], "masks": masks, "classes": classes * valid,
          "instance_valid": valid, "is_crowd": np.zeros_like(valid)}


def test_loss_decreases_and_nothing_recompiles(tiny_steps):
  variables, opt_state, train_step, predict, traces = tiny_steps
  rng = np.random.default_rng(6)
  batch = _tiny_batch(rng, 3)
  params, batch_stats = variables["params"], variables["batch_stats"]
  losses = []
  for _ in range(8):
    params, batch_stats, opt_state, value, aux = train_step(params, batch_stats, opt_state, batch)
    losses.append(float(value))
  assert np.isfinite(losses).all() and losses[-1] < 0.8 * losses[0], losses
  # Other instance counts (none, all max_instances slots) and contents: the same executables.
  for count in (0, 6, 2):
    _, _, _, value, aux = train_step(params, batch_stats, opt_state, _tiny_batch(rng, count))
    assert np.isfinite(float(value))
    if count == 0:
      assert float(aux["loss_ins"]) == 0
  for count in (0, 6):
    p = predict({"params": params, "batch_stats": batch_stats}, _tiny_batch(rng, count)["image"])
    assert p["masks"].shape == (2, 100, 64, 64)
  assert traces == {"train": 1, "predict": 1}


@pytest.mark.slow  # the train step compiled for 1 and 8 devices; Mask R-CNN's 8-device test covers a detector
def test_eight_device_training_gives_the_losses_of_one_device():
  from segjax.train import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from segjax.train.state import TrainState  # pylint: disable=g-import-not-at-top
  from segjax.train.steps import make_train_step  # pylint: disable=g-import-not-at-top
  assert jax.device_count() == 8
  config = ml_collections.ConfigDict(TINY)
  module = solov2.build(config, ml_collections.ConfigDict({"num_thing_classes": 4}))
  rng = np.random.default_rng(11)
  # 8 images per step with different instance counts, so each device sees its own targets.
  batches = [{k: np.concatenate([b[k] for b in parts]) for k in parts[0]}
             for parts in ([_tiny_batch(rng, n) for n in (3, 0, 6, 1)], [_tiny_batch(rng, n) for n in (2, 5, 4, 6)])]
  variables = jax.device_get(jax.jit(module.init)(jax.random.key(0), batches[0]["image"]))
  optimizer, schedule = optax.sgd(0.01, momentum=0.9), optax.constant_schedule(0.01)
  losses = {}
  for devices in (jax.devices()[:1], jax.devices()):
    mesh = mesh_lib.make_mesh(devices)
    state = jax.device_put(TrainState.create(variables, optimizer), mesh_lib.replicated(mesh))
    shardings = jax.tree.map(lambda _: mesh_lib.replicated(mesh), state)
    step = make_train_step(module, solov2, config, optimizer, schedule, mesh, shardings)
    losses[len(devices)] = []
    for i, batch in enumerate(batches):
      state, metrics = step(state, jax.device_put(batch, mesh_lib.batch_sharding(mesh)), jax.random.key(i))
      losses[len(devices)].append([float(metrics[k]) for k in ("loss", "loss_cate", "loss_ins")])
  assert np.all(np.array(losses[1])[:, 2] > 0)  # positives were assigned: the mask loss is exercised
  np.testing.assert_allclose(losses[8], losses[1], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["solov2_r50_fpn_1x_coco", "solov2_r50_fpn_3x_coco", "solov2_r101_fpn_3x_coco",
                                  "demo_solov2"])
def test_experiment_configs_build(name):
  import importlib  # pylint: disable=g-import-not-at-top
  from segjax.train.optim import make_optimizer  # pylint: disable=g-import-not-at-top
  config = importlib.import_module(f"experiments.{name}").get_config()
  module = solov2.build(config.model, ml_collections.ConfigDict({"num_thing_classes": 80}))
  shapes = jax.eval_shape(lambda x: module.init(jax.random.key(0), x), jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))
  assert shapes["params"]["head"]["solo_cate"]["kernel"].shape[-1] == 80
  jax.eval_shape(make_optimizer(config).init, shapes["params"])  # config.optimizer.frozen matches parameters
