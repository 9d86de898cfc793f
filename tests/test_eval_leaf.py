"""segjax.evaluation.leaf against a NumPy port of the CVPPP LSC evaluation program.

The reference functions below port BestDice, DiffFGLabels, FGBGDice and Dice of the challenge's `evaluate.py` as
copied in github.com/rexlagrange/cvppp_leaf_seg, utils/evaluate_LSC.py, commit
91b24e33f53f582930d556dac9c435c86d9b3420 (the CodaLab CVPPP 2017 scoring program, loops over label pairs), and SBD
as Scharr et al. 2016 define it: min(BestDice(a, b), BestDice(b, a)).
"""
import numpy as np
import pytest

from segjax.evaluation import leaf


def ref_dice(a, b, i, j):
  in_mask, gt_mask = a == i, b == j
  total = in_mask.sum() + gt_mask.sum()
  return 2 * (in_mask & gt_mask).sum() / total if total > 1e-8 else 0


def ref_best_dice(a, b):
  if a.max() == a.min():
    return 0
  score = 0
  for i in range(a.min() + 1, a.max() + 1):
    s_max = 0
    for j in range(b.min() + 1, b.max() + 1):
      s_max = max(s_max, ref_dice(a, b, i, j))
    score += s_max
  return score / (a.max() - a.min())


def ref_diff_fg(a, b):
  return (int(a.max()) - int(a.min())) - (int(b.max()) - int(b.min()))


def ref_fgbg(a, b):
  return ref_dice((a != a.min()).astype(int), (b != b.min()).astype(int), 1, 1)


def random_labels(rng, n, shape=(20, 24)):
  labels = np.zeros(shape, np.int64)
  for k in range(1, n + 1):
    y, x = rng.integers(0, shape[0] - 4), rng.integers(0, shape[1] - 4)
    labels[y:y + rng.integers(2, 9), x:x + rng.integers(2, 9)] = k
  return labels


@pytest.mark.parametrize("seed", range(6))
def test_sbd_and_dic_match_the_lsc_program(seed):
  rng = np.random.default_rng(seed)
  truth = random_labels(rng, rng.integers(1, 8))
  prediction = random_labels(rng, rng.integers(0, 8))
  if seed == 5:  # labels with a gap (an object covered by later ones keeps its number)
    prediction[prediction == 1] = 0
  for a, b in ((prediction, truth), (truth, prediction)):
    np.testing.assert_allclose(leaf.best_dice(a, b), ref_best_dice(a, b), rtol=1e-12)
  np.testing.assert_allclose(leaf.symmetric_best_dice(prediction, truth),
                             min(ref_best_dice(prediction, truth), ref_best_dice(truth, prediction)), rtol=1e-12)
  assert leaf.difference_in_count(prediction, truth) == ref_diff_fg(prediction, truth)
  metrics = leaf.leaf_metrics([(prediction, truth)])
  np.testing.assert_allclose(metrics["FBD"], ref_fgbg(prediction, truth), rtol=1e-12)
  assert metrics["abs_DiC"] == abs(ref_diff_fg(prediction, truth))


def test_edge_cases():
  truth = random_labels(np.random.default_rng(0), 4)
  empty = np.zeros_like(truth)
  assert leaf.symmetric_best_dice(empty, truth) == 0 == ref_best_dice(empty, truth)
  assert leaf.symmetric_best_dice(truth, truth) == 1.0
  assert leaf.difference_in_count(empty, truth) == -int(truth.max())
  shifted = truth + 7  # the lowest label is the background, whatever its value
  assert leaf.symmetric_best_dice(shifted, truth) == 1.0 and leaf.difference_in_count(shifted, truth) == 0
  with pytest.raises(ValueError, match="differ in size"):
    leaf.best_dice(truth[:5], truth)


def test_label_image_paints_by_score():
  masks = np.zeros((4, 6, 6), np.float32)
  masks[0, :3] = 0.9  # low score, overlapped by mask 1
  masks[1, 1:4] = 0.8
  masks[2, 5] = 0.2  # below the mask threshold: no object
  masks[3, 4] = 0.7  # invalid
  labels = leaf.label_image(masks, np.array([0.3, 0.9, 0.8, 0.99]), np.array([True, True, True, False]))
  expected = np.zeros((6, 6), np.int32)
  expected[0] = 2
  expected[1:4] = 1
  np.testing.assert_array_equal(labels, expected)
