"""Max and average aggregation of RoIPool, RoIWarp and RoIAlign (the five rows of Mask R-CNN's Table 2c) against
float64 NumPy versions written from the pooling rules.

The sampling rules follow torchvision's CPU kernels (pytorch/vision, torchvision/csrc/ops/cpu/roi_align_kernel.cpp
`bilinear_interpolate` and roi_pool_kernel.cpp, at tag v0.20.0): the averages there are the references of the
existing parity tests; only the reduction over a bin changes here.
"""
import math

import jax
import numpy as np
import pytest

from segjax.ops.roi import multilevel_roi_align, roi_align, roi_pool


def _bilinear(plane, y, x):
  """torchvision's bilinear_interpolate on one [H, W] plane: 0 outside [-1, H] x [-1, W], clamped inside."""
  h, w = plane.shape
  if y < -1 or y > h or x < -1 or x > w:
    return 0.0
  y, x = max(y, 0.0), max(x, 0.0)
  y_lo, x_lo = int(y), int(x)
  if y_lo >= h - 1:
    y_lo = y_hi = h - 1
    y = float(y_lo)
  else:
    y_hi = y_lo + 1
  if x_lo >= w - 1:
    x_lo = x_hi = w - 1
    x = float(x_lo)
  else:
    x_hi = x_lo + 1
  ly, lx = y - y_lo, x - x_lo
  return ((1 - ly) * (1 - lx) * plane[y_lo, x_lo] + (1 - ly) * lx * plane[y_lo, x_hi]
          + ly * (1 - lx) * plane[y_hi, x_lo] + ly * lx * plane[y_hi, x_hi])


def _align(features, rois, size, scale, ratio, aligned, reduce, quantize=False):
  out = np.zeros((len(rois), size, size, features.shape[-1]))
  offset = 0.5 if aligned else 0.0
  for r, (b, *box) in enumerate(rois):
    box = np.asarray(box, np.float64) * scale
    if quantize:
      box = np.sign(box) * np.floor(np.abs(box) + 0.5)
    x1, y1, x2, y2 = box - offset
    rw, rh = x2 - x1, y2 - y1
    if not aligned:
      rw, rh = max(rw, 1.0), max(rh, 1.0)
    bh, bw = rh / size, rw / size
    for i in range(size):
      for j in range(size):
        for c in range(features.shape[-1]):
          samples = [_bilinear(features[int(b), :, :, c], y1 + i * bh + (s + 0.5) * bh / ratio,
                               x1 + j * bw + (t + 0.5) * bw / ratio)
                     for s in range(ratio) for t in range(ratio)]
          out[r, i, j, c] = reduce(samples)
  return out


def _pool_avg(features, rois, size, scale):
  """torchvision's roi_pool bins (rounded corners, size max(x2 - x1 + 1, 1), floor/ceil bin edges), averaged."""
  _, h, w, _ = features.shape
  out = np.zeros((len(rois), size, size, features.shape[-1]))
  rnd = lambda v: math.floor(abs(v) + 0.5) * (1 if v >= 0 else -1)
  for r, (b, x1, y1, x2, y2) in enumerate(rois):
    x1, y1, x2, y2 = (rnd(v * scale) for v in (x1, y1, x2, y2))
    rw, rh = max(x2 - x1 + 1, 1), max(y2 - y1 + 1, 1)
    for i in range(size):
      hs = min(max(math.floor(i * rh / size) + y1, 0), h)
      he = min(max(math.ceil((i + 1) * rh / size) + y1, 0), h)
      for j in range(size):
        ws = min(max(math.floor(j * rw / size) + x1, 0), w)
        we = min(max(math.ceil((j + 1) * rw / size) + x1, 0), w)
        if he > hs and we > ws:
          out[r, i, j] = features[int(b), hs:he, ws:we].mean(axis=(0, 1))
  return out


@pytest.fixture(name="inputs")
def _inputs():
  rng = np.random.default_rng(0)
  features = rng.normal(size=(2, 13, 15, 3))
  boxes = rng.uniform(-6, 60, size=(9, 4))
  boxes = np.concatenate([np.minimum(boxes[:, :2], boxes[:, 2:]), np.maximum(boxes[:, :2], boxes[:, 2:])], 1)
  rois = np.concatenate([rng.integers(0, 2, size=(9, 1)), boxes], 1)
  return features, rois


@pytest.mark.parametrize("aligned", [False, True])
def test_roi_align_max_equals_numpy(inputs, aligned):
  features, rois = inputs
  got = roi_align(features.astype(np.float32), rois.astype(np.float32), 4, 0.25, 2, aligned, aggregation="max")
  np.testing.assert_allclose(np.asarray(got), _align(features, rois, 4, 0.25, 2, aligned, max), atol=1e-5)


@pytest.mark.parametrize("aggregation,reduce", [("max", max), ("avg", np.mean)])
def test_roi_warp_equals_numpy(inputs, aggregation, reduce):
  """RoIWarp: corners rounded to the feature grid, then bilinear samples reduced."""
  features, rois = inputs
  got = multilevel_roi_align([features.astype(np.float32)], rois.astype(np.float32), 4, [0.25], 2, aligned=False,
                             quantized=True, aggregation=aggregation)
  expected = _align(features, rois, 4, 0.25, 2, False, reduce, quantize=True)
  np.testing.assert_allclose(np.asarray(got), expected, atol=1e-5)


def test_roi_pool_avg_equals_numpy_and_has_gradients(inputs):
  features, rois = inputs
  got = roi_pool(features.astype(np.float32), rois.astype(np.float32), 3, 0.25, aggregation="avg")
  np.testing.assert_allclose(np.asarray(got), _pool_avg(features, rois, 3, 0.25), atol=1e-5)
  grad = jax.grad(lambda f: roi_pool(f, rois.astype(np.float32), 3, 0.25, aggregation="avg").sum())(
      features.astype(np.float32))
  # Each non-empty bin spreads weight 1 over its pixels: the gradient sums to the number of non-empty bins.
  nonempty = (np.abs(_pool_avg(np.ones_like(features), rois, 3, 0.25)[..., 0]) > 0).sum() * features.shape[-1]
  np.testing.assert_allclose(float(grad.sum()), nonempty, rtol=1e-5)


def test_unknown_aggregation_is_named(inputs):
  features, rois = inputs
  with pytest.raises(ValueError, match="aggregation"):
    roi_pool(features, rois, 3, aggregation="median")
  with pytest.raises(ValueError, match="aggregation"):
    roi_align(features, rois, 3, aggregation="median")



def test_max_aggregation_of_no_rois(inputs):
  """A chunk of the mask loop past every detection pools zero RoIs: max aggregation gives [0, ...]."""
  features, _ = inputs
  got = roi_align(features.astype(np.float32), np.zeros((0, 5), np.float32), 4, 0.25, 2, aggregation="max")
  assert got.shape == (0, 4, 4, features.shape[-1])
