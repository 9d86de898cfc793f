"""Semantic metrics against a float64 NumPy reference written from the FCN paper's definitions."""
import jax
import numpy as np
import pytest

from segjax.evaluation.semantic import SemanticEvaluator, confusion_matrix, semantic_metrics


def reference_metrics(labels, predictions, num_classes):
  """Plain loops over pixels and classes; classes with zero union are left out of the means."""
  n = np.zeros((num_classes, num_classes), np.float64)
  for gt, pred in zip(labels.ravel(), predictions.ravel()):
    if gt != 255:
      n[gt, pred] += 1
  ious, accs, fw = [], [], 0.0
  for i in range(num_classes):
    t_i = n[i].sum()
    union = t_i + n[:, i].sum() - n[i, i]
    if union > 0:
      ious.append(n[i, i] / union)
      fw += t_i * n[i, i] / union
    if t_i > 0:
      accs.append(n[i, i] / t_i)
  return n, {"mIoU": np.mean(ious), "pixel_acc": np.trace(n) / n.sum(), "mean_acc": np.mean(accs),
             "fwIoU": fw / n.sum()}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_float64_reference(seed):
  rng = np.random.default_rng(seed)
  num_classes = 6
  labels = rng.integers(0, num_classes, (3, 17, 19))
  labels[rng.random(labels.shape) < 0.1] = 255
  labels[labels == 4] = 5  # Class 4 absent from the ground truth: counted only where it is predicted.
  predictions = np.where(rng.random(labels.shape) < 0.6, np.clip(labels, 0, num_classes - 1),
                         rng.integers(0, num_classes, labels.shape))
  predictions[predictions == 3] = 2  # Class 3 never predicted.
  expected_cm, expected = reference_metrics(labels, predictions, num_classes)
  cm = jax.jit(confusion_matrix, static_argnums=2)(labels, predictions, num_classes)
  np.testing.assert_array_equal(np.asarray(cm), expected_cm)
  metrics = semantic_metrics(cm)
  for name, value in expected.items():
    assert metrics[name] == pytest.approx(value, abs=1e-12), name


def test_evaluator_skips_padded_images_and_accumulates():
  rng = np.random.default_rng(3)
  labels = rng.integers(0, 4, (4, 8, 8))
  predictions = rng.integers(0, 4, (4, 8, 8))
  valid = np.array([True, True, True, False])
  evaluator = SemanticEvaluator(4)
  for rows in (slice(0, 2), slice(2, 4)):
    batch = {"semantic": labels[rows], "valid_image": valid[rows]}
    evaluator.update(evaluator.device_stats({"labels": predictions[rows]}, batch))
  expected_cm, expected = reference_metrics(labels[:3], predictions[:3], 4)
  np.testing.assert_array_equal(evaluator.confusion, expected_cm)
  assert evaluator.result()["mIoU"] == pytest.approx(expected["mIoU"], abs=1e-12)


def test_shape_mismatch_is_a_clear_error():
  with pytest.raises(ValueError, match="differ in shape"):
    confusion_matrix(np.zeros((2, 3), int), np.zeros((3, 2), int), 4)
