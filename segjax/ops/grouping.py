"""Grouping of per-pixel embeddings into instances inside jit, with static shapes.

- `sequential_seeds`: Fathi et al. 2017's seed selection, p_t = argmax_{p not in p_1:t-1} [log S_p + alpha log
  D(p, p_1:t-1)] with D(p, p_1:t-1) = min_q ||e_p - e_q||^2 (p_1 = argmax S_p).
- `mean_shift`: a fixed number of seeds climbing a kernel density estimate (Comaniciu & Meer 2002), as scikit-learn's
  `MeanShift` for the flat kernel (the mean of the points within `bandwidth`; a seed stops once it moves by at most
  1e-3 bandwidth or sees no point), with a Gaussian kernel for Euclidean embeddings (De Brabandere et al. 2017) or a
  von Mises-Fisher kernel for unit embeddings (Xiang et al. 2020). `merge_modes` then keeps the modes as
  `MeanShift.fit` does (by decreasing count within bandwidth, dropping any within bandwidth of a kept one) and
  `nearest_mode` labels every point by its nearest kept mode.
- `mean_shift_clusters`: the chain seeds -> mean shift -> merged modes -> nearest-mode labels that the
  discriminative-embedding model and the Unseen Clustering Network share.
- `instances_from_masks`: a fixed number of candidate masks -> the instance-model prediction rows (area filter, score
  order, boxes), shared by the bottom-up models.
- `connected_components`: 4- or 8-connected labelling by iterative minimum-label propagation with pointer jumping,
  numbered 1..n in raster order of each component's first pixel as scipy.ndimage.label.

Every function has fixed-size outputs plus a validity mask, so any number of instances reuses one compiled program.
"""
import jax
import jax.numpy as jnp

from segjax.ops.masks import masks_to_boxes

KERNELS = ("flat", "gaussian", "vmf")


def sequential_seeds(embeddings, seediness, valid, num_seeds, alpha=1.0):
  """Seed pixels by the sequential rule of Fathi et al. 2017.

  Args:
    embeddings: [N, E] pixel embeddings.
    seediness: [N] seediness scores S_p in (0, 1].
    valid: [N] bool, the pixels that may be seeds (e.g. foreground).
    num_seeds: T, static.
    alpha: weight of the diversity term.

  Returns:
    indices int32 [T] and seed_valid bool [T] (False once no valid pixel is left). Ties go to the lowest index;
    S_p and D are floored at 1e-30 so that a zero gives a very low, finite score rather than -inf.
  """
  log_s = jnp.log(jnp.maximum(seediness, 1e-30))
  n = embeddings.shape[0]

  def body(t, carry):
    indices, seed_valid, taken, min_dist = carry
    score = jnp.where(t == 0, log_s, log_s + alpha * jnp.log(jnp.maximum(min_dist, 1e-30)))
    score = jnp.where(valid & ~taken, score, -jnp.inf)
    p = jnp.argmax(score)
    ok = jnp.isfinite(score[p])
    d = jnp.sum(jnp.square(embeddings - embeddings[p]), -1)
    min_dist = jnp.where(ok, jnp.minimum(min_dist, d), min_dist)
    return (indices.at[t].set(p.astype(jnp.int32)), seed_valid.at[t].set(ok), taken.at[p].set(taken[p] | ok),
            min_dist)

  init = (jnp.zeros(num_seeds, jnp.int32), jnp.zeros(num_seeds, bool), jnp.zeros(n, bool),
          jnp.full(n, jnp.inf, embeddings.dtype))
  indices, seed_valid, _, _ = jax.lax.fori_loop(0, num_seeds, body, init)
  return indices, seed_valid


def _squared_distances(a, b):
  return jnp.sum(jnp.square(a[:, None, :] - b[None, :, :]), -1)


