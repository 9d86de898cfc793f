"""segjax.ops.nms against torchvision.ops.nms / batched_nms; matrix_nms against its algorithm in float64."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segjax.ops import mask_nms as matrix_nms_lib
from segjax.ops.boxes import box_area
from segjax.ops import box_nms as nms_lib
from references import requires_torch, torch, torchvision



def clustered_boxes(rng, n, num_objects=12, size=300.0, integer=False):
  """[n, 4] float32 boxes jittered around a few objects, so that many overlap heavily."""
  centre = rng.uniform(0, size, (num_objects, 2))
  extent = np.exp(rng.uniform(np.log(8), np.log(size / 3), (num_objects, 2)))
  k = rng.integers(0, num_objects, n)
  c = centre[k] + rng.normal(0, 0.1, (n, 2)) * extent[k]
  e = extent[k] * np.exp(rng.normal(0, 0.15, (n, 2)))
  boxes = np.concatenate([c - e / 2, c + e / 2], axis=1)
  return (np.round(boxes) if integer else boxes).astype(np.float32)


def distinct_scores(rng, n):
  return rng.permutation(np.linspace(0.01, 1.0, n)).astype(np.float32)


@functools.partial(jax.jit, static_argnums=(2, 3))
def nms_jit(boxes, scores, iou_threshold, max_output_size):
  return nms_lib.nms(boxes, scores, iou_threshold, max_output_size)


@functools.partial(jax.jit, static_argnums=(3, 4))
def batched_nms_jit(boxes, scores, class_ids, iou_threshold, max_output_size):
  return nms_lib.batched_nms(boxes, scores, class_ids, iou_threshold, max_output_size)


def assert_same_kept(ours, ref, max_output_size):
  """ours is int32[max_output_size]: torchvision's keep[:max_output_size], then -1."""
  ours = np.asarray(ours)
  ref = ref.numpy()[:max_output_size]
  np.testing.assert_array_equal(ours[:len(ref)], ref)
  assert (ours[len(ref):] == -1).all()


@requires_torch
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("iou_threshold", [0.3, 0.5, 0.7])
def test_nms_equals_torchvision(seed, iou_threshold):
  # 600 boxes span three tiles, so suppression across tiles and inside a tile are both exercised.
  rng = np.random.default_rng(seed)
  boxes, scores = clustered_boxes(rng, 600, num_objects=40), distinct_scores(rng, 600)
  ref = torchvision.ops.nms(torch.tensor(boxes), torch.tensor(scores), iou_threshold)
  assert 30 < len(ref) < 400
  assert_same_kept(nms_jit(boxes, scores, iou_threshold, 600), ref, 600)
  assert_same_kept(nms_jit(boxes, scores, iou_threshold, 17), ref, 17)


@requires_torch
def test_nms_small_inputs_and_empty():
  rng = np.random.default_rng(3)
  for n in (1, 9):
    boxes, scores = clustered_boxes(rng, n, num_objects=2), distinct_scores(rng, n)
    ref = torchvision.ops.nms(torch.tensor(boxes), torch.tensor(scores), 0.5)
    assert_same_kept(nms_jit(boxes, scores, 0.5, 8), ref, 8)
  out = nms_lib.nms(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), 0.5, 4)
  np.testing.assert_array_equal(np.asarray(out), [-1, -1, -1, -1])


@requires_torch
def test_nms_exact_ties_equal_torchvision():
  # torchvision sorts scores with an unstable sort; up to 16 entries it is an insertion sort, which
  # keeps tied scores in input order as ours does. Groups of identical and overlapping tied boxes.
  rng = np.random.default_rng(4)
  boxes = clustered_boxes(rng, 16, num_objects=3)
  boxes[5] = boxes[2]
  boxes[11] = boxes[2]
  scores = np.repeat(np.float32([0.9, 0.5, 0.7, 0.2]), 4)
  ref = torchvision.ops.nms(torch.tensor(boxes), torch.tensor(scores), 0.5)
  kept = ref.numpy().tolist()
  assert kept == sorted(kept, key=lambda i: (-scores[i], i))  # the reference keeps ties in input order
  assert len(kept) < 16
  assert_same_kept(nms_lib.nms(boxes, scores, 0.5, 16), ref, 16)


