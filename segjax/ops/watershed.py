"""Targets, losses and the energy cut of the Deep Watershed Transform (Bai & Urtasun, CVPR 2017), inside jit.

The energy of a pixel of an object is its Euclidean distance to the nearest pixel outside its instance (the distance
transform of the instance, scipy.ndimage.distance_transform_edt of its mask: pixels beyond the image border do not
count as outside). The Direction Network regresses the unit vector u_p = grad D / |grad D| (Sec. 3.2; the gradient
by Sobel filters, as the authors' ground-truth script does with MATLAB's imgradientxy, repository min2209/dwt,
matlab/generate_GT_cityscapes_unified.m), channel 0 along rows (y), channel 1 along columns (x). The Watershed
Transform Network classifies the energy into K = 16 levels whose bin edges are that script's
(matlab/batch_generate_cityscapes.m: 0, 1, 2, 3, 4, 5, 7, 9, 12, 15, 19, 24, 30, 37, 45, 54, inf; level k holds
distances in (b_k, b_k+1], background and the one-pixel boundary ring are level 0).

Losses (Sec. 3.2, 3.3), per pixel p of the objects P_obj, with w_p = 200 / sqrt(|S_p|) for the instance S_p that p
belongs to (the script's weight map: small instances count as much as large ones):
  l_direction = sum_p w_p || cos^-1 <u_p,GT, u_p,pred> ||^2
  l_watershed = - sum_p sum_k w_p c_k (tbar_p,k log ybar_p,k + t_p,k log y_p,k)
with t the one-hot level, y the softmax, tbar = 1 - t, ybar = 1 - y, and c = (3, 3, 3, 2, 1, ..., 1) (the level
weights of WTN/lossFunction.py). As in DN/lossFunction.py, both direction vectors are normalised and scaled by
0.999999 so that arccos stays differentiable; as in WTN/lossFunction.py the logarithms are floored at 1e-25.

Distances are exact and separable (the squared distance to the nearest pixel of another label is a minimum over
columns of a minimum over rows, Felzenszwalb & Huttenlocher 2012), computed for all instances of an image at once
from its label map: cost H W (H + W) whatever the number of instances, one compiled program for any count, memory
O(16 max(H, W)^2) (16 image lines at a time).
"""
import jax
import jax.numpy as jnp
import numpy as np

NUM_LEVELS = 16
LEVEL_BOUNDARIES = (0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 7.0, 9.0, 12.0, 15.0, 19.0, 24.0, 30.0, 37.0, 45.0, 54.0)
LEVEL_WEIGHTS = (3.0, 3.0, 3.0, 2.0) + (1.0,) * 12
INSTANCE_WEIGHT = 200.0
LOG_FLOOR = 1e-25
_FAR = 1e12  # squared distance where no pixel of another label exists along a row / in the image


def label_map(masks, valid):
  """int32 [H, W]: k + 1 on the pixels of instance k (the highest valid k where masks overlap), 0 elsewhere."""
  m = masks.astype(bool) & valid[:, None, None]
  index = jnp.arange(1, m.shape[0] + 1, dtype=jnp.int32)[:, None, None]
  return jnp.max(jnp.where(m, index, 0), axis=0)


_LINE_BATCH = 16  # image lines per step of the separable passes: memory O(16 max(H, W)^2)


def instance_distances(labels):
  """float32 [H, W]: each labelled pixel's Euclidean distance to the nearest pixel of another label (background
  included) inside the image; 0 on the background (label 0). 1e6 where the image holds a single label only."""
  h, w = labels.shape
  dy2 = jnp.square(jnp.arange(h, dtype=jnp.float32)[:, None] - jnp.arange(h, dtype=jnp.float32)[None, :])
  dx2 = jnp.square(jnp.arange(w, dtype=jnp.float32)[:, None] - jnp.arange(w, dtype=jnp.float32)[None, :])

  def column(col):  # g[y] = min over y' with col[y'] != col[y] of (y - y')^2
    return jnp.min(jnp.where(col[None, :] != col[:, None], dy2, _FAR), axis=1)

  g = jax.lax.map(column, labels.T, batch_size=min(_LINE_BATCH, w)).T

  def row(args):  # d2[x] = min over x' of (x - x')^2 + (g[x'] if same label else 0)
    lab, g_row = args
    return jnp.min(dx2 + jnp.where(lab[None, :] == lab[:, None], g_row[None, :], 0.0), axis=1)

  d2 = jax.lax.map(row, (labels, g), batch_size=min(_LINE_BATCH, h))
  return jnp.where(labels > 0, jnp.sqrt(jnp.minimum(d2, _FAR)), 0.0)


def _sobel(distance, labels):
  """(d/dy, d/dx) by scipy.ndimage.sobel (mode "reflect") of each pixel's own instance's distance transform: a
  neighbour of another label contributes 0, as it does in that instance's own transform."""
  h, w = labels.shape
  d = jnp.pad(distance, 1, mode="symmetric")
  lab = jnp.pad(labels, 1, mode="symmetric")

  def at(dy, dx):
    own = lab[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] == labels
    return jnp.where(own, d[1 + dy:1 + dy + h, 1 + dx:1 + dx + w], 0.0)

  smooth = {-1: 1.0, 0: 2.0, 1: 1.0}
  gy = sum(smooth[dx] * (at(1, dx) - at(-1, dx)) for dx in (-1, 0, 1))
  gx = sum(smooth[dy] * (at(dy, 1) - at(dy, -1)) for dy in (-1, 0, 1))
  return gy, gx


