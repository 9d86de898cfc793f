"""panoptic_merge against a NumPy port of detectron2's combine_semantic_and_instance_outputs (its Python loop over
instances sorted by score, then over the stuff labels), on random overlapping instances; one compile.

Reference ported: facebookresearch/detectron2, detectron2/modeling/meta_arch/panoptic_fpn.py,
combine_semantic_and_instance_outputs, commit 706f3b9ddf69f330e939d1c8a1c728d72ac1bc6a.
"""
import jax
import numpy as np
import pytest

from segjax.ops.panoptic import panoptic_merge
from train_util import counting_jit

NUM_STUFF = 4


def _reference(masks, scores, labels, semantic, overlap_threshold, stuff_area_threshold, score_threshold):
  """detectron2 panoptic_fpn.combine_semantic_and_instance_outputs, on the valid instances."""
  panoptic = np.zeros(semantic.shape, np.int32)
  segment_id, segments = 0, []
  for i in np.argsort(-scores, kind="stable"):
    if scores[i] < score_threshold:
      break
    mask = masks[i]
    area = mask.sum()
    if area == 0:
      continue
    intersect = (mask & (panoptic > 0)).sum()
    if intersect / area > overlap_threshold:
      continue
    if intersect > 0:
      mask = mask & (panoptic == 0)
    segment_id += 1
    panoptic[mask] = segment_id
    segments.append((segment_id, labels[i], True, scores[i]))
  for label in np.unique(semantic):
    if label == 0:
      continue
    mask = (semantic == label) & (panoptic == 0)
    if mask.sum() < stuff_area_threshold:
      continue
    segment_id += 1
    panoptic[mask] = segment_id
    segments.append((segment_id, label, False, 0.0))
  return panoptic, segments


def _random_image(rng, k=12, size=(48, 64)):
  h, w = size
  masks = np.zeros((k, h, w), bool)
  for i in range(k):
    y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
    masks[i, y:y + rng.integers(3, 24), x:x + rng.integers(3, 30)] = True
  masks[rng.integers(k)] = False  # an empty mask
  scores = rng.uniform(0.2, 1.0, k).astype(np.float32)
  labels = rng.integers(1, 6, k).astype(np.int32)
  valid = rng.uniform(size=k) < 0.85
  ys, xs = np.mgrid[:h, :w]
  semantic = ((xs // 16 + 2 * (ys // 16)) % (NUM_STUFF + 1)).astype(np.int32)
  semantic[rng.uniform(size=(h, w)) < 0.1] = rng.integers(0, NUM_STUFF + 1)
  return masks, scores, labels, valid, semantic


@pytest.mark.parametrize("thresholds", [(0.5, 64, 0.5), (0.2, 200, 0.3)])
def test_equals_detectron2_loop(thresholds):
  overlap, stuff_area, score = thresholds
  merge = counting_jit(jax.vmap(lambda *a: panoptic_merge(*a, NUM_STUFF, overlap_threshold=overlap,
                                                     stuff_area_threshold=stuff_area,
                                                     instance_score_threshold=score)))
  rng = np.random.default_rng(0)
  images = [_random_image(rng) for _ in range(4)]
  panoptic, segments = jax.device_get(merge(*(np.stack(x) for x in zip(*images))))
  dropped = 0
  for b, (masks, scores, labels, valid, semantic) in enumerate(images):
    expected, expected_segments = _reference(masks[valid], scores[valid], labels[valid], semantic, overlap,
                                             stuff_area, score)
    np.testing.assert_array_equal(panoptic[b], expected)
    n = len(expected_segments)
    assert segments["valid"][b].sum() == n and segments["valid"][b][:n].all()
    ids, categories, things, segment_scores = (np.array(x) for x in zip(*expected_segments))
    np.testing.assert_array_equal(segments["id"][b][:n], ids)
    np.testing.assert_array_equal(segments["category"][b][:n], categories)
    np.testing.assert_array_equal(segments["is_thing"][b][:n], things)
    np.testing.assert_allclose(segments["score"][b][:n], segment_scores)
    np.testing.assert_array_equal(segments["area"][b][:n], [np.sum(expected == i) for i in ids])
    dropped += valid.sum() - things.sum()
  assert dropped > 0  # the thresholds removed instances: the rules are exercised
  merge(*(np.stack(x) for x in zip(*[_random_image(rng) for _ in range(4)])))  # other instances, same program
  assert merge.traces == 1
