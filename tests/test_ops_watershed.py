"""Deep Watershed Transform ops against float64 NumPy / SciPy versions written from the paper's equations (Bai &
Urtasun 2017, Sec. 3.2-3.4) and the authors' ground-truth script (repository min2209/dwt, commit 3b49ee5,
matlab/generate_GT_cityscapes_unified.m: bwdist of each instance, imgradientxy's Sobel gradient, weight
200 / sqrt(area); WTN/lossFunction.py and DN/lossFunction.py for the losses)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy import ndimage

from segjax.ops import grouping
from segjax.ops import watershed

H, W, M = 24, 28, 6


def _instances(rng, count, touching=True):
  """Random rectangles and discs, some touching or overlapping (later ones win, as label_map), padded to M."""
  masks = np.zeros((M, H, W), bool)
  yy, xx = np.mgrid[:H, :W]
  for k in range(count):
    if rng.uniform() < 0.5:
      y, x, r = rng.integers(3, H - 3), rng.integers(3, W - 3), rng.uniform(2, 7)
      masks[k] = (yy - y) ** 2 + (xx - x) ** 2 <= r * r
    else:
      h, w = rng.integers(2, 12, size=2)
      y, x = rng.integers(0, H - h + 1), rng.integers(0, W - w + 1)
      masks[k, y:y + h, x:x + w] = True
  if not touching:
    masks &= ~np.roll(masks, 1, axis=0)
  valid = np.arange(M) < count
  return masks, valid


def _reference_targets(masks, valid, crowd):
  """Per instance: scipy's exact EDT of its visible mask, Sobel gradients (scipy.ndimage.sobel, mode reflect),
  normalised; levels by the script's bin edges; weight 200 / sqrt(area) on non-crowd instances."""
  m, h, w = masks.shape
  labels = np.zeros((h, w), int)
  for k in range(m):
    labels[masks[k] & valid[k]] = k + 1
  distance = np.zeros((h, w))
  direction = np.zeros((h, w, 2))
  direction_valid = np.zeros((h, w), bool)
  weight = np.zeros((h, w))
  for k in range(m):
    own = labels == k + 1
    if not own.any():
      continue
    d = ndimage.distance_transform_edt(own)
    gy, gx = ndimage.sobel(d, axis=0), ndimage.sobel(d, axis=1)
    norm = np.hypot(gy, gx)
    distance[own] = d[own]
    if not crowd[k]:
      ok = own & (norm > 1e-6)
      direction[ok] = np.stack([gy[ok], gx[ok]], -1) / norm[ok][:, None]
      direction_valid |= ok
      weight[own] = 200.0 / np.sqrt(own.sum())
  edges = [0, 1, 2, 3, 4, 5, 7, 9, 12, 15, 19, 24, 30, 37, 45, 54, np.inf]
  level = np.zeros((h, w), int)
  for i in range(16):  # the script: d in (b_i, b_i+1] -> i; 0 stays 0
    level[(distance > edges[i]) & (distance <= edges[i + 1])] = i
  return {"distance": distance, "direction": direction, "direction_valid": direction_valid, "weight": weight,
          "level": level, "object": weight > 0}


@pytest.mark.parametrize("seed,count", [(0, 0), (1, 1), (2, 4), (3, 6), (4, 5)])
def test_targets_equal_scipy(seed, count):
  rng = np.random.default_rng(seed)
  masks, valid = _instances(rng, count)
  crowd = np.zeros(M, bool)
  if count > 2:
    crowd[1] = True
  ours = jax.jit(watershed.targets)(masks, valid, crowd)
  ref = _reference_targets(masks, valid, crowd)
  np.testing.assert_allclose(ours["distance"], ref["distance"], rtol=1e-6, atol=1e-5)
  np.testing.assert_array_equal(ours["level"], ref["level"])
  np.testing.assert_array_equal(ours["object"], ref["object"])
  np.testing.assert_array_equal(ours["direction_valid"], ref["direction_valid"])
  np.testing.assert_allclose(ours["direction"], ref["direction"], atol=1e-5)
  np.testing.assert_allclose(ours["weight"], ref["weight"], rtol=1e-6)
  if count == 0:
    assert not np.any(ours["object"]) and np.all(np.asarray(ours["distance"]) == 0)


