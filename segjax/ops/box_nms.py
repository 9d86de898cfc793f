"""Greedy (hard) non-maximum suppression with static shapes: torchvision.ops.nms and batched_nms semantics.

Boxes are sorted by descending score (stable: ties keep input order), then processed in tiles of T boxes,
as the TPU NMS of tensorflow/models: a tile is first suppressed by the boxes already kept (one T x T IoU
block per T kept boxes), then suppression inside the tile is resolved by a fixed-point iteration, and its
survivors are appended to the kept list. The loop stops once max_output_size boxes are kept, so the work
is about (number of boxes) x (number of kept boxes) IoUs, done T x T at a time, and no loop runs per box.

IoU is computed as torchvision's CPU kernel does, inter / (area_i + area_j - inter) in the input dtype,
and a box is suppressed when IoU > iou_threshold (strict). Zero-area boxes give 0/0 = NaN against each
other and so, as in torchvision, neither suppress nor are suppressed.
"""
import jax
import jax.numpy as jnp
import numpy as np

from segjax.ops.boxes import box_area, check_boxes

_TILE = 256


def _threshold_for(iou_threshold, dtype):
  """Largest `dtype` value t with (iou > t) == (iou > iou_threshold as float64) for every `dtype` iou.

  torchvision compares the float IoU with the threshold as a double; this reproduces that comparison.
  """
  if isinstance(iou_threshold, jax.core.Tracer) or np.ndim(iou_threshold) != 0:
    raise ValueError(f"iou_threshold must be a Python float (static), got {iou_threshold!r}")
  t = np.asarray(iou_threshold, dtype)
  if float(t) > float(iou_threshold):
    t = np.nextafter(t, np.asarray(-np.inf, dtype))
  return t


def _suppression(boxes_i, area_i, class_i, boxes_j, area_j, class_j, threshold):
  """[P, Q] bool: kept box i (rows) suppresses candidate j (columns)."""
  xx1 = jnp.maximum(boxes_i[:, None, 0], boxes_j[None, :, 0])
  yy1 = jnp.maximum(boxes_i[:, None, 1], boxes_j[None, :, 1])
  xx2 = jnp.minimum(boxes_i[:, None, 2], boxes_j[None, :, 2])
  yy2 = jnp.minimum(boxes_i[:, None, 3], boxes_j[None, :, 3])
  inter = jnp.maximum(xx2 - xx1, 0) * jnp.maximum(yy2 - yy1, 0)
  iou = inter / (area_i[:, None] + area_j[None, :] - inter)
  return (iou > threshold) & (class_i[:, None] == class_j[None, :])


def _check_inputs(boxes, scores, class_ids, max_output_size):
  check_boxes(boxes, "boxes", ndim=2)
  if not jnp.issubdtype(boxes.dtype, jnp.floating):
    raise ValueError(f"boxes must be floating point, got dtype {boxes.dtype}")
  num = boxes.shape[0]
  if jnp.shape(scores) != (num,):
    raise ValueError(f"scores must have shape ({num},) to match boxes {boxes.shape}, got {jnp.shape(scores)}")
  if jnp.shape(class_ids) != (num,):
    raise ValueError(
        f"class_ids must have shape ({num},) to match boxes {boxes.shape}, got {jnp.shape(class_ids)}")
  if not isinstance(max_output_size, (int, np.integer)) or max_output_size < 1:
    raise ValueError(f"max_output_size must be a positive int, got {max_output_size!r}")


