"""The instance CRF of the Dynamically Instantiated Network (Arnab & Torr, CVPR 2017, Sec. 3.3-3.4).

Given a semantic segmentation Q [H, W, K + 1] (class 0 background, class l the thing label l) and D detections
(box B_k, thing label l_k, score s_k), every pixel i takes one of D + 1 labels: 0 background, k the k-th detection.
The energy is E(v) = sum_i U_i(v_i) + sum_{i < j} P(v_i, v_j), with the unary

  U_i(k) = -ln[w_B psi_Box(k) + w_G psi_Global(k) + w_S psi_Shape(k)]
    psi_Box(k)    = [i in B_k] s_k Q_i(l_k)          (a pixel inside a confident box of its class)
    psi_Global(k) = Q_i(l_k)                          (every pixel, box or not: a box that cuts its object)
    psi_Shape(k)  = [i in B_k] s_k Q_i(l_k) T_k(i)    (T_k the class's shape template warped into B_k)

and for the background every term is Q_i(0) (the background read as a detection of the whole image with score 1 and
a template of ones), so U_i(0) = -ln[(w_B + w_G + w_S) Q_i(0)]. A pixel is in B_k where its centre lies in
[x1, x2) x [y1, y2) (`segjax.ops.masks.box_masks`). Where the class has several templates, T_k is the one whose warp
into B_k has the highest normalised cross-correlation with Q(l_k) inside the box. The pairwise term is the
DenseCRF's Potts model over Gaussian (positions) and bilateral (positions, colours) kernels, and mean field on the
D + 1 labels is `segjax.ops.crf`'s (`crf_messages`, normalised "after" as CRF-as-RNN), unrolled so that the weights
train end to end. Padded detections (valid False) get logits -1e9: no pixel takes them.

The paper's text was not available here: the three terms follow the task's statement of Sec. 3.3 (box term
-ln(w_B Q_i(l_k) s_k), the global term w_G Q_i(l_k), a shape template warped into the box with w_S) and are
combined inside one logarithm; the background's terms and the shape term's score factor are this module's reading,
unverified against the paper.

Training loss (Sec. 3.4): instance labels are a permutation-invariant set, so the ground-truth instances are matched
to the detections by the Hungarian algorithm (`segjax.ops.assignment.linear_sum_assignment`) on the relaxed IoU of
each detection's marginal map with each ground-truth mask (`segjax.ops.set_losses.soft_iou`), held fixed in the
gradient; the per-pixel cross entropy then takes each matched instance's pixels to its detection's label, the
others to the background; crowds and unmatched instances (no detection stands for them) are ignored.
"""
import jax
import jax.numpy as jnp

from segjax.constants import IGNORE_LABEL
from segjax.ops.assignment import linear_sum_assignment
from segjax.ops.crf import crf_messages
from segjax.ops.masks import box_masks
from segjax.ops.set_losses import soft_iou

INVALID_LOGIT = -1e9  # the logit of a padded detection's label: exp underflows to 0 in the softmax
EPS = 1e-8  # inside the logarithm: a pixel where every term is 0 gets energy -ln(EPS)


def _tent_weights(lo, hi, length, size):
  """[length, size]: bilinear weights (align_corners False, edge-clamped) of the pixel centres t + 0.5 of an axis
  of `length` pixels on a `size`-cell grid stretched over [lo, hi)."""
  centres = jnp.arange(length, dtype=lo.dtype) + 0.5
  u = (centres - lo) / jnp.maximum(hi - lo, 1e-6) * size - 0.5
  u = jnp.clip(u, 0.0, size - 1.0)
  return jnp.maximum(0.0, 1.0 - jnp.abs(u[:, None] - jnp.arange(size, dtype=lo.dtype)[None, :]))


def warp_templates(templates, boxes, height, width):
  """templates [D, M, M] in [0, 1], boxes [D, 4] (x1, y1, x2, y2) -> [D, height, width]: each template resampled
  bilinearly over its box (the M x M grid stretched over [x1, x2) x [y1, y2)), 0 outside the box."""
  m = templates.shape[-1]
  rows = jax.vmap(lambda b: _tent_weights(b[1], b[3], height, m))(boxes)  # [D, H, M]
  cols = jax.vmap(lambda b: _tent_weights(b[0], b[2], width, m))(boxes)  # [D, W, M]
  warped = jnp.einsum("dym,dmn,dxn->dyx", rows, templates, cols)
  return warped * box_masks(boxes, height, width).astype(warped.dtype)


def select_templates(templates, q, boxes, labels):
  """The warped template of each detection: templates [K, T, M, M] in [0, 1] (T per thing class), semantic
  probabilities q [H, W, K + 1], boxes [D, 4], labels [D] in 1..K -> [D, H, W], for each detection the one of its
  class's T templates whose warp into the box has the highest normalised cross-correlation with q(l_k) over the
  box (a choice held fixed in the gradient; T = 1: that template)."""
  height, width = q.shape[:2]
  num_templates = templates.shape[1]
  per_detection = templates[jnp.clip(labels - 1, 0, templates.shape[0] - 1)]  # [D, T, M, M]
  d = boxes.shape[0]
  warped = warp_templates(per_detection.reshape(d * num_templates, *per_detection.shape[2:]),
                          jnp.repeat(boxes, num_templates, 0), height, width).reshape(d, num_templates, height, width)
  if num_templates == 1:
    return warped[:, 0]
  inside = box_masks(boxes, height, width)[:, None]  # [D, 1, H, W]
  area = jnp.maximum(inside.sum((-2, -1), keepdims=True), 1.0)
  target = jnp.moveaxis(q[..., labels], -1, 0)[:, None]  # [D, 1, H, W]
  centred = lambda x: (x - (x * inside).sum((-2, -1), keepdims=True) / area) * inside
  a, b = centred(jax.lax.stop_gradient(warped)), centred(jax.lax.stop_gradient(target))
  ncc = (a * b).sum((-2, -1)) / jnp.sqrt(jnp.maximum((a * a).sum((-2, -1)) * (b * b).sum((-2, -1)), 1e-12))
  best = jnp.argmax(ncc, axis=1)  # [D]
  return jnp.take_along_axis(warped, best[:, None, None, None], 1)[:, 0]


