"""Per-example preprocessing of box-only detection examples (tfds_detection) in TensorFlow.

Eval: the image is resized to fit `image_size` keeping its aspect ratio (antialiased when shrinking), put at the
top left and padded; boxes are multiplied by the same `scale`. Train, YOLO's augmentation (Redmon et al. 2016,
Sec. 2.2): the fitted image is scaled by a random factor in `scale_range` and translated by up to `translate`
of the output size in each direction (one bilinear affine warp, zeros outside), optionally flipped, and its
exposure (V) and saturation (S) are multiplied in HSV by random factors up to `exposure` / `saturation`
(Darknet's rand_scale: a factor in [1, f], inverted with probability 1/2). Boxes follow the warp and are
clipped to the image; those with no area left, and in training the `difficult` ones (as Darknet's voc_label.py
and py-faster-rcnn leave them out), are invalid. Randomness is stateless from the example's `seed` [2].
"""
from segjax.data import augment
from segjax.data.proposals import stand_in_proposals
from segjax.data.tf_env import tf


def output_signature(image_size, max_instances, num_proposals=0):
  h, w = image_size
  m = max_instances
  spec = tf.TensorSpec
  proposals = {"proposals": spec([num_proposals, 4], tf.float32),
               "proposal_valid": spec([num_proposals], tf.bool)} if num_proposals else {}
  return {**proposals, "image": spec([h, w, 3], tf.float32), "boxes": spec([m, 4], tf.float32), "classes": spec([m], tf.int32),
          "difficult": spec([m], tf.bool), "instance_valid": spec([m], tf.bool), "image_id": spec([], tf.int32),
          "valid_image": spec([], tf.bool), "orig_size": spec([2], tf.int32), "scale": spec([], tf.float32),
          "num_dropped": spec([], tf.int32)}


def _rand_scale(limit, u_size, u_sign):
  """Darknet's rand_scale: a factor in [1, limit], inverted when u_sign < 1/2."""
  factor = 1.0 + (limit - 1.0) * u_size
  return tf.where(u_sign < 0.5, 1.0 / factor, factor)


def _warp(image, scale, offset, out_size):
  """Bilinear image [h, w, 3] float -> [H, W, 3] under x_out = scale * x_in + offset (pixel edges), zeros outside."""
  # Pixel centres: i_in + 0.5 = (i_out + 0.5 - offset) / scale.
  a = 1.0 / scale
  transform = tf.stack([a, 0.0, (0.5 - offset[0]) * a - 0.5, 0.0, a, (0.5 - offset[1]) * a - 0.5, 0.0, 0.0])
  return tf.raw_ops.ImageProjectiveTransformV3(
      images=image[None], transforms=transform[None], output_shape=tf.constant(out_size, tf.int32),
      fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")[0]


def preprocess(example, seed, valid, *, image_size, max_instances, train, scale_range=(1.0, 1.0), translate=0.0,
               flip=False, exposure=1.0, saturation=1.0, num_proposals=0, box_transform=False):
  """A decoded tfds_detection example -> fixed-shape tensors of one batch row (see output_signature). With
  num_proposals, also that many stand-in proposals (segjax.data.proposals) around the row's boxes, drawn from a
  seed of the image id: the same per image in every epoch, in the image's coordinates after the augmentation. With
  box_transform, also "box_transform" (scale, offset x, offset y, flipped): the map of source boxes to the row's,
  for proposals read from files (segjax.data.proposal_files)."""
  out_h, out_w = image_size
  m = max_instances
  image = example["image"]
  height, width = tf.shape(image)[0], tf.shape(image)[1]
  objects = example["objects"]
  n_all = tf.shape(objects["label"])[0]
  n = tf.minimum(n_all, m)
  boxes = tf.reshape(objects["bbox"][:n], [-1, 4])
  hw = tf.cast(tf.stack([height, width]), tf.float32)
  scale = tf.reduce_min(tf.constant([out_h, out_w], tf.float32) / hw)
  u = tf.random.stateless_uniform([8], seed=seed)
  offset, flipped = tf.zeros([2]), tf.constant(False)
  if train:
    lo, hi = scale_range
    scale *= lo + (hi - lo) * u[0]
    offset = translate * (2.0 * u[1:3] - 1.0) * tf.constant([out_w, out_h], tf.float32)  # (x, y)
    image = _warp(tf.cast(image, tf.float32), scale, offset, [out_h, out_w])
    boxes = boxes * scale + tf.concat([offset, offset], 0)
    if flip:
      flipped = u[3] < 0.5
      image = tf.cond(flipped, lambda: image[:, ::-1], lambda: image)
      boxes = tf.where(flipped, tf.stack([out_w - boxes[:, 2], boxes[:, 1], out_w - boxes[:, 0], boxes[:, 3]], 1),
                       boxes)
    hsv = tf.image.rgb_to_hsv(tf.clip_by_value(image / 255.0, 0.0, 1.0))
    factors = tf.stack([1.0, _rand_scale(saturation, u[4], u[5]), _rand_scale(exposure, u[6], u[7])])
    image = tf.image.hsv_to_rgb(tf.clip_by_value(hsv * factors, 0.0, 1.0))
  else:
    size = tf.maximum(tf.cast(tf.round(hw * scale), tf.int32), 1)
    image = tf.cast(image, tf.float32)
    image = tf.cond(tf.reduce_all(size == tf.shape(image)[:2]), lambda: image,
                    lambda: tf.image.resize(image, size, antialias=True))
    image = tf.image.pad_to_bounding_box(image[:out_h, :out_w], 0, 0, out_h, out_w) / 255.0
    boxes = boxes * scale
  boxes = tf.clip_by_value(boxes, 0.0, tf.constant([out_w, out_h, out_w, out_h], tf.float32))
  difficult = objects["difficult"][:n]
  keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]) & valid
  if train:
    keep &= ~difficult
  pad = [[0, m - n]]
  instance_valid = tf.pad(keep, pad)
  image = augment.zero_unless(valid, image)
  image.set_shape([out_h, out_w, 3])
  boxes = tf.pad(tf.where(keep[:, None], boxes, 0.0), [[0, m - n], [0, 0]])
  boxes.set_shape([m, 4])
  extra = {}
  if box_transform:
    extra["box_transform"] = tf.concat([[scale], offset, [tf.cast(flipped, tf.float32)]], 0)
  if num_proposals:
    image_seed = tf.stack([tf.cast(example["image_id"], tf.int64), tf.constant(0x5EED, tf.int64)])
    proposals = stand_in_proposals(boxes, instance_valid, (out_h, out_w), num_proposals, image_seed)
    extra = {"proposals": proposals, "proposal_valid": tf.fill([num_proposals], valid)}
  return {
      **extra,
      "image": image,
      "boxes": boxes,
      "classes": tf.where(instance_valid, tf.pad(tf.cast(objects["label"][:n], tf.int32), pad), 0),
      "difficult": tf.pad(difficult, pad) & instance_valid,
      "instance_valid": instance_valid,
      "image_id": tf.where(valid, tf.cast(example["image_id"], tf.int32), -1),
      "valid_image": valid,
      "orig_size": tf.stack([height, width]),
      "scale": scale,
      "num_dropped": tf.where(valid, n_all - n, 0),
  }
