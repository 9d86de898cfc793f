"""segjax.ops.matching against torchvision's Matcher and BalancedPositiveNegativeSampler semantics."""
import functools

import jax
import numpy as np
import pytest
from scipy import stats

from segjax.ops import matching
from references import optional, requires_torch, torch

det_utils = optional("torchvision.models.detection._utils")


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def match_jit(iou, gt_valid, high, low, allow_low_quality):
  return matching.match_boxes(iou, gt_valid, high, low, allow_low_quality)


def quantised_iou(rng, m, n):
  """[m, n] float32 qualities on a coarse grid, so that row maxima and column maxima have ties."""
  return (rng.integers(0, 21, (m, n)) / 20).astype(np.float32)


@requires_torch
@pytest.mark.parametrize("allow_low_quality", [False, True])
@pytest.mark.parametrize("high,low", [(0.7, 0.3), (0.5, 0.5)])
def test_match_boxes_equals_torchvision_matcher_with_padded_gt(allow_low_quality, high, low):
  rng = np.random.default_rng(0)
  iou = quantised_iou(rng, 6, 50)
  iou[1] *= 0.4  # a ground truth whose best match is low quality
  ref = det_utils.Matcher(high, low, allow_low_quality)(torch.tensor(iou)).numpy()
  # Two padded rows that would win every column if they were valid.
  padded = np.concatenate([iou, np.ones((2, 50), np.float32)])
  valid = np.array([True] * 6 + [False] * 2)
  ours = np.asarray(match_jit(padded, valid, high, low, allow_low_quality))
  np.testing.assert_array_equal(ours, ref)
  assert {-1, -2}.issuperset(set(ours[ours < 0])) and (ours < 6).all()


def test_match_boxes_without_valid_gt_is_all_below_low():
  iou = np.full((3, 8), 0.9, np.float32)
  out = np.asarray(match_jit(iou, np.zeros(3, bool), 0.7, 0.3, True))
  np.testing.assert_array_equal(out, np.full(8, -1))


@requires_torch
def test_match_boxes_compiles_once_and_rejects_bad_arguments():
  traces = []

  @jax.jit
  def f(iou, valid):
    traces.append(1)
    return matching.match_boxes(iou, valid, 0.7, 0.3, True)

  rng = np.random.default_rng(1)
  for _ in range(3):
    iou = quantised_iou(rng, 4, 20)
    ref = det_utils.Matcher(0.7, 0.3, True)(torch.tensor(iou)).numpy()
    np.testing.assert_array_equal(np.asarray(f(iou, np.ones(4, bool))), ref)
  assert len(traces) == 1
  with pytest.raises(ValueError, match="low_threshold"):
    matching.match_boxes(np.zeros((2, 3)), np.ones(2, bool), 0.3, 0.7, False)
  with pytest.raises(ValueError, match="gt_valid must have shape"):
    matching.match_boxes(np.zeros((2, 3)), np.ones(3, bool), 0.7, 0.3, False)


sample_jit = jax.jit(matching.sample_balanced, static_argnums=(2, 3))


@pytest.mark.parametrize("num_pos,num_neg", [(3, 200), (100, 200), (100, 10), (0, 5)])
def test_sample_balanced_counts_and_eligibility(num_pos, num_neg):
  rng = np.random.default_rng(num_pos + num_neg)
  labels = rng.permutation(np.concatenate([  # one length for all cases: one compile
      rng.integers(1, 4, num_pos), np.zeros(num_neg, int), -np.ones(320 - num_pos - num_neg, int)]))
  labels = labels.astype(np.int32)
  for seed in range(3):
    pos, neg = map(np.asarray, sample_jit(jax.random.key(seed), labels, 64, 0.25))
    want_pos = min(num_pos, 16)  # torchvision: int(64 * 0.25), capped by the positives available
    want_neg = min(num_neg, 64 - want_pos)
    assert pos.sum() == want_pos and neg.sum() == want_neg
    assert (labels[pos] >= 1).all() and (labels[neg] == 0).all()


def test_sample_balanced_is_uniform_and_compiles_once():
  labels = np.array([1] * 10 + [0] * 30 + [-1] * 8, np.int32)
  keys = jax.random.split(jax.random.key(0), 3000)
  pos, neg = map(np.asarray, jax.jit(jax.vmap(lambda k: matching.sample_balanced(k, labels, 16, 0.25)))(keys))
  assert (pos.sum(1) == 4).all() and (neg.sum(1) == 12).all()
  # Each positive is drawn with probability 4/10 and each negative with 12/30: chi-square vs uniform.
  for counts in (pos[:, :10].sum(0), neg[:, 10:40].sum(0)):
    assert stats.chisquare(counts).pvalue > 1e-3
  assert not pos[:, 10:].any() and not neg[:, :10].any() and not neg[:, 40:].any()
  # Different keys give different draws; new values of the same shapes do not compile again.
  traces = []

  @jax.jit
  def f(key, labels):
    traces.append(1)
    return matching.sample_balanced(key, labels, 16, 0.25)[0]

  a, b = f(jax.random.key(1), labels), f(jax.random.key(2), labels[::-1].copy())
  assert len(traces) == 1
  assert not np.array_equal(np.asarray(a), np.asarray(b)[::-1])


def test_sample_balanced_rejects_bad_arguments():
  with pytest.raises(ValueError, match="positive_fraction"):
    matching.sample_balanced(jax.random.key(0), np.zeros(4, np.int32), 2, 1.5)
  with pytest.raises(ValueError, match=r"labels must have shape \[N\]"):
    matching.sample_balanced(jax.random.key(0), np.zeros((2, 2), np.int32), 2, 0.5)
