"""Box geometry on (x1, y1, x2, y2) pixel boxes: area, IoU, GIoU, format conversion, R-CNN box coding.

Semantics follow torchvision.ops.boxes and torchvision.models.detection._utils.BoxCoder: widths are
x2 - x1 (no +1), and the arithmetic is written in the same order so float32 results agree bit for bit.
"""
import math

import jax.numpy as jnp

# torchvision / detectron2 clamp on dw, dh before exp() in box decoding.
BBOX_XFORM_CLIP = math.log(1000.0 / 16)

BOX_FORMATS = ("xyxy", "xywh", "cxcywh")


def check_boxes(boxes, name="boxes", ndim=None):
  """Raises ValueError unless `boxes` has shape [..., 4] (exactly `ndim` dims when given)."""
  shape = jnp.shape(boxes)
  if not shape or shape[-1] != 4 or (ndim is not None and len(shape) != ndim):
    want = "[..., 4]" if ndim is None else "[" + "N, " * (ndim - 1) + "4]"
    raise ValueError(f"{name} must have shape {want}, got {shape}")


def box_area(boxes):
  """Areas (x2 - x1) * (y2 - y1) of boxes [..., 4] -> [...]."""
  check_boxes(boxes)
  width = boxes[..., 2] - boxes[..., 0]
  # The select keeps XLA:CPU from contracting area_a + area_b into an FMA, which rounds differently
  # from torchvision; it changes no value (a zero width gives a zero area either way).
  return jnp.where(width != 0, width * (boxes[..., 3] - boxes[..., 1]), 0)


def _inter_union(boxes1, boxes2):
  """Pairwise intersection and union areas, each [..., N, M]."""
  check_boxes(boxes1, "boxes1")
  check_boxes(boxes2, "boxes2")
  lt = jnp.maximum(boxes1[..., :, None, :2], boxes2[..., None, :, :2])
  rb = jnp.minimum(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])
  wh = jnp.maximum(rb - lt, 0)
  inter = wh[..., 0] * wh[..., 1]
  union = box_area(boxes1)[..., :, None] + box_area(boxes2)[..., None, :] - inter
  return inter, union


def box_iou(boxes1, boxes2):
  """Pairwise IoU of boxes1 [..., N, 4] and boxes2 [..., M, 4] -> [..., N, M] (torchvision.ops.box_iou).

  Two zero-area boxes give 0 / 0 = NaN, as in torchvision.
  """
  inter, union = _inter_union(boxes1, boxes2)
  return inter / union


def generalized_box_iou(boxes1, boxes2):
  """Pairwise GIoU (Rezatofighi et al. 2019, Alg. 1): IoU - (|C| - |A u B|) / |C|, C the enclosing box.

  boxes1 [..., N, 4], boxes2 [..., M, 4] -> [..., N, M], as torchvision.ops.generalized_box_iou.
  """
  inter, union = _inter_union(boxes1, boxes2)
  iou = inter / union
  lt = jnp.minimum(boxes1[..., :, None, :2], boxes2[..., None, :, :2])
  rb = jnp.maximum(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])
  wh = jnp.maximum(rb - lt, 0)
  enclosing = wh[..., 0] * wh[..., 1]
  return iou - (enclosing - union) / enclosing


def box_convert(boxes, in_fmt, out_fmt):
  """Converts boxes [..., 4] between "xyxy", "xywh" (corner, size) and "cxcywh" (centre, size)."""
  check_boxes(boxes)
  for name, fmt in (("in_fmt", in_fmt), ("out_fmt", out_fmt)):
    if fmt not in BOX_FORMATS:
      raise ValueError(f"{name} must be one of {BOX_FORMATS}, got {fmt!r}")
  a, b, c, d = jnp.moveaxis(boxes, -1, 0)
  if in_fmt == "xywh":
    a, b, c, d = a, b, a + c, b + d
  elif in_fmt == "cxcywh":
    a, b, c, d = a - 0.5 * c, b - 0.5 * d, a + 0.5 * c, b + 0.5 * d
  if out_fmt == "xywh":
    a, b, c, d = a, b, c - a, d - b
  elif out_fmt == "cxcywh":
    a, b, c, d = (a + c) / 2, (b + d) / 2, c - a, d - b
  return jnp.stack([a, b, c, d], axis=-1)


def clip_boxes(boxes, height, width):
  """Clamps x to [0, width] and y to [0, height] (torchvision.ops.clip_boxes_to_image)."""
  check_boxes(boxes)
  x = jnp.clip(boxes[..., 0::2], 0, width)
  y = jnp.clip(boxes[..., 1::2], 0, height)
  return jnp.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], axis=-1)


def _centre_size(boxes):
  w = boxes[..., 2] - boxes[..., 0]
  h = boxes[..., 3] - boxes[..., 1]
  return boxes[..., 0] + 0.5 * w, boxes[..., 1] + 0.5 * h, w, h


def encode_boxes(reference_boxes, proposals, weights=(1.0, 1.0, 1.0, 1.0)):
  """R-CNN regression targets of reference_boxes w.r.t. proposals, both [..., 4] -> deltas [..., 4].

  Girshick et al. 2014, App. C: (wx dx/w, wy dy/h, ww log(W/w), wh log(H/h)), as torchvision's BoxCoder.
  """
  check_boxes(reference_boxes, "reference_boxes")
  check_boxes(proposals, "proposals")
  wx, wy, ww, wh = weights
  ex_x, ex_y, ex_w, ex_h = _centre_size(proposals)
  gt_x, gt_y, gt_w, gt_h = _centre_size(reference_boxes)
  return jnp.stack([
      wx * (gt_x - ex_x) / ex_w,
      wy * (gt_y - ex_y) / ex_h,
      ww * jnp.log(gt_w / ex_w),
      wh * jnp.log(gt_h / ex_h),
  ], axis=-1)


def decode_boxes(deltas, boxes, weights=(1.0, 1.0, 1.0, 1.0), bbox_xform_clip=BBOX_XFORM_CLIP):
  """Inverse of encode_boxes: applies deltas [..., 4] to boxes [..., 4] -> [..., 4] (broadcasting).

  dw, dh are clamped to bbox_xform_clip before exp(), as torchvision's BoxCoder.decode_single.
  """
  check_boxes(deltas, "deltas")
  check_boxes(boxes, "boxes")
  wx, wy, ww, wh = weights
  ctr_x, ctr_y, w, h = _centre_size(boxes.astype(deltas.dtype))
  dx = deltas[..., 0] / wx
  dy = deltas[..., 1] / wy
  dw = jnp.minimum(deltas[..., 2] / ww, bbox_xform_clip)
  dh = jnp.minimum(deltas[..., 3] / wh, bbox_xform_clip)
  pred_x = dx * w + ctr_x
  pred_y = dy * h + ctr_y
  half_w = 0.5 * (jnp.exp(dw) * w)
  half_h = 0.5 * (jnp.exp(dh) * h)
  return jnp.stack([pred_x - half_w, pred_y - half_h, pred_x + half_w, pred_y + half_h], axis=-1)
