"""Point sampling of feature maps and PointRend's point selection (Kirillov et al. 2020, Sec. 3.1 and 3.3).

Points are (x, y) in [0, 1] x [0, 1] of a map (or of a box), as detectron2's PointRend project
(projects/PointRend/point_rend/point_features.py): (0, 0) is the map's top-left corner, not its first pixel's
centre. All shapes are static: every RoI gets the same number of points.
"""
import jax
import jax.numpy as jnp

from segjax.ops.gather import weighted_gather


def point_sample(features, points):
  """Bilinear samples of features [N, H, W, C] at points [N, P, 2] -> [N, P, C], zero outside the map.

  detectron2's `point_sample`: torch.nn.functional.grid_sample(features, 2 * points - 1, align_corners=False,
  padding_mode="zeros"), i.e. point (x, y) reads pixel coordinates (x * W - 0.5, y * H - 0.5) and each of its four
  taps outside the map contributes 0. Differentiable w.r.t. features and points (a tap's weight is piecewise
  linear in the point, as grid_sample's gradient).
  """
  features, points = jnp.asarray(features), jnp.asarray(points)
  if features.ndim != 4:
    raise ValueError(f"point_sample: features must be [N, H, W, C]; got shape {features.shape}")
  if points.ndim != 3 or points.shape[-1] != 2 or points.shape[0] != features.shape[0]:
    raise ValueError(f"point_sample: points must be [N, P, 2] with N = {features.shape[0]}; got {points.shape}")
  n, h, w, c = features.shape
  p = points.shape[1]
  dtype = jnp.promote_types(points.dtype, jnp.float32)
  x = points[..., 0].astype(dtype) * w - 0.5
  y = points[..., 1].astype(dtype) * h - 0.5
  x0, y0 = jnp.floor(x), jnp.floor(y)
  fx, fy = x - x0, y - y0
  x0, y0 = x0.astype(jnp.int32), y0.astype(jnp.int32)
  # The four taps (y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1) of each point: [N, P, 4].
  ty = jnp.stack([y0, y0, y0 + 1, y0 + 1], -1)
  tx = jnp.stack([x0, x0 + 1, x0, x0 + 1], -1)
  weight = jnp.stack([(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx], -1)
  inside = (ty >= 0) & (ty < h) & (tx >= 0) & (tx < w)
  weight = jnp.where(inside, weight, 0.0)
  index = (jnp.arange(n, dtype=jnp.int32)[:, None, None] * h + jnp.clip(ty, 0, h - 1)) * w + jnp.clip(tx, 0, w - 1)
  out = weighted_gather(features.reshape(n * h * w, c), index.reshape(n * p, 4), weight.reshape(n * p, 4))
  return out.reshape(n, p, c)


def regular_grid_points(side):
  """The side x side cell centres of [0, 1]^2 as points [side * side, 2], x fastest (detectron2's
  generate_regular_grid_point_coords): point i * side + j is ((j + 0.5) / side, (i + 0.5) / side)."""
  centres = (jnp.arange(side, dtype=jnp.float32) + 0.5) / side
  return jnp.stack(jnp.meshgrid(centres, centres, indexing="xy"), -1).reshape(-1, 2)


def boxes_to_image_points(boxes, points):
  """Box-relative points [R, P, 2] of boxes [R, 4] (x1, y1, x2, y2) -> image pixel coordinates [R, P, 2]
  (detectron2's get_point_coords_wrt_image)."""
  return boxes[:, None, :2] + points * (boxes[:, None, 2:] - boxes[:, None, :2])


def uncertainty(logits):
  """PointRend's uncertainty of a foreground logit: -|logit| (detectron2's calculate_uncertainty), largest at 0."""
  return -jnp.abs(logits)


def select_uncertain_points(logits, candidates, permutation, num_points, importance_sample_ratio):
  """PointRend's training points from given random draws (detectron2's get_uncertain_point_coords_with_randomness).

  Args:
    logits: [R, H, W] coarse logits of each RoI's class.
    candidates: [R, k * N, 2] the oversampled uniform points in [0, 1]^2.
    permutation: [k * N - beta * N] a permutation (one for all RoIs, as detectron2's randperm).
    num_points: N; importance_sample_ratio: beta.

  Returns:
    [R, N, 2]: the beta * N candidates of largest uncertainty (-|logit| bilinearly sampled at the candidate, in
    descending order), then N - beta * N of the others, those at `permutation`'s first positions when the others
    are sorted by ascending uncertainty.
  """
  num_uncertain = int(importance_sample_ratio * num_points)
  num_random = num_points - num_uncertain
  u = uncertainty(point_sample(logits[..., None], candidates)[..., 0])  # [R, kN]
  take = lambda index: jnp.take_along_axis(candidates, index[..., None], 1)
  _, top = jax.lax.top_k(u, num_uncertain)
  if num_random == 0:
    return take(top)
  _, rest = jax.lax.top_k(-u, candidates.shape[1] - num_uncertain)  # ascending uncertainty
  return jnp.concatenate([take(top), take(rest[:, permutation[:num_random]])], 1)


def uncertain_points_with_randomness(key, logits, num_points, oversample_ratio, importance_sample_ratio):
  """`select_uncertain_points` on k * N uniform candidates [R, k * N, 2] and a uniform permutation drawn from
  `key` (Sec. 3.3: k = 3, beta = 0.75 in the paper's instance segmentation models)."""
  if oversample_ratio < 1 or not 0 <= importance_sample_ratio <= 1:
    raise ValueError(f"oversample_ratio must be >= 1 and importance_sample_ratio in [0, 1]; got "
                     f"{oversample_ratio}, {importance_sample_ratio}")
  num_sampled = int(num_points * oversample_ratio)
  point_key, perm_key = jax.random.split(key)
  candidates = jax.random.uniform(point_key, (logits.shape[0], num_sampled, 2), jnp.float32)
  permutation = jax.random.permutation(perm_key, num_sampled - int(importance_sample_ratio * num_points))
  return select_uncertain_points(logits, candidates, permutation, num_points, importance_sample_ratio)


def uncertain_points_on_grid(uncertainty_map, num_points):
  """The num_points most uncertain cells of uncertainty_map [R, H, W] (detectron2's
  get_uncertain_point_coords_on_grid): flat indices [R, P] into H * W, by descending uncertainty, and their
  cell centres [R, P, 2] as (x, y) in [0, 1]^2; P = min(num_points, H * W)."""
  r, h, w = uncertainty_map.shape
  _, index = jax.lax.top_k(uncertainty_map.reshape(r, h * w), min(num_points, h * w))
  points = jnp.stack([(index % w + 0.5) / w, (index // w + 0.5) / h], -1).astype(jnp.float32)
  return index, points
