"""Per-example preprocessing in TensorFlow: decode, scale, flip, crop/pad to fixed shapes.

Train: the image is resized to fit `image_size` keeping its aspect ratio, times a random scale in
`scale_range`, flipped left-right with probability 1/2 (if `flip`), then randomly cropped and
padded (bottom/right) to `image_size`. Eval: fit and pad only (no resize when sizes match).
Randomness is stateless (`seed` [2] per example), so an example's augmentation is reproducible.
Boxes are the tight extent of each transformed mask, so box and mask agree exactly; instances
with no pixel left are invalid. Padding: image 0, semantic 255, masks 0.

What leaves here is compact, as it crosses to the accelerators (segjax/data/compact.py expands it there): the
image as uint8 (rounded after resizing, as torchvision's and detectron2's uint8 transforms do), semantic as
uint8, and only the first min(N, max_instances) instance masks, bit-packed along W (`finish_labels`, which
runs in numpy after `preprocess` and decodes each mask's RLE there).
"""
import numpy as np
from pycocotools import mask as mask_utils

from segjax.constants import IGNORE_LABEL
from segjax.data.tf_env import tf
from segjax.data.unet_weights import unet_weight_map


def _resize_image(image, size):
  """Image bilinear -> float32 (antialiased when shrinking); identity if same size. The uint8 image is cast
  first: TensorFlow's float32 resize kernels give the same values and run faster than their uint8 ones."""
  image = tf.cast(image, tf.float32)
  shape = tf.shape(image)[:2]
  return tf.case(
      [(tf.reduce_all(shape == size), lambda: image),
       (tf.reduce_any(size < shape), lambda: tf.image.resize(image, size, antialias=True))],
      default=lambda: tf.image.resize(image, size))


def zero_unless(valid, image):
  """`image`, or zeros of its shape when not `valid` (a padding row). A tf.cond: a scalar-condition tf.where would
  make an elementwise pass over the image."""
  return tf.cond(valid, lambda: image, lambda: tf.zeros_like(image))


def _nearest_index(length, size):
  """Source index int32 [size] of each output pixel of a nearest resize along one axis, by TensorFlow's own
  rule (resizing an index ramp: nearest resizes each axis independently)."""
  ramp = tf.reshape(tf.range(length), [length, 1, 1])
  return tf.image.resize(ramp, tf.stack([size, 1]), "nearest")[:, 0, 0]


