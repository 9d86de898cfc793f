"""Iterative Instance Segmentation (Li, Hariharan & Malik, CVPR 2016) on segjax's Mask R-CNN.

The model f reads an instance x and the previous labelling of it, p, and predicts a new labelling; it is applied
repeatedly, so that it corrects its own earlier output (the survey deck's Algorithms 1 and 2):
  Test (Alg. 2):  y^(0) = (1/2 ... 1/2); y^(t) = f(x, y^(t-1)) for t = 1..M; the result is y^(M).
  Train (Alg. 1): p^(0) = 1/2; stage t trains f on the pairs ((x, p^(i)), y) of every earlier stage i < t, then
                  predicts p^(t) = f(x, p^(t-1)).

Here an instance is a detection of segjax's Mask R-CNN (the paper: boxes of Fast R-CNN), x its hypercolumn (Hariharan
et al. 2015, the paper's f): RoIAlign 14 x 14 of the box from every FPN level P2..P5, concatenated along channels,
and the labelling p is the previous mask probability of the box's class on the same 14 x 14 grid (the mask head's
28 x 28 output averaged over 2 x 2 cells), one more input channel. f is Mask R-CNN's mask head on that input.
Inference runs Algorithm 2 with M = `test_iterations`.

Training, with static shapes and one program: Algorithm 1's stages become one objective, its last stage's, whose
training set is the union over i < N (N = `train_stages`): each positive RoI of each step gets p^(i), i drawn
uniformly from 0..N-1, computed by i applications of the current f without gradient from 1/2, and the loss is
Mask R-CNN's on f(x, p^(i)). Departures, stated: the paper trains the stages one after the other and keeps each
stage's predictions fixed (made with that stage's parameters), and feeds the labelling as an image channel of its
network, where this model feeds it to the RoI head; N and M default to 3 here, not checked against the paper.
"""
import jax
import jax.numpy as jnp
import ml_collections

from segjax.models import mask_rcnn, roi_heads
from segjax.ops.masks import roi_mask_targets

TASK = mask_rcnn.TASK
BATCH_KEYS = mask_rcnn.BATCH_KEYS
FORWARD_KEYS = mask_rcnn.FORWARD_KEYS
SIZE_DIVISIBILITY = mask_rcnn.SIZE_DIVISIBILITY
INFERENCE_KEYS = mask_rcnn.INFERENCE_KEYS | {"test_iterations"}

INITIAL_LABELLING = 0.5  # y^(0) = p^(0): every pixel 1/2
_FPN_SCALES = (1 / 4, 1 / 8, 1 / 16, 1 / 32)


def model_config() -> ml_collections.ConfigDict:
  """Mask R-CNN's FPN defaults plus train_stages N (the p^(i), i < N, training sees) and test_iterations M."""
  config = mask_rcnn.model_config("fpn")
  config.name = "iterative_instance"
  config.update({"train_stages": 3, "test_iterations": 3})
  return config


