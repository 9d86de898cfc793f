"""Per-example preprocessing in TensorFlow: decode, scale, flip, crop/pad to fixed shapes.

Train: the image is resized to fit `image_size` keeping its aspect ratio, times a random scale in
`scale_range`, flipped left-right with probability 1/2 (if `flip`), then randomly cropped and
padded (bottom/right) to `image_size`. Eval: fit and pad only (no resize when sizes match).
Randomness is stateless (`seed` [2] per example), so an example's augmentation is reproducible.
Boxes are the tight extent of each transformed mask, so box and mask agree exactly; instances
with no pixel left are invalid. Padding: image 0, semantic 255, masks 0.

What leaves here is compact, as it crosses to the accelerators (segjax/data/compact.py expands it there): the
image as uint8 (rounded after resizing, as torchvision's and detectron2's uint8 transforms do), semantic as
uint8, and only the first min(N, max_instances) instance masks, bit-packed along W (`pack_bits`).
"""
from segjax.data.info import IGNORE_LABEL
from segjax.data.tf_env import tf


def _decode_masks(encoded, height, width):
  """PNG-encoded masks [n] -> uint8 [n, H, W]."""
  return tf.cond(
      tf.size(encoded) > 0,
      lambda: tf.map_fn(lambda s: tf.io.decode_png(s, channels=1)[..., 0], encoded,
                        fn_output_signature=tf.TensorSpec([None, None], tf.uint8)),
      lambda: tf.zeros([0, height, width], tf.uint8))


def _resize(image, labels, size):
  """Image bilinear -> float32 (antialiased when shrinking), labels nearest; identity if same size."""
  shape = tf.shape(image)[:2]
  return tf.case(
      [(tf.reduce_all(shape == size), lambda: (tf.cast(image, tf.float32), labels)),
       (tf.reduce_any(size < shape), lambda: (tf.image.resize(image, size, antialias=True),
                                              tf.image.resize(labels, size, "nearest")))],
      default=lambda: (tf.image.resize(image, size), tf.image.resize(labels, size, "nearest")))


def _boxes_from_masks(masks):
  """Tight boxes (x1, y1, x2, y2) in pixel edges of masks [M, H, W]; zeros for empty masks."""
  def extent(any_along):  # bool [M, L] -> (first, one past last) index
    length = tf.shape(any_along)[1]
    first = tf.argmax(tf.cast(any_along, tf.int32), axis=1, output_type=tf.int32)
    last = length - tf.argmax(tf.cast(any_along[:, ::-1], tf.int32), axis=1, output_type=tf.int32)
    return first, last
  on = masks > 0
  y1, y2 = extent(tf.reduce_any(on, axis=2))
  x1, x2 = extent(tf.reduce_any(on, axis=1))
  boxes = tf.cast(tf.stack([x1, y1, x2, y2], axis=-1), tf.float32)
  return tf.where(tf.reduce_any(on, axis=[1, 2])[:, None], boxes, 0.0)


def pack_bits(masks):
  """0/1 uint8 [n, H, W] -> uint8 [n, H, ceil(W / 8)], the layout of np.packbits(masks, axis=-1)."""
  n, h, w = tf.unstack(tf.shape(masks))
  padded = tf.pad(tf.cast(masks, tf.int32), [[0, 0], [0, 0], [0, (-w) % 8]])
  bits = tf.reshape(padded, [n, h, -1, 8]) * tf.constant([128, 64, 32, 16, 8, 4, 2, 1], tf.int32)
  return tf.cast(tf.reduce_sum(bits, axis=-1), tf.uint8)