def _window(index, offset, out, sentinel, multiple=1):
  """index[offset:offset + out], padded with `sentinel` to `out` rounded up to `multiple`."""
  index = index[offset:offset + out]
  padded = -(-out // multiple) * multiple
  return tf.pad(index, [[0, padded - tf.shape(index)[0]]], constant_values=sentinel)


def _moved_intrinsics(intrinsics, hw, size, flipped, offset):
  """(fx, fy, cx, cy) float32 [4] of the output pixels, from the source's: a resize by s = size / source size maps
  source pixel u to output (u + 0.5) s - 0.5, so f -> s f and c -> s (c + 0.5) - 0.5; a flip of the resized width w'
  maps c -> w' - 1 - c (the mirrored scene, f unchanged); the crop subtracts its offset; padding changes nothing."""
  fx, fy, cx, cy = (tf.constant(v, tf.float32) for v in intrinsics)
  s = tf.cast(size, tf.float32) / hw  # (s_y, s_x)
  cx = s[1] * (cx + 0.5) - 0.5
  cx = tf.where(flipped, tf.cast(size[1], tf.float32) - 1 - cx, cx)
  cy = s[0] * (cy + 0.5) - 0.5
  return tf.stack([s[1] * fx, s[0] * fy, cx - tf.cast(offset[1], tf.float32), cy - tf.cast(offset[0], tf.float32)])


def preprocess(example, seed, valid, *, image_size, max_instances, train, scale_range=(1.0, 1.0),
               flip=False, semantic=True, instance_ids=False, intrinsics=None, hue=0.0):
  """A decoded TFDS example (see tfds_coco) -> fixed-shape tensors of one batch row.

  Args:
    example: dict with image uint8 [h, w, 3], semantic uint8 [h, w, 1], image_id, and instances
      {label [N], is_crowd [N], mask: COCO compressed RLE counts [N] of the [h, w] masks}.
    seed: int64 [2], the stateless seed of this example's augmentation.
    valid: bool scalar; False gives a padding row (image 0, semantic 255, no instances).
    semantic: False leaves the semantic labels out (not read: no semantic_rows).
    instance_ids: True passes the example's instance id map uint16 [h, w] on as `instance_ids` int32 [h, w],
      at the source size (U-Net's weight map is computed there, then resampled as the labels: `finish_labels`).
    hue: train only, > 0: the image's hue rotated by a random fraction of the colour circle in [-hue, hue]
      (tf.image.adjust_hue), after the UCN authors' chromatic augmentation of their training images (cfg.TRAIN.
      CHROMATIC, utils.blob.chromatic_transform, called in github.com/NVlabs/UnseenObjectClustering,
      lib/datasets/tabletop_object.py, commit 2600526d9159b020a73da421970b6e867d4007ee; a small jitter there, where
      0.5 here makes colour say nothing about the class). Drawn from the example's seed folded with 1, so the other
      draws are those of hue 0.
    intrinsics: the source camera's (fx, fy, cx, cy) in pixels, for an example with depth uint16 [h, w, 1]: its
      depth is moved as the labels (nearest resize, flip, crop; padding 0 = no depth) and the intrinsics with it.
  Returns:
    image uint8 [H, W, 3], semantic_rows uint8 [H, w + 1] (the semantic labels at the output rows, source
    columns plus a padding one: 255), mask_rle [n] (the first n = min(N, M) masks' RLE counts), mask_source_rows
    int32 [H] and mask_columns int32 [8 ceil(W / 8)] (the source row of each output row, h for padding, and
    column of each output column, w for padding), classes int32 [n],
    is_crowd bool [n], image_id int32, valid_image bool, orig_size int32 [2] (h, w), scale float32
    (resize factor applied to the source image), num_dropped int32 (instances beyond M); with depth: depth uint16
    [H, W] (millimetres, 0 none) and intrinsics float32 [4] (fx, fy, cx, cy of the output pixels).
    `finish_labels` turns the label and instance entries into the batch row's.
  """
  out_h, out_w = image_size
  m = max_instances
  image = example["image"]
  height, width = tf.shape(image)[0], tf.shape(image)[1]
  instances = example["instances"]
  n_all = tf.shape(instances["label"])[0]
  n = tf.minimum(n_all, m)

  u = tf.random.stateless_uniform([4], seed=seed)
  hw = tf.cast(tf.stack([height, width]), tf.float32)
  scale = tf.reduce_min(tf.constant([out_h, out_w], tf.float32) / hw)  # fit, keep aspect ratio
  if train:
    lo, hi = scale_range
    scale *= lo + (hi - lo) * u[0]
  size = tf.maximum(tf.cast(tf.round(hw * scale), tf.int32), 1)
  flipped = tf.constant(False)
  if train and flip:
    flipped = u[1] < 0.5
  offset = tf.zeros([2], tf.int32)
  if train:  # random crop offset within the part that exceeds the output size
    slack = tf.maximum(size - tf.constant([out_h, out_w]), 0)
    offset = tf.minimum(tf.cast(u[2:] * tf.cast(slack + 1, tf.float32), tf.int32), slack)

  # The image: resize, rounded to uint8, flip, crop, pad (bottom/right with 0).
  image = _resize_image(image, size)
  if train and hue > 0:
    delta = tf.random.stateless_uniform([], seed=tf.random.experimental.stateless_fold_in(seed, 1), minval=-hue,
                                        maxval=hue)
    image = 255 * tf.image.adjust_hue(image / 255, delta)
  image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
  image = tf.cond(flipped, lambda: tf.reverse(image, [1]), lambda: image)
  image = image[offset[0]:offset[0] + out_h, offset[1]:offset[1] + out_w]
  image = tf.pad(image, [[0, out_h - tf.shape(image)[0]], [0, out_w - tf.shape(image)[1]], [0, 0]])
  image = zero_unless(valid, image)

  # Labels: nearest resize, flip, crop and pad are one gather of source rows and columns; the index one past
  # the source (`height`, `width`) picks the padding row/column. Columns run to a multiple of 8 for packing.
  rows = _window(_nearest_index(height, size[0]), offset[0], out_h, height)
  cols = _nearest_index(width, size[1])
  cols = tf.cond(flipped, lambda: tf.reverse(cols, [0]), lambda: cols)
  cols = _window(cols, offset[1], out_w, width, multiple=8)
  labels = {}
  if semantic:
    padded = tf.pad(example["semantic"][..., 0], [[0, 1], [0, 1]], constant_values=IGNORE_LABEL)
    labels["semantic_rows"] = tf.gather(padded, rows, axis=0)  # [H, width + 1]
  if instance_ids:
    labels["instance_ids"] = tf.cast(example["instance_ids"], tf.int32)
  if "depth" in example:
    if intrinsics is None:
      raise ValueError("preprocess: an example with depth needs the camera's intrinsics")
    depth = tf.pad(tf.cast(example["depth"][..., 0], tf.int32), [[0, 1], [0, 1]])  # padding: 0, no depth
    depth = tf.gather(tf.gather(depth, rows, axis=0), cols[:out_w], axis=1)
    labels["depth"] = zero_unless(valid, tf.ensure_shape(tf.cast(depth, tf.uint16), [out_h, out_w]))
    labels["intrinsics"] = _moved_intrinsics(intrinsics, hw, size, flipped, offset)
  return {
      "image": tf.ensure_shape(image, [out_h, out_w, 3]),
      **labels,
      "mask_rle": instances["mask"][:n],
      "mask_source_rows": rows,
      "mask_columns": cols,
      "classes": tf.cast(instances["label"][:n], tf.int32),
      "is_crowd": instances["is_crowd"][:n],
      "image_id": tf.where(valid, tf.cast(example["image_id"], tf.int32), -1),
      "valid_image": valid,
      "orig_size": tf.stack([height, width]),
      "scale": scale,
      "num_dropped": tf.where(valid, n_all - n, 0),
  }


def _span(hit):
  """(first, one past last) index of the True values of bool [L] (which has some)."""
  where = np.flatnonzero(hit)
  return where[0], where[-1] + 1


def finish_labels(example, max_instances, width, weight_map=None):
  """`preprocess`'s output (numpy) -> the batch row: semantic [H, W] and the instance targets (the masks decoded,
  gathered at the output rows and columns and bit-packed, validity (a pixel left), tight boxes), padded to
  max_instances.

  With `weight_map` (w0, sigma) and the source's `instance_ids`: pixel_weights float32 [H, W], U-Net's weight map
  (Ronneberger et al. 2015, Eq. 2; segjax/data/unet_weights.py) of the source instances, as the paper precomputes
  it for each ground truth, then gathered at the output rows and columns like the labels (nearest resize, flip,
  crop); padding pixels (semantic 255) get 0.

  Each mask is gathered and packed only over the output rows and (byte-aligned) columns its source extent
  reaches (pycocotools' toBbox of the RLE): instances are mostly small, and the gather costs per element.
  """
  example = dict(example)
  rles, rows, columns = example.pop("mask_rle"), example.pop("mask_source_rows"), example.pop("mask_columns")
  if "semantic_rows" in example:
    semantic = np.take(example.pop("semantic_rows"), columns[:width], axis=1)
    example["semantic"] = np.where(example["valid_image"], semantic, np.uint8(IGNORE_LABEL))
  if "instance_ids" in example:
    ids = example.pop("instance_ids")
    if weight_map is not None:
      weights = np.pad(unet_weight_map(ids, *weight_map), [(0, 1), (0, 1)])  # the padding row and column: 0
      weights = weights[rows][:, columns[:width]]
      example["pixel_weights"] = np.where(example["valid_image"], weights, np.float32(0))
  n, height = len(rles), len(rows)
  packed = np.zeros((n, height, len(columns) // 8), np.uint8)
  boxes = np.zeros((n, 4), np.float32)
  valid = np.zeros(n, bool)
  if example["valid_image"] and n:
    h, w = (int(v) for v in example["orig_size"])
    encoded = [{"size": [h, w], "counts": counts} for counts in rles]
    for i, ((x, y, bw, bh), rle) in enumerate(zip(mask_utils.toBbox(encoded).astype(int), encoded)):
      row_hit = (rows >= y) & (rows < y + bh)  # output rows whose source row is inside the mask's extent
      column_hit = (columns[:width] >= x) & (columns[:width] < x + bw)
      if not row_hit.any() or not column_hit.any():
        continue
      (r0, r1), (c0, c1) = _span(row_hit), _span(column_hit)
      c0, c1 = c0 // 8 * 8, -(-c1 // 8) * 8
      source_columns = columns[c0:c1]  # w: a padding column, all 0
      window = mask_utils.decode(rle)[np.ix_(rows[r0:r1], np.minimum(source_columns, w - 1))]
      window &= (source_columns < w).astype(np.uint8)
      if not window.any():
        continue
      packed[i, r0:r1, c0 // 8:c1 // 8] = np.packbits(window, axis=-1)
      (y1, y2), (x1, x2) = _span(window.any(axis=1)), _span(window.any(axis=0))
      boxes[i] = c0 + x1, r0 + y1, c0 + x2, r0 + y2
      valid[i] = True
  pad = max_instances - n
  padded = lambda x: np.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1))
  example.update(masks_packed=packed, boxes=padded(boxes), instance_valid=padded(valid),
                 classes=padded(np.where(valid, example["classes"], 0).astype(np.int32)),
                 is_crowd=padded(example["is_crowd"] & valid))
  return example
