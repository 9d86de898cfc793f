"""Eq. 21 of Recurrent Attention (Ren & Zemel, CVPR 2017) against a float64 NumPy version written from the
equations, whose matchings are enumerated over every assignment of the n targets to distinct steps among the first
n: the authors' matching (renmengye/rec-attend-public, modellib.py f_segm_match at
36deeaca095efedf9ba0b3be78cdc2c51eac41a5) masks the IoU and the matching by the ground-truth score sequence on the
steps' axis too."""
import itertools

import numpy as np
import pytest

from segjax.ops.set_losses import monotonic_score_bce, recurrent_attention_loss


def _soft_iou(p, y):
  inter = p @ y.T
  return inter / np.maximum(p.sum(1)[:, None] + y.sum(1)[None, :] - inter, 1e-6)


def _best(score, n, pick):
  """The assignment of targets 0..n-1 to distinct steps 0..n-1 that `pick`s (max or min) the summed score [T, n]."""
  options = [(sum(score[perm[j], j] for j in range(n)), perm) for perm in itertools.permutations(range(n), n)]
  return pick(options, key=lambda o: o[0])[1]


def _reference(mask_probs, box_probs, box_params, score_logits, masks, boxes, params, valid, wb, wc, ws):
  steps = len(score_logits)
  idx = np.flatnonzero(valid)
  n = len(idx)
  count = max(n, 1)
  mask_iou = _soft_iou(mask_probs, masks[idx])
  mask_perm = _best(mask_iou, n, max)
  box_iou = _soft_iou(box_probs, boxes[idx])
  coord = np.square(box_params[:, None, :] - params[idx][None, :, :]).sum(-1)
  box_perm = _best(-box_iou + wc * coord, n, min)
  l_y = -sum(mask_iou[mask_perm[j], j] for j in range(n)) / count
  l_iou = -sum(box_iou[box_perm[j], j] for j in range(n)) / count
  l_coord = sum(coord[box_perm[j], j] for j in range(n)) / count
  labels = (np.arange(steps) < n).astype(np.float64)
  s = 1 / (1 + np.exp(-score_logits))
  s_min = np.minimum.accumulate(s)
  s_max = np.maximum.accumulate(s[::-1])[::-1]
  l_s = np.mean(-(labels * np.log(s_min) + (1 - labels) * np.log(1 - s_max)))
  terms = {"mask_iou": l_y, "box_iou": l_iou, "box_coord": l_coord, "score": l_s}
  return l_y + wb * (l_iou + wc * l_coord) + ws * l_s, terms


@pytest.mark.parametrize("valid", [[False, False, False], [True, False, False], [False, True, True],
                                   [True, True, True]])
def test_equals_numpy_with_brute_force_matching(valid):
  rng = np.random.default_rng(sum(valid) + 7 * valid[0])
  steps, slots, pixels = 4, 3, 30
  mask_probs = rng.uniform(size=(steps, pixels))
  box_probs = rng.uniform(size=(steps, pixels))
  box_params = rng.normal(size=(steps, 4))
  score_logits = rng.normal(scale=2.0, size=steps)
  masks = (rng.uniform(size=(slots, pixels)) < 0.4).astype(np.float64)
  boxes = (rng.uniform(size=(slots, pixels)) < 0.5).astype(np.float64)
  params = rng.normal(size=(slots, 4))
  valid = np.array(valid)
  weights = (0.7, 1.3, 0.4)
  args = (mask_probs, box_probs, box_params, score_logits, masks, boxes, params)
  total, terms = recurrent_attention_loss(*[np.float32(a) for a in args], valid, *weights)
  want_total, want_terms = _reference(*args, valid, *weights)
  for key, want in want_terms.items():
    np.testing.assert_allclose(float(terms[key]), want, rtol=1e-5, atol=1e-6, err_msg=key)
  np.testing.assert_allclose(float(total), want_total, rtol=1e-5, atol=1e-6)
  if not valid.any():
    assert want_terms["mask_iou"] == 0 and want_terms["box_iou"] == 0 and want_terms["score"] > 0


def test_an_early_step_keeps_its_instance_when_a_later_step_fits_it_better():
  # One target; step 2's mask and box are the target's, step 0's are poor. Only step 0 may take the one target, so
  # its IoUs are the loss's and its score is the positive one.
  target = np.array([[1, 1, 1, 0, 0, 0]], np.float32)
  poor = np.array([0.2, 0.1, 0.0, 0.9, 0.9, 0.9], np.float32)
  probs = np.stack([poor, poor, target[0]])
  params = np.zeros((3, 4), np.float32)
  logits = np.zeros(3, np.float32)
  valid = np.array([True])
  _, terms = recurrent_attention_loss(probs, probs, params, logits, target, target, np.zeros((1, 4), np.float32),
                                      valid)
  poor_iou = 0.3 / (poor.sum() + 3 - 0.3)
  np.testing.assert_allclose(float(terms["mask_iou"]), -poor_iou, rtol=1e-5)
  np.testing.assert_allclose(float(terms["box_iou"]), -poor_iou, rtol=1e-5)
  # s* = (1, 0, 0): step 0 costs -log s_0, steps 1 and 2 -log(1 - max of the later s) with s = 1/2 everywhere.
  np.testing.assert_allclose(float(terms["score"]), np.log(2.0), rtol=1e-5)


def test_monotonic_score_loss_penalises_a_confident_step_after_an_unconfident_one():
  # Step 1 (label 1) is confident, but step 0 before it is not: min_{t' <= 1} s_t' is step 0's, so step 1 costs
  # as much as step 0 does.
  logits = np.array([-2.0, 3.0, -4.0], np.float32)
  bce = np.asarray(monotonic_score_bce(logits, np.array([1.0, 1.0, 0.0], np.float32)))
  np.testing.assert_allclose(bce[1], bce[0], rtol=1e-6)
  np.testing.assert_allclose(bce[0], np.log1p(np.exp(2.0)), rtol=1e-6)
  np.testing.assert_allclose(bce[2], np.log1p(np.exp(-4.0)), rtol=1e-5)
