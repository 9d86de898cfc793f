"""Panoptic FPN's merge of instance and semantic outputs into one panoptic map (Kirillov et al. 2019, Sec. 3.2 and
detectron2's combine_semantic_and_instance_outputs), with static shapes.

Instances in decreasing score: one scoring under `instance_score_threshold`, with an empty mask, or overlapping the
segments already placed by more than `overlap_threshold` of its area is dropped; otherwise its pixels not yet taken
become a new segment ("things over stuff", resolved by confidence). Then each stuff class in increasing label order
takes its still-free pixels if they are at least `stuff_area_threshold`. Segment ids count 1, 2, ... in that order;
0 is VOID.
"""
import jax
import jax.numpy as jnp
import numpy as np

from segjax.constants import IGNORE_LABEL


def panoptic_merge(masks, scores, labels, valid, semantic, num_stuff, *, overlap_threshold=0.5,
                   stuff_area_threshold=4096, instance_score_threshold=0.5):
  """One image: instances masks bool [K, H, W], scores [K], labels int [K], valid bool [K]; semantic int [H, W] with
  0 the things ("other") class and 1..num_stuff the stuff classes.

  Returns panoptic int32 [H, W] (segment ids, 0 VOID) and segments, K + num_stuff rows in id order, valid first:
  {"id", "category" (the instance's label or the stuff class), "is_thing", "score" (0 for stuff), "area", "valid"}.
  """
  k, h, w = masks.shape
  order = jnp.argsort(-jnp.where(valid, scores, -jnp.inf))

  def place_instance(carry, i):
    panoptic, next_id = carry
    mask = masks[i]
    area = mask.sum()
    overlap = (mask & (panoptic > 0)).sum()
    keep = valid[i] & (scores[i] >= instance_score_threshold) & (area > 0) & (overlap <= overlap_threshold * area)
    panoptic = jnp.where(keep & mask & (panoptic == 0), next_id, panoptic)
    return (panoptic, next_id + keep), (jnp.where(keep, next_id, 0), labels[i], scores[i], keep)

  start = (jnp.zeros((h, w), jnp.int32), jnp.int32(1))
  (panoptic, next_id), things = jax.lax.scan(place_instance, start, order)

  def place_stuff(carry, label):
    panoptic, next_id = carry
    mask = (semantic == label) & (panoptic == 0)
    keep = mask.sum() >= stuff_area_threshold
    panoptic = jnp.where(keep & mask, next_id, panoptic)
    return (panoptic, next_id + keep), (jnp.where(keep, next_id, 0), label, jnp.zeros((), scores.dtype), keep)

  (panoptic, _), stuff = jax.lax.scan(place_stuff, (panoptic, next_id), jnp.arange(1, num_stuff + 1, dtype=jnp.int32))
  ids, categories, segment_scores, keep = (jnp.concatenate([t, s]) for t, s in zip(things, stuff))
  is_thing = jnp.arange(k + num_stuff) < k
  rows = jnp.argsort(jnp.where(keep, ids, k + num_stuff + 1))  # by id, dropped rows last
  area = jnp.where(keep, jnp.bincount(panoptic.reshape(-1), length=k + num_stuff + 1)[ids], 0).astype(jnp.int32)
  segments = {"id": ids, "category": categories.astype(jnp.int32), "is_thing": is_thing, "score": segment_scores,
              "area": area, "valid": keep}
  return panoptic, {name: value[rows] for name, value in segments.items()}


def semantic_targets(semantic, is_thing):
  """Semantic train ids [...] (IGNORE_LABEL ignored) -> Panoptic FPN's semantic-branch labels: 0 for every thing
  class ("other"), 1..S for the stuff classes in train-id order, IGNORE_LABEL kept. is_thing: bool per train id."""
  table = np.full(256, IGNORE_LABEL, np.int32)
  is_thing = np.asarray(is_thing, bool)
  table[:len(is_thing)] = np.where(is_thing, 0, np.cumsum(~is_thing))
  return jnp.asarray(table)[jnp.clip(semantic, 0, 255)]