def instance_unary_terms(q, boxes, labels, scores, shapes):
  """(psi_Box, psi_Global, psi_Shape), each [H, W, D + 1] (label 0 the background), of semantic probabilities
  q [H, W, K + 1], boxes [D, 4], thing labels [D] in 1..K, scores [D] and warped templates shapes [D, H, W]."""
  height, width = q.shape[:2]
  q_det = q[..., labels]  # [H, W, D]: Q_i(l_k)
  inside = jnp.moveaxis(box_masks(boxes, height, width), 0, -1)  # [H, W, D]
  background = q[..., :1]
  box = inside * scores * q_det
  shape = box * jnp.moveaxis(shapes, 0, -1)
  with_background = lambda x: jnp.concatenate([background, x], -1)
  return with_background(box), with_background(q_det), with_background(shape)


def instance_unary(q, boxes, labels, scores, valid, shapes, w_box, w_global, w_shape):
  """Unary logits -U [H, W, D + 1] of the instance CRF (the module docstring's U), INVALID_LOGIT for the labels of
  padded detections (valid [D] False)."""
  box, global_, shape = instance_unary_terms(q, boxes, labels, scores, shapes)
  logits = jnp.log(jnp.maximum(w_box * box + w_global * global_ + w_shape * shape, EPS))
  label_valid = jnp.concatenate([jnp.ones((1,), bool), valid])
  return jnp.where(label_valid, logits, INVALID_LOGIT)


def instance_mean_field(unary_logits, image, label_valid, *, num_iterations, w_bilateral, w_spatial, theta_alpha,
                        theta_beta, theta_gamma, filter="lattice", lattice_capacity=None):
  """Mean field of the instance CRF, unrolled: unary logits [N, H, W, L] (L = D + 1), image [N, H, W, 3] in 0..255,
  label_valid [N, L] -> logits [N, H, W, L]; Q = softmax of the result.

  logits_0 = unary; logits_{t+1} = unary + w_b K_b Q_t / K_b 1 + w_s K_s Q_t / K_s 1 with Q_t = softmax(logits_t):
  Krähenbühl & Koltun's Potts update (the sum over the other labels cancels in the softmax), the step of
  `segjax.ops.crf.dense_crf(..., normalization="after")` on the same unaries. The weights may be traced values (the
  network's parameters). Labels not valid stay at INVALID_LOGIT; an image whose lattice overflows gets NaN."""
  n, h, w, num_labels = unary_logits.shape
  dtype = jnp.result_type(unary_logits, jnp.float32)
  bilateral, spatial, overflow = crf_messages(
      jax.lax.stop_gradient(image.astype(dtype)), theta_alpha=theta_alpha, theta_beta=theta_beta,
      theta_gamma=theta_gamma, w_bilateral=w_bilateral, w_spatial=w_spatial, normalization="after", filter=filter,
      lattice_capacity=lattice_capacity)
  unary = unary_logits.astype(dtype).reshape(n, h * w, num_labels)
  keep = label_valid[:, None, :]

  def iteration(_, logits):
    q = jax.nn.softmax(logits, -1)
    return jnp.where(keep, unary + bilateral(q) + spatial(q), INVALID_LOGIT)

  logits = jax.lax.fori_loop(0, num_iterations, iteration, unary)
  logits = jnp.where(overflow[:, None, None], jnp.nan, logits)
  return logits.reshape(n, h, w, num_labels)


def matched_instance_targets(probabilities, detection_valid, gt_masks, gt_valid, gt_crowd):
  """The per-pixel instance labels of one image's loss: probabilities [P, D + 1] (the CRF's marginals, P pixels),
  detection_valid [D], ground-truth masks [M, P] in {0, 1}, gt_valid and gt_crowd [M] -> (targets int32 [P]: 0
  background, k + 1 the pixels of the instance matched to detection k, IGNORE_LABEL on crowds and on instances no
  detection was matched to; match bool [M, D]).

  The matching maximises the summed relaxed IoU between the detections' marginal maps and the masks (Hungarian,
  on the stopped gradient); padded ground truth costs nothing, a padded detection costs more than any real one."""
  num_gt, num_det = gt_masks.shape[0], detection_valid.shape[0]
  masks = gt_masks.astype(probabilities.dtype)
  iou = soft_iou(jax.lax.stop_gradient(probabilities[:, 1:]).T, masks)  # [D, M]
  real = gt_valid & ~gt_crowd
  cost = jnp.where(real[:, None], jnp.where(detection_valid[None, :], -iou.T, 1.0), 0.0)
  rows, cols, _ = linear_sum_assignment(cost)
  match = jnp.zeros((num_gt, num_det), bool).at[rows, cols].set(True) & real[:, None] & detection_valid[None, :]
  code = jnp.where(match.any(1), jnp.argmax(match, 1) + 1, IGNORE_LABEL)  # [M]
  code = jnp.where(gt_crowd & gt_valid, IGNORE_LABEL, code)
  code = jnp.where(gt_valid, code, 0)
  targets = jnp.max(jnp.where(masks > 0, code[:, None], 0), axis=0) if num_gt else jnp.zeros(masks.shape[1:], int)
  return targets.astype(jnp.int32), match