def downsample(probabilities):
  """The mask head's [R, 28, 28] probabilities -> the labelling channel [R, 14, 14, 1]: 2 x 2 averages."""
  r, h, w = probabilities.shape
  return probabilities.reshape(r, h // 2, 2, w // 2, 2).mean((2, 4))[..., None]


class IterativeInstance(mask_rcnn.MaskRCNN):
  """Mask R-CNN's module whose mask head is f(hypercolumn, previous labelling), applied iteratively."""

  def _hypercolumns(self, k, levels, boxes):
    """RoIAlign 14 x 14 of the first k boxes [N, S, 4] from each of P2..P5, concatenated: [N * k, 14, 14, 4C]."""
    return jnp.concatenate([self._pooled([f], (s,), boxes[:, :k], 14) for f, s in zip(levels[:4], _FPN_SCALES)],
                           -1)

  def _labelling_step(self, head, columns, labelling, labels):
    """One application of f: mask logits [R, 28, 28] of the classes labels [R] from hypercolumns [R, 14, 14, C]
    and the previous labelling [R, 14, 14, 1]."""
    logits = head(jnp.concatenate([columns, labelling.astype(columns.dtype)], -1))
    return jnp.take_along_axis(logits, labels[:, None, None, None], -1)[..., 0]

  def _head(self):
    c = self.config
    return roi_heads.MaskHead(self.num_classes, c.mask_head_channels, num_convs=4, dtype=jnp.dtype(c.dtype),
                              name="mask_head")

  def _mask_logits(self, k, levels, boxes, labels, res5):
    """Algorithm 2 on the first k boxes [N, S, 4] of classes labels [N, S]: y^(M)'s logits [N, k, 28, 28]."""
    del res5
    n = boxes.shape[0]
    head, columns, labels = self._head(), self._hypercolumns(k, levels, boxes), labels[:, :k].reshape(-1)
    labelling = jnp.full((*columns.shape[:3], 1), INITIAL_LABELLING, jnp.float32)
    for _ in range(self.config.test_iterations):
      logits = self._labelling_step(head, columns, labelling, labels)
      labelling = downsample(jax.nn.sigmoid(logits))
    return logits.reshape(n, k, *logits.shape[1:])

  def _stage_logits(self, k, levels, boxes, labels, res5, stages):
    """Training: logits [N, k, 28, 28] of f(x, p^(i)) for the first k boxes, i = stages [N, S] per RoI, p^(i)
    made by i applications of f without gradient."""
    del res5
    n = boxes.shape[0]
    head, columns, labels = self._head(), self._hypercolumns(k, levels, boxes), labels[:, :k].reshape(-1)
    stages = stages[:, :k].reshape(-1)
    labelling = jnp.full((*columns.shape[:3], 1), INITIAL_LABELLING, jnp.float32)
    previous = labelling
    for i in range(1, self.config.train_stages):
      logits = self._labelling_step(head, columns, labelling, labels)
      labelling = jax.lax.stop_gradient(downsample(jax.nn.sigmoid(logits)))
      previous = jnp.where((stages == i)[:, None, None, None], labelling, previous)
    logits = self._labelling_step(head, columns, previous, labels)
    return logits.reshape(n, k, *logits.shape[1:])

  def _mask_train_outputs(self, targets, levels, rois, labels, matched, positive, res5):
    """Mask R-CNN's mask outputs, with each positive's logits those of f(x, p^(i)), i uniform in 0..N-1."""
    stages = jax.random.randint(self.make_rng("sampling"), positive.shape, 0, self.config.train_stages)
    logits = self._on_valid_chunks(IterativeInstance._stage_logits, positive, levels, rois, labels, res5, stages)
    resolution = logits.shape[2]
    mask_targets = jax.vmap(lambda m, r, i: roi_mask_targets(m, r, i, resolution))(
        targets["masks"], rois, matched)
    return {"mask_logits": logits, "mask_targets": mask_targets, "mask_valid": positive, "mask_stage": stages}


def _config(overrides) -> ml_collections.FrozenConfigDict:
  config = mask_rcnn._config(overrides, model_config())  # pylint: disable=protected-access
  if config.backbone != "fpn" or not config.mask:
    raise ValueError("config.model.backbone: iterative_instance reads hypercolumns from the FPN levels and predicts "
                     f"masks; got backbone {config.backbone!r}, mask {config.mask}")
  for key in ("train_stages", "test_iterations"):
    if config[key] < 1:
      raise ValueError(f"config.model.{key}: must be >= 1; got {config[key]}")
  return config


def build(config, info):
  config = _config(config)
  num_classes, label_map = mask_rcnn.num_classes_and_label_map(config, info)
  return IterativeInstance(num_classes=num_classes, config=config, label_map=label_map)


loss = mask_rcnn.loss  # Mask R-CNN's five losses; loss_mask on f(x, p^(i))
predict = mask_rcnn.predict