@requires_torch
def test_nms_many_ties_keep_input_order():
  # Beyond 16 boxes torchvision's tie order is unspecified; ours is the stable order, which equals
  # torchvision run on scores with the ties broken by input index.
  rng = np.random.default_rng(5)
  boxes = clustered_boxes(rng, 300)
  scores = rng.integers(0, 6, 300).astype(np.float32)
  rank = np.empty(300, np.float32)
  rank[np.argsort(-scores, kind="stable")] = -np.arange(300)
  ref = torchvision.ops.nms(torch.tensor(boxes), torch.tensor(rank), 0.5)
  assert_same_kept(nms_jit(boxes, scores, 0.5, 300), ref, 300)


@requires_torch
def test_nms_zero_area_boxes_as_torchvision():
  rng = np.random.default_rng(6)
  boxes, scores = clustered_boxes(rng, 40, num_objects=3), distinct_scores(rng, 40)
  boxes[:6, 2] = boxes[:6, 0]  # zero width
  boxes[6:9] = boxes[0]  # identical zero-area boxes: IoU 0/0 = NaN, never suppressed
  ref = torchvision.ops.nms(torch.tensor(boxes), torch.tensor(scores), 0.5)
  assert set(range(9)) <= set(ref.numpy().tolist())
  assert_same_kept(nms_lib.nms(boxes, scores, 0.5, 40), ref, 40)


@requires_torch
def test_suppression_at_the_threshold_is_strict_and_bitwise():
  # Thresholds at torchvision's float32 IoU or a quarter step above: not suppressed (IoU > t is false);
  # a quarter or a whole float32 step below: suppressed (torchvision compares with t as a double).
  # Catches any rounding difference in the IoU or in the float/double comparison.
  rng = np.random.default_rng(7)
  a = clustered_boxes(rng, 40)
  b = (a + rng.normal(0, 3, a.shape)).astype(np.float32)
  iou = torchvision.ops.box_iou(torch.tensor(a), torch.tensor(b)).numpy().diagonal()
  pairs = np.flatnonzero(iou > 0.05)
  assert len(pairs) > 30
  area = np.asarray(jax.jit(box_area)(np.stack([a, b])))
  # pylint: disable=protected-access
  suppression = jax.jit(lambda *args: nms_lib._suppression(*args).diagonal())
  zeros = np.zeros(1, np.int32)
  for p in pairs:
    step = float(iou[p]) - float(np.nextafter(iou[p], np.float32(0)))
    cases = ((0.0, False), (0.25, False), (-0.25, True), (-1.0, True))
    for threshold, expected in ((float(iou[p]) + k * step, e) for k, e in cases):
      t = nms_lib._threshold_for(threshold, np.float32)
      got = suppression(a[p:p + 1], area[0, p:p + 1], zeros, b[p:p + 1], area[1, p:p + 1], zeros, t)
      ref = torchvision.ops.nms(torch.tensor(np.stack([a[p], b[p]])), torch.tensor([1.0, 0.5]), threshold)
      assert bool(got[0]) == expected == (len(ref) == 1)


@requires_torch
def test_batched_nms_equals_torchvision_both_code_paths():
  rng = np.random.default_rng(8)
  # <= 1000 boxes: torchvision offsets each class by (max coordinate + 1); integer boxes keep that exact.
  boxes, scores = clustered_boxes(rng, 500, integer=True), distinct_scores(rng, 500)
  classes = rng.integers(0, 4, 500).astype(np.int32)
  ref = torchvision.ops.batched_nms(torch.tensor(boxes), torch.tensor(scores), torch.tensor(classes), 0.5)
  assert_same_kept(batched_nms_jit(boxes, scores, classes, 0.5, 500), ref, 500)
  # > 1000 boxes: torchvision runs nms per class.
  boxes, scores = clustered_boxes(rng, 1100), distinct_scores(rng, 1100)
  classes = rng.integers(0, 5, 1100).astype(np.int32)
  ref = torchvision.ops.batched_nms(torch.tensor(boxes), torch.tensor(scores), torch.tensor(classes), 0.6)
  assert_same_kept(batched_nms_jit(boxes, scores, classes, 0.6, 300), ref, 300)