def mean_shift(points, valid, seeds, bandwidth, num_iterations, kernel="flat", kappa=None):
  """Moves each seed uphill for at most `num_iterations` updates (scikit-learn's max_iter + 1).

  Args:
    points: [N, E]; valid: [N] bool (pixels that take part).
    seeds: [S, E] starting points.
    bandwidth: the flat kernel's radius (scikit-learn's `bandwidth`), the Gaussian's standard deviation; also the
      radius of the window count for every kernel.
    kernel: "flat" (mean of the points within bandwidth), "gaussian" (weights exp(-||x - m||^2 / (2 h^2))) or
      "vmf" (unit vectors: weights exp(kappa m . x), the weighted mean renormalised).
    kappa: the von Mises-Fisher concentration (required for "vmf").

  Returns:
    modes [S, E] and counts int32 [S]: the valid points within bandwidth of each seed's last window (0 for a seed
    that never saw a point; its mode is then the seed itself).
  """
  if kernel not in KERNELS:
    raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
  if kernel == "vmf" and kappa is None:
    raise ValueError("the von Mises-Fisher kernel needs kappa")
  stop = 1e-3 * bandwidth
  w_valid = valid.astype(points.dtype)

  def body(_, carry):
    mean, active, count = carry
    sq = _squared_distances(mean, points)  # [S, N]
    within = (sq <= bandwidth * bandwidth) & valid
    n = within.sum(1, dtype=jnp.int32)
    if kernel == "flat":
      w = within.astype(points.dtype)
    elif kernel == "gaussian":
      w = jnp.exp(-sq / (2 * bandwidth * bandwidth)) * w_valid
    else:
      logits = kappa * (mean @ points.T)
      w = jnp.exp(logits - jnp.max(jnp.where(valid, logits, -jnp.inf), 1, keepdims=True)) * w_valid
    new = (w @ points) / jnp.maximum(w.sum(1, keepdims=True), 1e-30)
    if kernel == "vmf":
      new = new / jnp.maximum(jnp.linalg.norm(new, axis=1, keepdims=True), 1e-30)
    moving = active & (n > 0)
    shift = jnp.linalg.norm(new - mean, axis=1)
    mean = jnp.where(moving[:, None], new, mean)
    count = jnp.where(active, n, count)
    return mean, moving & (shift > stop), count

  init = (seeds.astype(points.dtype), jnp.ones(seeds.shape[0], bool), jnp.zeros(seeds.shape[0], jnp.int32))
  mean, _, count = jax.lax.fori_loop(0, num_iterations, body, init)
  return mean, count


def merge_modes(modes, counts, bandwidth):
  """scikit-learn MeanShift.fit's post-processing of the modes [S, E]: sort by count (ties by the coordinates,
  larger first), keep a mode unless a kept one lies within bandwidth; modes with count 0 are dropped.

  Returns the kept modes first, in that order, [S, E], and their validity [S].
  """
  s, e = modes.shape
  keys = [-modes[:, j] for j in reversed(range(e))] + [-counts]
  order = jnp.lexsort(keys)
  modes, counts = modes[order], counts[order]
  close = _squared_distances(modes, modes) <= bandwidth * bandwidth

  def body(i, keep):
    suppressed = jnp.any(keep & close[i] & (jnp.arange(s) < i))
    return keep.at[i].set((counts[i] > 0) & ~suppressed)

  keep = jax.lax.fori_loop(0, s, body, jnp.zeros(s, bool))
  front = jnp.argsort(~keep, stable=True)
  return modes[front], keep[front]


def nearest_mode(points, modes, mode_valid):
  """The index int32 [N] of each point's nearest valid mode (scikit-learn's labels_ with cluster_all)."""
  sq = jnp.where(mode_valid[None, :], _squared_distances(points, modes), jnp.inf)
  return jnp.argmin(sq, 1).astype(jnp.int32)