def _greedy_nms(boxes, scores, class_ids, iou_threshold, max_output_size):
  """Kept indices int32[max_output_size] in descending score order, padded with -1."""
  boxes = jnp.asarray(boxes)
  _check_inputs(boxes, scores, class_ids, max_output_size)
  threshold = _threshold_for(iou_threshold, boxes.dtype)
  num = boxes.shape[0]
  if num == 0:
    return jnp.full((max_output_size,), -1, jnp.int32)
  tile = min(_TILE, -(-num // 8) * 8)
  num_tiles = -(-num // tile)
  capacity = -(-max_output_size // tile) * tile

  order = jnp.argsort(scores, descending=True, stable=True).astype(jnp.int32)
  pad = num_tiles * tile - num
  area = box_area(boxes)
  sorted_boxes = jnp.pad(boxes[order], ((0, pad), (0, 0)))
  sorted_area = jnp.pad(area[order], (0, pad))
  sorted_class = jnp.pad(jnp.asarray(class_ids)[order], (0, pad))
  sorted_index = jnp.pad(order, (0, pad), constant_values=-1)

  def take(x, start):
    return jax.lax.dynamic_slice_in_dim(x, start, tile)

  def process_tile(state):
    t, num_kept, kept_boxes, kept_area, kept_class, kept_index = state
    start = t * tile
    cand = (take(sorted_boxes, start), take(sorted_area, start), take(sorted_class, start))

    def suppress_by_kept_block(b, suppressed):
      block = (take(kept_boxes, b * tile), take(kept_area, b * tile), take(kept_class, b * tile))
      valid = b * tile + jnp.arange(tile) < num_kept
      hit = _suppression(*block, *cand, threshold) & valid[:, None]
      return suppressed | jnp.any(hit, axis=0)

    num_blocks = (num_kept + tile - 1) // tile
    suppressed = jax.lax.fori_loop(0, num_blocks, suppress_by_kept_block, jnp.zeros(tile, bool))
    alive = (start + jnp.arange(tile) < num) & ~suppressed

    # Inside the tile, box j survives iff no earlier surviving box i < j suppresses it. The survivors are
    # the unique fixed point of keep = alive & ~any_i(keep_i & S_ij), reached in at most `tile` steps.
    upper = jnp.arange(tile)[:, None] < jnp.arange(tile)[None, :]
    within = _suppression(*cand, *cand, threshold) & upper

    def refine(carry):
      keep, _ = carry
      new_keep = alive & ~jnp.any(within & keep[:, None], axis=0)
      return new_keep, jnp.any(new_keep != keep)

    keep, _ = jax.lax.while_loop(lambda c: c[1], refine, (alive, jnp.array(True)))

    dest = jnp.where(keep, num_kept + jnp.cumsum(keep) - 1, capacity)
    kept_boxes = kept_boxes.at[dest].set(cand[0], mode="drop")
    kept_area = kept_area.at[dest].set(cand[1], mode="drop")
    kept_class = kept_class.at[dest].set(cand[2], mode="drop")
    kept_index = kept_index.at[dest].set(take(sorted_index, start), mode="drop")
    return t + 1, num_kept + jnp.sum(keep, dtype=jnp.int32), kept_boxes, kept_area, kept_class, kept_index

  def more_to_do(state):
    t, num_kept = state[:2]
    return (t < num_tiles) & (num_kept < max_output_size)

  init = (
      jnp.int32(0), jnp.int32(0),
      jnp.zeros((capacity, 4), boxes.dtype), jnp.zeros((capacity,), boxes.dtype),
      jnp.zeros((capacity,), sorted_class.dtype), jnp.full((capacity,), -1, jnp.int32))
  kept_index = jax.lax.while_loop(more_to_do, process_tile, init)[-1]
  return kept_index[:max_output_size]


def nms(boxes, scores, iou_threshold, max_output_size):
  """Greedy NMS as torchvision.ops.nms, with a fixed-size output.

  Args:
    boxes: [M, 4] float (x1, y1, x2, y2).
    scores: [M].
    iou_threshold: Python float; a box is discarded when its IoU with a kept, higher-scored box is greater.
    max_output_size: static int, the output length.

  Returns:
    int32[max_output_size]: indices into `boxes` of the kept boxes by descending score (ties in input
    order), then -1. Equal to torchvision's result truncated / padded to max_output_size.
  """
  return _greedy_nms(boxes, scores, jnp.zeros(jnp.shape(scores), jnp.int32), iou_threshold, max_output_size)


def batched_nms(boxes, scores, class_ids, iou_threshold, max_output_size):
  """Per-class greedy NMS as torchvision.ops.batched_nms: boxes suppress only boxes of the same class.

  Args:
    boxes: [M, 4] float; scores: [M]; class_ids: [M] int.
    iou_threshold, max_output_size: as nms.

  Returns:
    int32[max_output_size]: kept indices by descending score over all classes, then -1.
  """
  return _greedy_nms(boxes, scores, class_ids, iou_threshold, max_output_size)
