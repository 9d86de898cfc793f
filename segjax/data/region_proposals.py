"""Stand-in region proposals (masks) for SDS (segjax.models.sds) where no MCG candidates exist.

SDS (Hariharan et al. 2014, Sec. 3.1) classifies MCG's ~2000 region candidates per image, masks rather than boxes.
This stand-in, for the synthetic data set and tests only, gives `count` masks per image, the region counterpart of
segjax/data/proposals.py's boxes: the first half made from the image's valid non-crowd ground-truth masks (drawn
uniformly), each moved by N(0, s) times its box's width and height, then dilated or eroded (each half the time) by
round(s / 2 x its box's larger side) pixels (at least one), s drawn per mask from JITTER_SCALES (near copies, masks
that leak into the background or lose their boundary); a quarter of those are also cut by a random line
through the mask's centre (a part of the object) and another quarter joined with a second ground-truth mask (two
objects as one region, what a bottom-up merge gives); the rest random ellipses anywhere, centre uniform in the
image, axes log-uniform in [MIN_SIDE, MAX_SIDE] of the image's side, any orientation. A mask left empty is invalid.
An image without valid masks gets ellipses only. Drawn from (image id, 0x5EED): an image gets the same proposals
(relative to its masks) in every epoch. Built from the ground truth, they make a model's scores on the evaluation
split optimistic: not comparable with MCG's numbers.
"""
import numpy as np
from scipy import ndimage

JITTER_SCALES = (0.05, 0.15, 0.4)
MIN_SIDE, MAX_SIDE = 0.05, 0.8
SEED_TAG = 0x5EED


def _shifted(mask, dy, dx):
  """mask moved by (dy, dx) whole pixels, zero where it leaves the image."""
  out = np.zeros_like(mask)
  h, w = mask.shape
  ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
  xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
  if h - abs(dy) > 0 and w - abs(dx) > 0:
    out[yd, xd] = mask[ys, xs]
  return out


def _ellipse(rng, h, w):
  cy, cx = rng.uniform(0, h), rng.uniform(0, w)
  ay, ax = np.exp(rng.uniform(np.log(MIN_SIDE), np.log(MAX_SIDE), 2)) * np.array([h, w]) / 2
  angle = rng.uniform(0, np.pi)
  y, x = np.mgrid[:h, :w] + 0.5
  u = (x - cx) * np.cos(angle) + (y - cy) * np.sin(angle)
  v = -(x - cx) * np.sin(angle) + (y - cy) * np.cos(angle)
  return ((u / ax) ** 2 + (v / ay) ** 2 <= 1).astype(np.uint8)


def _jittered(rng, masks, pick):
  mask = masks[pick]
  ys, xs = np.nonzero(mask)
  bh, bw = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
  s = JITTER_SCALES[rng.integers(len(JITTER_SCALES))]
  dy, dx = np.round(rng.normal(0, s, 2) * np.array([bh, bw])).astype(int)
  mask = _shifted(mask, int(dy), int(dx))
  radius = max(1, int(round(s / 2 * max(bh, bw))))
  grow = rng.random() < 0.5
  if mask.any():
    mask = (ndimage.binary_dilation if grow else ndimage.binary_erosion)(mask, iterations=radius).astype(np.uint8)
  kind = rng.random()
  if kind < 0.25 and mask.any():  # a part: one side of a line through the centre
    cy, cx = ys.mean() + dy, xs.mean() + dx
    angle = rng.uniform(0, 2 * np.pi)
    y, x = np.mgrid[:mask.shape[0], :mask.shape[1]] + 0.5
    mask = mask * (((x - cx) * np.cos(angle) + (y - cy) * np.sin(angle)) >= 0)
  elif kind < 0.5 and len(masks) > 1:  # a merge with another object
    mask = mask | masks[(pick + rng.integers(1, len(masks))) % len(masks)]
  return mask.astype(np.uint8)


def region_proposals(masks, valid, image_hw, count, image_id):
  """The stand-in of the module docstring: masks uint8 [M, H, W] with valid [M] (non-crowd, non-padding), image_hw
  (H, W), image_id int -> (proposals uint8 [count, H, W], proposal_valid bool [count])."""
  h, w = image_hw
  masks = np.asarray(masks, np.uint8)[np.asarray(valid, bool)]
  masks = masks.reshape(-1, h, w)
  masks = masks[masks.reshape(len(masks), h * w).any(1)]
  rng = np.random.default_rng([max(int(image_id), 0), SEED_TAG])
  jittered = count // 2 if len(masks) else 0
  out = np.zeros((count, h, w), np.uint8)
  for i in range(count):
    out[i] = _jittered(rng, masks, int(rng.integers(len(masks)))) if i < jittered else _ellipse(rng, h, w)
  return out, out.reshape(count, h * w).any(1)
