"""The Recurrent Instance Segmentation loss (Romera-Paredes & Torr 2016, Eq. 3) against a float64 NumPy version
that enumerates every assignment of the ground truth to the predictions."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np

from segjax.ops.set_losses import recurrent_instance_loss, soft_iou


def _soft_iou(a, b):
  inter = (a * b).sum()
  return inter / (a.sum() + b.sum() - inter)


def _reference_loss(probs, logits, targets, n, bce_weight, extra):
  """min over injective maps of the n targets into the first n + extra predictions, enumerated."""
  steps = len(probs)
  candidates = min(n + extra, steps)
  best = 0.0 if n == 0 else max(
      sum(_soft_iou(probs[p], targets[t]) for t, p in enumerate(perm))
      for perm in itertools.permutations(range(candidates), n))
  s = 1 / (1 + np.exp(-logits))
  labels = (np.arange(steps) < n).astype(np.float64)
  bce = -(labels * np.log(s) + (1 - labels) * np.log(1 - s))
  return -best + bce_weight * bce[:candidates].sum()


def test_loss_equals_enumeration_over_matchings():
  rng = np.random.default_rng(0)
  steps, slots, pixels = 6, 4, 30
  traces = []

  def traced_loss(*args, **kwargs):
    traces.append(1)  # runs once per trace, so once per compile
    return recurrent_instance_loss(*args, **kwargs)

  loss_fn = jax.jit(traced_loss, static_argnames=("extra_steps",))
  for trial in range(24):
    n = trial % (slots + 1)  # 0 (an image with no instance) .. 4
    probs = rng.random((steps, pixels))
    logits = rng.normal(size=steps) * 2
    targets = np.zeros((slots, pixels))
    targets[:n] = rng.random((n, pixels)) < 0.4
    valid = np.arange(slots) < n
    loss, _ = loss_fn(jnp.asarray(probs, jnp.float32), jnp.asarray(logits, jnp.float32),
                      jnp.asarray(targets, jnp.float32), jnp.asarray(valid), 0.7, extra_steps=2)
    np.testing.assert_allclose(float(loss), _reference_loss(probs, logits, targets, n, 0.7, 2), rtol=1e-5,
                               atol=1e-5)
  assert len(traces) == 1  # one compile for 0..4 instances


def test_soft_iou_of_binary_masks_is_iou():
  a = np.array([[1, 1, 0, 0], [0, 0, 0, 0]], np.float32)
  b = np.array([[1, 0, 1, 0]], np.float32)
  np.testing.assert_allclose(np.asarray(soft_iou(a, b)), [[1 / 3], [0.0]], atol=1e-6)


def test_gradient_flows_to_matched_masks_and_scores_only():
  probs = jnp.array([[0.9, 0.1, 0.0], [0.2, 0.2, 0.2], [0.1, 0.8, 0.9]], jnp.float32)
  targets = jnp.array([[0.0, 1.0, 1.0]], jnp.float32)
  grads = jax.grad(lambda p: recurrent_instance_loss(p, jnp.zeros(3), targets, jnp.array([True]),
                                                     extra_steps=1)[0])(probs)
  # n = 1 and one extra step: only steps 0 and 1 are candidates, so step 2 (the best IoU) gets no gradient.
  assert np.abs(np.asarray(grads[2])).sum() == 0
  assert np.abs(np.asarray(grads[:2])).sum() > 0