@requires_torch
def test_nms_compiles_once_for_new_values_and_vmaps():
  traces = []

  @jax.jit
  def f(boxes, scores):
    traces.append(1)
    return nms_lib.nms(boxes, scores, 0.5, 50)

  rng = np.random.default_rng(9)
  batch = [(clustered_boxes(rng, 100), distinct_scores(rng, 100)) for _ in range(3)]
  for boxes, scores in batch:
    ref = torchvision.ops.nms(torch.tensor(boxes), torch.tensor(scores), 0.5)
    assert_same_kept(f(boxes, scores), ref, 50)
  assert len(traces) == 1
  stacked = jax.vmap(lambda b, s: nms_lib.nms(b, s, 0.5, 50))(*map(np.stack, zip(*batch)))
  for row, (boxes, scores) in zip(np.asarray(stacked), batch):
    np.testing.assert_array_equal(row, np.asarray(f(boxes, scores)))


def test_nms_bad_inputs_raise_value_error():
  boxes, scores = np.zeros((5, 4), np.float32), np.zeros(5, np.float32)
  with pytest.raises(ValueError, match=r"boxes must have shape \[N, 4\], got \(5, 3\)"):
    nms_lib.nms(np.zeros((5, 3), np.float32), scores, 0.5, 4)
  with pytest.raises(ValueError, match="scores must have shape"):
    nms_lib.nms(boxes, np.zeros(4, np.float32), 0.5, 4)
  with pytest.raises(ValueError, match="class_ids must have shape"):
    nms_lib.batched_nms(boxes, scores, np.zeros(3, np.int32), 0.5, 4)
  with pytest.raises(ValueError, match="max_output_size"):
    nms_lib.nms(boxes, scores, 0.5, 0)
  with pytest.raises(ValueError, match="boxes must be floating point"):
    nms_lib.nms(np.zeros((5, 4), np.int32), scores, 0.5, 4)
  with pytest.raises(ValueError, match="iou_threshold must be a Python float"):
    jax.jit(lambda t: nms_lib.nms(boxes, scores, t, 4))(0.5)


# ---- matrix NMS ----

def matrix_nms_float64(masks, labels, scores, kernel, sigma):
  """SOLOv2 Alg. 1 with the official implementation's same-label restriction, plainly with loops."""
  n = len(scores)
  flat = masks.reshape(n, -1).astype(np.float64)
  area = flat.sum(1)
  iou = np.zeros((n, n))
  for i in range(n):
    for j in range(i + 1, n):
      inter = (flat[i] * flat[j]).sum()
      union = area[i] + area[j] - inter
      if labels[i] == labels[j] and union > 0:
        iou[i, j] = inter / union
  compensate = [max([iou[k, i] for k in range(n)]) for i in range(n)]
  f = (lambda x: np.exp(-sigma * x * x)) if kernel == "gaussian" else (lambda x: 1 - x)
  decay = [min(f(iou[i, j]) / f(compensate[i]) for i in range(n)) for j in range(n)]
  return scores * np.array(decay)


