"""Soft-NMS against Algorithm 1 of Bodla et al. (2017) written as its loop in float64 NumPy."""
import numpy as np
import pytest

from segjax.ops.soft_nms import soft_nms_boxes, soft_nms_masks


def _iou(a, b):
  x1, y1 = np.maximum(a[0], b[0]), np.maximum(a[1], b[1])
  x2, y2 = np.minimum(a[2], b[2]), np.minimum(a[3], b[3])
  inter = max(x2 - x1, 0) * max(y2 - y1, 0)
  return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _algorithm_1(boxes, scores, method, sigma, nt):
  """B, S -> D with the scores each detection had when it was moved to D."""
  remaining, s, final = list(range(len(boxes))), scores.astype(np.float64).copy(), np.zeros(len(boxes))
  while remaining:
    m = max(remaining, key=lambda i: (s[i], -i))
    remaining.remove(m)
    final[m] = s[m]
    for i in remaining:
      overlap = _iou(boxes[m], boxes[i])
      if method == "gaussian":
        s[i] *= np.exp(-overlap**2 / sigma)
      elif overlap >= nt:
        s[i] *= (1 - overlap) if method == "linear" else 0.0
  return final


@pytest.mark.parametrize("method", ["gaussian", "linear", "hard"])
def test_equals_algorithm_1(method):
  rng = np.random.default_rng(0)
  centres = rng.uniform(10, 50, size=(30, 2))
  sizes = rng.uniform(8, 20, size=(30, 2))
  boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], 1)
  scores = rng.random(30)
  decayed, order = soft_nms_boxes(boxes.astype(np.float32), scores.astype(np.float32), method=method, sigma=0.5,
                                  iou_threshold=0.3)
  np.testing.assert_allclose(np.asarray(decayed), _algorithm_1(boxes, scores, method, 0.5, 0.3), atol=1e-5)
  assert sorted(np.asarray(order).tolist()) == list(range(30))


def test_masks_and_labels():
  masks = np.zeros((3, 8, 8), bool)
  masks[0, :4] = masks[1, :5] = masks[2, :4] = True
  scores = np.array([0.9, 0.8, 0.7], np.float32)
  decayed, _ = soft_nms_masks(masks, scores, labels=np.array([1, 1, 2]), method="hard", iou_threshold=0.5)
  # Mask 1 overlaps mask 0 (IoU 0.8) and is dropped; mask 2 is another class and keeps its score.
  np.testing.assert_allclose(np.asarray(decayed), [0.9, 0.0, 0.7])