def _reference_losses(predicted, logits, ref):
  u = predicted / np.linalg.norm(predicted, axis=-1, keepdims=True) * 0.999999
  t = ref["direction"] * 0.999999
  angle = np.arccos(np.sum(u * t, -1))
  l_dir = np.sum(ref["weight"] * ref["direction_valid"] * angle ** 2)
  z = logits - logits.max(-1, keepdims=True)
  y = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
  one_hot = np.eye(16)[ref["level"]]
  c = np.array([3, 3, 3, 2] + [1] * 12, float)
  inner = ((1 - one_hot) * np.log(np.maximum(1 - y, 1e-25)) + one_hot * np.log(np.maximum(y, 1e-25))) * c
  l_ws = -np.sum(ref["weight"][..., None] * inner)
  return l_dir, l_ws


@pytest.mark.parametrize("seed,count", [(5, 0), (6, 1), (7, 5)])
def test_losses_equal_the_papers_equations(seed, count):
  rng = np.random.default_rng(seed)
  masks, valid = _instances(rng, count)
  ref = _reference_targets(masks, valid, np.zeros(M, bool))
  predicted = rng.normal(size=(H, W, 2))
  logits = rng.normal(0, 3, size=(H, W, 16))
  l_dir, l_ws = _reference_losses(predicted, logits, ref)
  t = watershed.targets(masks, valid)
  ours_dir = watershed.angular_loss(jnp.asarray(predicted, jnp.float32), t["direction"],
                                    t["weight"] * t["direction_valid"])
  ours_ws = watershed.watershed_loss(jnp.asarray(logits, jnp.float32), t["level"], t["weight"])
  np.testing.assert_allclose(ours_dir, l_dir, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(ours_ws, l_ws, rtol=1e-5, atol=1e-4)
  if count == 0:
    assert ours_dir == 0 and ours_ws == 0


def test_loss_gradients_by_finite_differences():
  rng = np.random.default_rng(8)
  masks, valid = _instances(rng, 3)
  with jax.enable_x64(True):
    t = watershed.targets(masks[:, :10, :12], valid)
    weight = t["weight"].astype(jnp.float64)
    predicted = jnp.asarray(rng.normal(size=(10, 12, 2)))
    logits = jnp.asarray(rng.normal(size=(10, 12, 16)))
    check_grads(lambda p: watershed.angular_loss(p, t["direction"].astype(jnp.float64),
                                                 weight * t["direction_valid"]),
                (predicted,), order=1, modes=("rev",), atol=1e-4, rtol=1e-4)
    check_grads(lambda z: watershed.watershed_loss(z, t["level"], weight), (logits,), order=1, modes=("rev",),
                atol=1e-4, rtol=1e-4)


def _reference_cut(level, foreground, cut_level, min_area, max_instances):
  core = (level > cut_level) & foreground
  labels, n = ndimage.label(core, structure=np.ones((3, 3)))
  area = np.bincount(labels.ravel(), minlength=H * W + 1)  # one slot per possible component, as the op
  area[0] = 0
  area[area < min_area] = 0
  labels[area[labels] == 0] = 0
  for _ in range(watershed.grow_steps(cut_level)):
    grown = ndimage.grey_dilation(labels, size=(3, 3), mode="constant", cval=0)
    labels = np.where((labels == 0) & foreground, grown, labels)
  order = np.argsort(-area, kind="stable")[:max_instances]
  return labels, order, area[order] > 0


@pytest.mark.parametrize("seed,cut_level", [(1, 1), (2, 2), (3, 1), (2, 3)])
def test_cut_equals_scipy(seed, cut_level):
  rng = np.random.default_rng(seed)
  level = (ndimage.uniform_filter(rng.uniform(0, 1, size=(H, W)), 3) * 16 - 5).clip(0).round().astype(np.int32)
  foreground = ndimage.uniform_filter(rng.uniform(size=(H, W)), 5) > 0.45
  cut = jax.jit(lambda l, f: watershed.cut(l, f, cut_level, 3, 8, grouping.connected_components))
  labels, ids, ok = cut(level, foreground)
  ref_labels, ref_ids, ref_ok = _reference_cut(level, foreground, cut_level, 3, 8)
  np.testing.assert_array_equal(labels, ref_labels)
  np.testing.assert_array_equal(np.asarray(ids)[np.asarray(ok)], ref_ids[ref_ok])
  np.testing.assert_array_equal(ok, ref_ok)
  assert ref_ok.sum() >= 2


def test_cut_of_an_empty_foreground():
  labels, _, ok = watershed.cut(jnp.full((H, W), 5), jnp.zeros((H, W), bool), 1, 1, 4, grouping.connected_components)
  assert not np.any(ok) and not np.any(labels)