def preprocess(example, seed, valid, *, image_size, max_instances, train, scale_range=(1.0, 1.0),
               flip=False):
  """A decoded TFDS example (see tfds_coco) -> fixed-shape tensors of one batch row.

  Args:
    example: dict with image uint8 [h, w, 3], semantic uint8 [h, w, 1], image_id, and instances
      {label [N], is_crowd [N], mask: PNG strings [N]}.
    seed: int64 [2], the stateless seed of this example's augmentation.
    valid: bool scalar; False gives a padding row (image 0, semantic 255, no instances).
  Returns:
    image uint8 [H, W, 3], semantic uint8 [H, W], boxes float32 [M, 4], classes int32 [M],
    masks_packed uint8 [n, H, ceil(W / 8)] (`pack_bits` of slots 0..n-1, n = min(N, M); slots
    past n and invalid ones are all zero), is_crowd bool [M], instance_valid bool [M], image_id
    int32, valid_image bool, orig_size int32 [2] (h, w), scale float32 (resize factor applied to
    the source image), num_dropped int32 (instances beyond M).
  """
  out_h, out_w = image_size
  m = max_instances
  image = example["image"]
  height, width = tf.shape(image)[0], tf.shape(image)[1]
  instances = example["instances"]
  n_all = tf.shape(instances["label"])[0]
  n = tf.minimum(n_all, m)
  masks = _decode_masks(instances["mask"][:n], height, width)
  labels = tf.concat([example["semantic"], tf.transpose(masks, [1, 2, 0])], axis=-1)

  u = tf.random.stateless_uniform([4], seed=seed)
  hw = tf.cast(tf.stack([height, width]), tf.float32)
  scale = tf.reduce_min(tf.constant([out_h, out_w], tf.float32) / hw)  # fit, keep aspect ratio
  if train:
    lo, hi = scale_range
    scale *= lo + (hi - lo) * u[0]
  size = tf.maximum(tf.cast(tf.round(hw * scale), tf.int32), 1)
  image, labels = _resize(image, labels, size)
  if train and flip:
    image, labels = tf.cond(u[1] < 0.5, lambda: (image[:, ::-1], labels[:, ::-1]),
                            lambda: (image, labels))
  if train:  # random crop offset within the part that exceeds the output size
    slack = tf.maximum(size - tf.constant([out_h, out_w]), 0)
    offset = tf.minimum(tf.cast(u[2:] * tf.cast(slack + 1, tf.float32), tf.int32), slack)
    image = image[offset[0]:offset[0] + out_h, offset[1]:offset[1] + out_w]
    labels = labels[offset[0]:offset[0] + out_h, offset[1]:offset[1] + out_w]
  image = image[:out_h, :out_w]
  labels = labels[:out_h, :out_w]
  pad = [[0, out_h - tf.shape(image)[0]], [0, out_w - tf.shape(image)[1]], [0, 0]]
  image = tf.pad(image, pad)
  semantic = tf.pad(labels[..., :1], pad, constant_values=IGNORE_LABEL)[..., 0]
  masks = tf.transpose(tf.pad(labels[..., 1:], pad), [2, 0, 1])  # [n, H, W]
  masks = tf.ensure_shape(masks, [None, out_h, out_w])

  instance_valid = tf.reduce_any(masks > 0, axis=[1, 2]) & valid
  masks *= tf.cast(instance_valid, tf.uint8)[:, None, None]
  to_m = [[0, m - n]]
  boxes = tf.pad(_boxes_from_masks(masks), to_m + [[0, 0]])
  instance_valid = tf.pad(instance_valid, to_m)
  classes = tf.pad(instances["label"][:n], to_m)
  is_crowd = tf.pad(instances["is_crowd"][:n], to_m)
  image = tf.where(valid, tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8), tf.zeros([], tf.uint8))
  image = tf.ensure_shape(image, [out_h, out_w, 3])
  semantic = tf.where(valid, tf.cast(semantic, tf.uint8), tf.constant(IGNORE_LABEL, tf.uint8))
  semantic = tf.ensure_shape(semantic, [out_h, out_w])
  return {
      "image": image,
      "semantic": semantic,
      "boxes": tf.ensure_shape(boxes, [m, 4]),
      "classes": tf.ensure_shape(tf.where(instance_valid, tf.cast(classes, tf.int32), 0), [m]),
      "masks_packed": pack_bits(masks),
      "is_crowd": tf.ensure_shape(is_crowd & instance_valid, [m]),
      "instance_valid": tf.ensure_shape(instance_valid, [m]),
      "image_id": tf.where(valid, tf.cast(example["image_id"], tf.int32), -1),
      "valid_image": valid,
      "orig_size": tf.stack([height, width]),
      "scale": scale,
      "num_dropped": tf.where(valid, n_all - n, 0),
  }