def mean_shift_clusters(points, valid, seediness, num_seeds, seed_alpha, bandwidth, num_iterations, kernel="flat",
                        kappa=None):
  """`num_seeds` seeds by `sequential_seeds` (scores `seediness` [N], among the `valid` points), `mean_shift` from
  them, the modes merged by `merge_modes` and every point labelled by `nearest_mode`.

  Returns cluster int32 [N] (an index into the modes), modes [T, E] and their validity [T] (kept modes first).
  """
  seeds, seed_valid = sequential_seeds(points, seediness, valid, num_seeds, seed_alpha)
  modes, counts = mean_shift(points, valid, points[seeds], bandwidth, num_iterations, kernel, kappa=kappa)
  modes, keep = merge_modes(modes, jnp.where(seed_valid, counts, 0), bandwidth)
  return nearest_mode(points, modes, keep), modes, keep


def instances_from_masks(masks, valid, scores, min_area, height, width):
  """Instance predictions of one image from T candidate masks [T, N] (N = height * width pixels, bool), their
  validity [T] and scores [T]: a candidate with fewer than `min_area` pixels is dropped, the rest are sorted by
  decreasing score (invalid ones last, score 0, empty mask).

  Returns the instance-model rows of segjax/models/__init__.py: boxes [T, 4] (x1, y1, x2 + 1, y2 + 1 of the mask's
  pixels), scores, labels (1: class-agnostic), masks float32 [T, H, W], valid.
  """
  area = masks.sum(1)
  valid = valid & (area >= min_area)
  scores = jnp.where(valid, scores, 0.0)
  order = jnp.argsort(jnp.where(valid, -scores, jnp.inf))
  masks, scores, valid = masks[order].reshape(-1, height, width), scores[order], valid[order]
  masks = masks & valid[:, None, None]
  boxes = jnp.where(valid[:, None], masks_to_boxes(masks) + jnp.array([0, 0, 1, 1], jnp.float32), 0.0)
  return {"boxes": boxes, "scores": scores, "labels": valid.astype(jnp.int32), "masks": masks.astype(jnp.float32),
          "valid": valid}


def connected_components(mask, connectivity=4, regions=None):
  """Labels int32 [H, W] (0 off the mask, components 1..n numbered in raster order of their first pixel, as
  scipy.ndimage.label with its cross (4) or full 3x3 (8) structure) and n.

  With `regions` (int [H, W], e.g. cluster labels) two neighbouring mask pixels join only where their regions are
  equal: the components of every region at once, as scipy.ndimage.label of each `mask & (regions == r)` numbered
  together in raster order."""
  if connectivity not in (4, 8):
    raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
  h, w = mask.shape
  big = h * w
  index = jnp.arange(big, dtype=jnp.int32).reshape(h, w)
  shifts = [(-1, 0), (1, 0), (0, -1), (0, 1)]
  if connectivity == 8:
    shifts += [(-1, -1), (-1, 1), (1, -1), (1, 1)]

  if regions is not None:
    padded_regions = jnp.pad(regions, 1)
    same = [padded_regions[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] == regions for dy, dx in shifts]
  else:
    same = [True] * len(shifts)

  def neighbour_min(label):
    padded = jnp.pad(label, 1, constant_values=big)
    out = label
    for (dy, dx), joins in zip(shifts, same):
      out = jnp.minimum(out, jnp.where(joins, padded[1 + dy:1 + dy + h, 1 + dx:1 + dx + w], big))
    return jnp.where(mask, out, big)

  def step(carry):
    label, _ = carry
    new = neighbour_min(label)
    flat = new.reshape(-1)
    jumped = jnp.where(mask, flat[jnp.minimum(flat, big - 1)].reshape(h, w), big)  # pointer jumping
    new = jnp.minimum(new, jumped)
    return new, jnp.any(new != label)

  label0 = jnp.where(mask, index, big)
  label, _ = jax.lax.while_loop(lambda c: c[1], step, (label0, jnp.array(True)))
  root = mask & (label == index)
  number = jnp.cumsum(root.reshape(-1)).astype(jnp.int32)
  labels = jnp.where(mask, number[jnp.minimum(label, big - 1).reshape(-1)].reshape(h, w), 0)
  return labels, number[-1]
