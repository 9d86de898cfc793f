"""Per-example preprocessing in TensorFlow: decode, scale, flip, crop/pad to fixed shapes.

Train: the image is resized to fit `image_size` keeping its aspect ratio, times a random scale in
`scale_range`, flipped left-right with probability 1/2 (if `flip`), then randomly cropped and
padded (bottom/right) to `image_size`. Eval: fit and pad only (no resize when sizes match).
Randomness is stateless (`seed` [2] per example), so an example's augmentation is reproducible.
Boxes are the tight extent of each transformed mask, so box and mask agree exactly; instances
with no pixel left are invalid. Padding: image 0, semantic 255, masks 0.
"""
from segjax.constants import IGNORE_LABEL
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


def output_signature(image_size, max_instances):
  """TensorSpecs of one `preprocess` output."""
  h, w = image_size
  m = max_instances
  spec = tf.TensorSpec
  return {"image": spec([h, w, 3], tf.float32), "semantic": spec([h, w], tf.int32),
          "boxes": spec([m, 4], tf.float32), "classes": spec([m], tf.int32),
          "masks": spec([m, h, w], tf.uint8), "is_crowd": spec([m], tf.bool),
          "instance_valid": spec([m], tf.bool), "image_id": spec([], tf.int32),
          "valid_image": spec([], tf.bool), "orig_size": spec([2], tf.int32),
          "scale": spec([], tf.float32), "num_dropped": spec([], tf.int32)}


def preprocess(example, seed, valid, *, image_size, max_instances, train, scale_range=(1.0, 1.0),
               flip=False):
  """A decoded TFDS example (see tfds_coco) -> fixed-shape tensors of one batch row.

  Args:
    example: dict with image uint8 [h, w, 3], semantic uint8 [h, w, 1], image_id, and instances
      {label [N], is_crowd [N], mask: PNG strings [N]}.
    seed: int64 [2], the stateless seed of this example's augmentation.
    valid: bool scalar; False gives a padding row (image 0, semantic 255, no instances).
  Returns:
    image float32 [H, W, 3] in [0, 1], semantic int32 [H, W], boxes float32 [M, 4],
    classes int32 [M], masks uint8 [M, H, W], is_crowd bool [M], instance_valid bool [M],
    image_id int32, valid_image bool, orig_size int32 [2] (h, w), scale float32 (resize factor
    applied to the source image), num_dropped int32 (instances beyond M).
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
  masks = tf.transpose(tf.pad(labels[..., 1:], pad), [2, 0, 1])
  masks = tf.pad(masks, [[0, m - n], [0, 0], [0, 0]])
  masks.set_shape([m, out_h, out_w])

  instance_valid = tf.reduce_any(masks > 0, axis=[1, 2]) & valid
  masks *= tf.cast(instance_valid, tf.uint8)[:, None, None]
  classes = tf.pad(instances["label"][:n], [[0, m - n]])
  is_crowd = tf.pad(instances["is_crowd"][:n], [[0, m - n]])
  image = tf.where(valid, image / 255.0, 0.0)
  image.set_shape([out_h, out_w, 3])
  semantic = tf.where(valid, tf.cast(semantic, tf.int32), IGNORE_LABEL)
  semantic.set_shape([out_h, out_w])
  return {
      "image": image,
      "semantic": semantic,
      "boxes": _boxes_from_masks(masks),
      "classes": tf.where(instance_valid, tf.cast(classes, tf.int32), 0),
      "masks": masks,
      "is_crowd": is_crowd & instance_valid,
      "instance_valid": instance_valid,
      "image_id": tf.where(valid, tf.cast(example["image_id"], tf.int32), -1),
      "valid_image": valid,
      "orig_size": tf.stack([height, width]),
      "scale": scale,
      "num_dropped": tf.where(valid, n_all - n, 0),
  }
