"""Anchor boxes on FPN feature grids, as torchvision's AnchorGenerator or detectron2's DefaultAnchorGenerator.

Anchors depend only on static shapes, so they are computed on the host in float32 NumPy at trace time
(exact, and folded into the program as constants) and returned as jnp arrays.
"""
import jax.numpy as jnp
import numpy as np

STYLES = ("torchvision", "detectron2")


def cell_anchors(sizes, aspect_ratios, style="torchvision"):
  """Zero-centred anchors [len(sizes) * len(aspect_ratios), 4]; aspect ratio = height / width.

  torchvision: ratio-major order, w = size / sqrt(ratio), h = size * sqrt(ratio) in float32, rounded
  half-to-even. detectron2: size-major order, w = sqrt(size^2 / ratio), h = ratio * w in float64, not
  rounded, then cast to float32.
  """
  if style == "torchvision":
    scales = np.asarray(sizes, np.float32)
    h_ratios = np.sqrt(np.asarray(aspect_ratios, np.float32))
    w_ratios = np.float32(1) / h_ratios
    ws = (w_ratios[:, None] * scales[None, :]).reshape(-1)
    hs = (h_ratios[:, None] * scales[None, :]).reshape(-1)
    return np.round(np.stack([-ws, -hs, ws, hs], axis=1) / np.float32(2))
  if style == "detectron2":
    anchors = []
    for size in sizes:
      for ratio in aspect_ratios:
        w = np.sqrt(float(size) ** 2 / ratio)
        h = ratio * w
        anchors.append([-w / 2, -h / 2, w / 2, h / 2])
    return np.asarray(anchors, np.float64).astype(np.float32)
  raise ValueError(f"style must be one of {STYLES}, got {style!r}")


def anchor_grid(feature_shape, stride, sizes, aspect_ratios, offset=0.0, style="torchvision"):
  """Anchors of one pyramid level -> [Hl * Wl * A, 4], location-major (row, column), then cell anchor.

  Args:
    feature_shape: (Hl, Wl) of the feature map.
    stride: int or (stride_h, stride_w), pixels between neighbouring feature locations.
    sizes, aspect_ratios: sequences giving the A = len(sizes) * len(aspect_ratios) cell anchors.
    offset: anchor centres at (i + offset) * stride; detectron2's ANCHOR_GENERATOR.OFFSET. torchvision has
      no offset (0.0).
    style: "torchvision" or "detectron2" (see cell_anchors).
  """
  if len(feature_shape) != 2:
    raise ValueError(f"feature_shape must be (height, width), got {feature_shape}")
  stride_h, stride_w = (stride, stride) if np.ndim(stride) == 0 else stride
  if style == "torchvision" and offset != 0.0:
    raise ValueError(f"offset must be 0.0 for style='torchvision', got {offset}")
  base = cell_anchors(sizes, aspect_ratios, style)
  grid_h, grid_w = feature_shape
  shift_x = ((np.arange(grid_w) + offset) * stride_w).astype(np.float32)
  shift_y = ((np.arange(grid_h) + offset) * stride_h).astype(np.float32)
  shift_y, shift_x = np.meshgrid(shift_y, shift_x, indexing="ij")
  shifts = np.stack([shift_x, shift_y, shift_x, shift_y], axis=-1).reshape(-1, 1, 4)
  return jnp.asarray((shifts + base[None]).reshape(-1, 4))


def fpn_anchors(image_shape, feature_shapes, sizes, aspect_ratios, offset=0.0, style="torchvision"):
  """Anchors of all pyramid levels concatenated -> [sum_l Hl * Wl * A_l, 4].

  The stride of level l is image_shape // feature_shapes[l] per axis, as torchvision's AnchorGenerator;
  this equals detectron2's configured strides when the image is padded to a multiple of the coarsest
  stride (its size_divisibility).

  Args:
    image_shape: (H, W) of the padded network input.
    feature_shapes: [(Hl, Wl)] per level.
    sizes: per-level sequences of anchor sizes, e.g. ((32,), (64,), (128,), (256,), (512,)).
    aspect_ratios: per-level sequences, or one sequence shared by every level.
  """
  if len(sizes) != len(feature_shapes):
    raise ValueError(f"sizes must have one entry per level ({len(feature_shapes)}), got {len(sizes)}")
  if np.ndim(aspect_ratios[0]) == 0:
    aspect_ratios = (aspect_ratios,) * len(sizes)
  if len(aspect_ratios) != len(feature_shapes):
    raise ValueError(
        f"aspect_ratios must have one entry per level ({len(feature_shapes)}), got {len(aspect_ratios)}")
  levels = []
  for shape, level_sizes, level_ratios in zip(feature_shapes, sizes, aspect_ratios):
    stride = (image_shape[0] // shape[0], image_shape[1] // shape[1])
    levels.append(anchor_grid(shape, stride, level_sizes, level_ratios, offset, style))
  return jnp.concatenate(levels, axis=0)
