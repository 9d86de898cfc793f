"""Stand-in region proposals for Fast R-CNN (segjax.models.fast_rcnn) where no proposal files exist.

Fast R-CNN (Girshick 2015) reads selective search's ~2000 boxes per image. This stand-in, for the synthetic data set
and tests only, gives `count` boxes: the first half copies of the image's valid ground-truth boxes (drawn uniformly)
with their centres shifted by N(0, s) times the box's width and height and their sides scaled by exp(N(0, s)), s
drawn per box from JITTER_SCALES (near copies, overlaps, background near objects); the rest boxes anywhere, centre
uniform in the image and sides log-uniform in [MIN_SIDE, MAX_SIDE] of the image's. An image without valid boxes gets
random boxes only. Boxes are clipped to the image and at least one pixel wide. Drawn from the stateless `seed`: an
image with the same seed gets the same proposals (relative to its boxes) in every epoch. Built from the ground truth,
they make a detector's scores on the evaluation split optimistic: not comparable with selective search's numbers.
"""
from segjax.data.tf_env import tf

JITTER_SCALES = (0.05, 0.15, 0.4)
MIN_SIDE, MAX_SIDE = 0.05, 0.8


def stand_in_proposals(boxes, valid, image_hw, count, seed):
  """boxes [M, 4] (x1, y1, x2, y2) with valid [M], image_hw (h, w), seed [2] int -> proposals [count, 4] float32."""
  h, w = tf.cast(image_hw[0], tf.float32), tf.cast(image_hw[1], tf.float32)
  boxes = tf.cast(boxes, tf.float32)
  seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 6)
  jittered = count // 2
  # Random boxes: centre uniform, sides log-uniform.
  centre = tf.random.stateless_uniform([count, 2], seeds[0]) * tf.stack([w, h])
  log_side = tf.random.stateless_uniform([count, 2], seeds[1], tf.math.log(MIN_SIDE), tf.math.log(MAX_SIDE))
  size = tf.exp(log_side) * tf.stack([w, h])
  random_boxes = tf.concat([centre - size / 2, centre + size / 2], 1)
  # Jittered ground truth: a valid box (uniform over them), centre and sides perturbed at a per-box scale.
  logits = tf.where(valid, 0.0, -1e9)[None]
  pick = tf.random.stateless_categorical(logits, jittered, seeds[2])[0]
  source = tf.gather(boxes, pick)
  scale = tf.gather(tf.constant(JITTER_SCALES), tf.random.stateless_uniform([jittered], seeds[3], 0,
                                                                            len(JITTER_SCALES), tf.int32))[:, None]
  wh = source[:, 2:] - source[:, :2]
  centre = (source[:, :2] + source[:, 2:]) / 2 + tf.random.stateless_normal([jittered, 2], seeds[4]) * scale * wh
  size = wh * tf.exp(tf.random.stateless_normal([jittered, 2], seeds[5]) * scale)
  jitter_boxes = tf.concat([centre - size / 2, centre + size / 2], 1)
  jitter_boxes = tf.cond(tf.reduce_any(valid), lambda: jitter_boxes, lambda: random_boxes[count - jittered:])
  proposals = tf.concat([jitter_boxes, random_boxes[jittered:]], 0)
  proposals = tf.clip_by_value(proposals, 0.0, tf.stack([w, h, w, h]))
  low = tf.minimum(proposals[:, :2], tf.stack([w, h]) - 1.0)
  return tf.concat([low, tf.maximum(proposals[:, 2:], low + 1.0)], 1)