def random_masks(rng, n, size=16):
  """Overlapping binary masks made of random rectangles, and descending scores."""
  masks = np.zeros((n, size, size), bool)
  for k in range(n):
    x0, y0 = rng.integers(0, size // 2, 2)
    x1, y1 = x0 + rng.integers(3, size // 2, 2)
    masks[k, y0:y1, x0:x1] = True
  return masks, np.sort(rng.uniform(0.1, 1, n))[::-1].astype(np.float32)


matrix_nms_jit = jax.jit(matrix_nms_lib.matrix_nms, static_argnames=("kernel", "sigma"))


@pytest.mark.parametrize("kernel,sigma", [("gaussian", 2.0), ("gaussian", 0.5), ("linear", 2.0)])
def test_matrix_nms_matches_algorithm_in_float64(kernel, sigma):
  rng = np.random.default_rng(10)
  masks, scores = random_masks(rng, 14)
  labels = rng.integers(0, 3, 14).astype(np.int32)
  ours = np.asarray(matrix_nms_jit(masks, labels, scores, kernel=kernel, sigma=sigma))
  ref = matrix_nms_float64(masks, labels, scores.astype(np.float64), kernel, sigma)
  np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)
  assert (ours <= scores + 1e-6).all() and ours[0] == scores[0]


def test_matrix_nms_given_areas_zero_padding_and_one_compile():
  rng = np.random.default_rng(11)
  masks, scores = random_masks(rng, 10)
  labels = np.zeros(10, np.int32)
  traces = []

  @jax.jit
  def f(masks, labels, scores):
    traces.append(1)
    return matrix_nms_lib.matrix_nms(masks, labels, scores)

  for _ in range(2):
    other_masks, other_scores = random_masks(rng, 10)
    ref_other = matrix_nms_float64(other_masks, labels, other_scores.astype(np.float64), "gaussian", 2.0)
    np.testing.assert_allclose(np.asarray(f(other_masks, labels, other_scores)), ref_other, rtol=1e-5)
  assert len(traces) == 1
  ref = np.asarray(f(masks, labels, scores))
  area = masks.sum((1, 2)).astype(np.float32)
  given_area = matrix_nms_lib.matrix_nms(masks, labels, scores, mask_area=area)
  np.testing.assert_allclose(np.asarray(given_area), ref, rtol=1e-6)
  padded = np.concatenate([masks, np.zeros((4, 16, 16), bool)])
  padded_scores = np.concatenate([scores, np.zeros(4, np.float32)])
  out = matrix_nms_lib.matrix_nms(padded, np.zeros(14, np.int32), padded_scores)
  np.testing.assert_allclose(np.asarray(out)[:10], ref, rtol=1e-6)
  assert np.isfinite(np.asarray(out)).all()


def test_matrix_nms_bad_inputs_raise_value_error():
  masks = np.zeros((3, 4, 4), bool)
  with pytest.raises(ValueError, match="kernel"):
    matrix_nms_lib.matrix_nms(masks, np.zeros(3, np.int32), np.zeros(3), kernel="box")
  with pytest.raises(ValueError, match="labels must have shape"):
    matrix_nms_lib.matrix_nms(masks, np.zeros(2, np.int32), np.zeros(3))
  with pytest.raises(ValueError, match=r"masks must have shape \[N, H, W\]"):
    matrix_nms_lib.matrix_nms(masks[0], np.zeros(3, np.int32), np.zeros(3))


def test_matrix_nms_in_place_is_matrix_nms_in_score_order_returned_in_input_order():
  """Masks in any order over two batch axes: each image's scores decayed as the float64 algorithm decays them in
  descending-score order, put back where each mask was."""
  rng = np.random.default_rng(12)
  masks = np.zeros((2, 3, 9, 16, 16), bool)
  scores = np.zeros((2, 3, 9), np.float32)
  expected = np.zeros((2, 3, 9))
  for i in range(2):
    for j in range(3):
      sorted_masks, sorted_scores = random_masks(rng, 9)
      order = rng.permutation(9)
      masks[i, j, order], scores[i, j, order] = sorted_masks, sorted_scores
      expected[i, j, order] = matrix_nms_float64(sorted_masks, np.zeros(9), sorted_scores.astype(np.float64),
                                                 "gaussian", 2.0)
  ours = jax.jit(matrix_nms_lib.matrix_nms_in_place)(masks, scores)
  np.testing.assert_allclose(np.asarray(ours), expected, rtol=1e-5, atol=1e-6)
  assert (np.asarray(ours) < scores - 1e-3).any()