def targets(masks, valid, is_crowd=None):
  """The ground truth of one image from its padded instances.

  Args:
    masks: [M, H, W] instance masks; valid: [M] bool; is_crowd: [M] bool or None (crowds bound the other
      instances but carry no target).

  Returns a dict of: distance float32 [H, W]; level int32 [H, W] (0..15); direction float32 [H, W, 2] (unit
  vectors, 0 where undefined); object bool [H, W] (pixels of non-crowd instances); direction_valid bool [H, W]
  (object pixels with a non-zero gradient); weight float32 [H, W] (200 / sqrt(instance area), 0 off objects).
  """
  valid = valid.astype(bool)
  crowd = jnp.zeros_like(valid) if is_crowd is None else is_crowd.astype(bool)
  labels = label_map(masks, valid)
  distance = instance_distances(labels)
  gy, gx = _sobel(distance, labels)
  norm = jnp.sqrt(gy * gy + gx * gx)
  target_instance = valid & ~crowd
  is_object = (labels > 0) & jnp.concatenate([jnp.zeros(1, bool), target_instance])[labels]
  area = jnp.zeros(masks.shape[0] + 1, jnp.float32).at[labels].add(1.0)
  weight = jnp.where(is_object, INSTANCE_WEIGHT / jnp.sqrt(jnp.maximum(area[labels], 1.0)), 0.0)
  direction_valid = is_object & (norm > 1e-6)
  direction = jnp.where(direction_valid[..., None], jnp.stack([gy, gx], -1) / jnp.maximum(norm, 1e-6)[..., None],
                        0.0)
  return {"distance": distance, "level": quantize(distance), "direction": direction, "object": is_object,
          "direction_valid": direction_valid, "weight": weight}


def quantize(distance):
  """The energy level int32 of each distance: the number of bin edges b_1..b_15 it exceeds (level 0: d <= 1)."""
  edges = jnp.asarray(LEVEL_BOUNDARIES[1:], jnp.float32)
  return jnp.sum(distance[..., None] > edges, axis=-1).astype(jnp.int32)


def unit_vectors(v):
  """v / |v| over the last axis, as tf.nn.l2_normalize (the norm floored at 1e-6; finite gradients at v = 0)."""
  return v * jax.lax.rsqrt(jnp.maximum(jnp.sum(v * v, axis=-1, keepdims=True), 1e-12))


def angular_loss(predicted, target, weight):
  """sum_p weight_p arccos(<u_pred, u_gt>)^2 over [..., 2] vectors (both normalised, scaled by 0.999999)."""
  normalise = lambda v: 0.999999 * unit_vectors(v)
  cosine = jnp.sum(normalise(predicted) * normalise(target), axis=-1)
  return jnp.sum(weight * jnp.square(jnp.arccos(cosine)))


def watershed_loss(logits, level, weight, level_weights=LEVEL_WEIGHTS):
  """-sum_p weight_p sum_k c_k ((1 - t) log(1 - y) + t log y) of logits [..., K] and levels [...]."""
  log_y = jax.nn.log_softmax(logits, axis=-1)
  log_y = jnp.maximum(log_y, np.log(LOG_FLOOR))
  log_1my = jnp.log(jnp.maximum(-jnp.expm1(log_y), LOG_FLOOR))  # log(1 - y), accurate for small y
  t = jax.nn.one_hot(level, logits.shape[-1], dtype=log_y.dtype)
  c = jnp.asarray(level_weights, log_y.dtype)
  per_pixel = jnp.sum(c * ((1.0 - t) * log_1my + t * log_y), axis=-1)
  return -jnp.sum(weight * per_pixel)


def grow(labels, region, steps):
  """`steps` rounds in which every unlabelled pixel of `region` takes the largest label among its 8 neighbours
  (scipy.ndimage.grey_dilation with a 3 x 3 square, constant 0 outside, kept where it was 0 and in the region)."""
  h, w = labels.shape

  def body(_, lab):
    padded = jnp.pad(lab, 1)
    nb = jnp.max(jnp.stack([padded[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] for dy in (-1, 0, 1)
                            for dx in (-1, 0, 1)]), axis=0)
    return jnp.where((lab == 0) & region, nb, lab)

  return jax.lax.fori_loop(0, steps, body, labels)


def grow_steps(cut_level):
  """How far the cut shrinks objects: levels <= cut_level hold distances up to b_{cut+1}, so instances grow back
  by that many pixels."""
  return int(np.ceil(LEVEL_BOUNDARIES[cut_level + 1])) if cut_level + 1 < NUM_LEVELS else int(LEVEL_BOUNDARIES[-1])


def cut(level, foreground, cut_level, min_area, max_instances, connected_components):
  """Instances of one image from its energy levels int [H, W] and foreground bool [H, W] (Sec. 3.4).

  The 8-connected components of {level > cut_level} within the foreground with at least `min_area` pixels are the
  instance cores; each grows back to the foreground pixels it lost to the cut (`grow` by `grow_steps(cut_level)`).
  The `max_instances` largest cores (by area, ties to the earlier component) are kept.

  Returns labels int32 [H, W] (components numbered as `connected_components`, 0 elsewhere), ids int32 [K] (the
  kept components, largest first) and their validity bool [K].
  """
  core = (level > cut_level) & foreground
  labels, _ = connected_components(core, 8)
  h, w = labels.shape
  area = jnp.zeros(h * w + 1, jnp.int32).at[labels].add(1).at[0].set(0)
  area = jnp.where(area >= min_area, area, 0)
  labels = jnp.where(area[labels] > 0, labels, 0)
  labels = grow(labels, foreground, grow_steps(cut_level))
  top, ids = jax.lax.top_k(area, max_instances)
  return labels, ids.astype(jnp.int32), top > 0
