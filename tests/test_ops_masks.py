"""segjax.ops.masks against torchvision (paste_masks_in_image, masks_to_boxes, project_masks_on_boxes) and
detectron2's paste formula in float64 NumPy."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segjax.ops import masks as masks_lib
from references import optional, requires_torch, torch, torchvision

roi_heads = getattr(optional("torchvision.models.detection"), "roi_heads", None)

HEIGHT, WIDTH = 37, 45


def random_boxes(rng, k):
  """Boxes of assorted sizes meeting the image (torchvision fails on boxes wholly outside it), some
  crossing its border, and one thinner than a pixel."""
  xy = rng.uniform(-6, 30, (k, 2))
  wh = rng.uniform(8, 30, (k, 2))
  xy[0], wh[0] = (10.2, 12.1), (0.4, 0.7)
  return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


@functools.partial(jax.jit, static_argnames=("height", "width", "padding", "style"))
def paste_jit(masks, boxes, height, width, padding=1, style="torchvision"):
  return masks_lib.paste_masks_in_image(masks, boxes, height, width, padding, style)


@requires_torch
@pytest.mark.parametrize("padding", [0, 1, 2])
def test_paste_masks_equals_torchvision(padding):
  rng = np.random.default_rng(padding)
  masks = rng.uniform(0, 1, (7, 14, 14)).astype(np.float32)
  boxes = random_boxes(rng, 7)
  ref = roi_heads.paste_masks_in_image(torch.tensor(masks)[:, None], torch.tensor(boxes), (HEIGHT, WIDTH),
                                       padding)[:, 0].numpy()
  ours = np.asarray(paste_jit(masks, boxes, HEIGHT, WIDTH, padding))
  assert ours.shape == (7, HEIGHT, WIDTH) and (ref > 0).any(axis=(1, 2)).all()
  assert (boxes < 0).any() and (boxes[:, 2:] > [WIDTH, HEIGHT]).any()
  np.testing.assert_allclose(ours, ref, rtol=0, atol=2e-6)


def test_paste_masks_outside_the_image_are_empty():
  boxes = np.float32([[-30, 5, -10, 20], [5, 40, 20, 60]])
  out = paste_jit(np.ones((2, 6, 6), np.float32), boxes, HEIGHT, WIDTH)
  assert not np.asarray(out).any()


@requires_torch
def test_paste_masks_gradient_equals_torch_autograd_and_compiles_once():
  rng = np.random.default_rng(3)
  masks = rng.uniform(0, 1, (4, 10, 10)).astype(np.float32)
  boxes = random_boxes(rng, 4)
  weight = rng.normal(size=(4, HEIGHT, WIDTH)).astype(np.float32)
  t_masks = torch.tensor(masks, requires_grad=True)
  ref = roi_heads.paste_masks_in_image(t_masks[:, None], torch.tensor(boxes), (HEIGHT, WIDTH), 1)[:, 0]
  (ref * torch.tensor(weight)).sum().backward()
  grad = jax.grad(lambda m: jnp.sum(paste_jit(m, boxes, HEIGHT, WIDTH) * weight))(masks)
  np.testing.assert_allclose(np.asarray(grad), t_masks.grad.numpy(), rtol=1e-5, atol=1e-5)
  traces = []

  @jax.jit
  def f(masks, boxes):
    traces.append(1)
    return masks_lib.paste_masks_in_image(masks, boxes, HEIGHT, WIDTH)

  for _ in range(2):
    masks, boxes = rng.uniform(0, 1, (4, 10, 10)).astype(np.float32), random_boxes(rng, 4)
    ref = roi_heads.paste_masks_in_image(torch.tensor(masks)[:, None], torch.tensor(boxes), (HEIGHT, WIDTH))
    np.testing.assert_allclose(np.asarray(f(masks, boxes)), ref[:, 0].numpy(), atol=2e-6)
  assert len(traces) == 1


def detectron2_paste_float64(masks, boxes, height, width):
  """detectron2 layers.mask_ops._do_paste_mask (CPU: one mask at a time, skip_empty) before thresholding:
  grid_sample(bilinear, zeros, align_corners=False) at pixel centres of the per-mask region."""
  k, m, _ = masks.shape
  out = np.zeros((k, height, width))
  for n in range(k):
    x0, y0, x1, y1 = map(float, boxes[n])
    for y in range(max(math.floor(y0) - 1, 0), min(math.ceil(y1) + 1, height)):
      for x in range(max(math.floor(x0) - 1, 0), min(math.ceil(x1) + 1, width)):
        gx = (x + 0.5 - x0) / (x1 - x0) * 2 - 1
        gy = (y + 0.5 - y0) / (y1 - y0) * 2 - 1
        sx, sy = ((gx + 1) * m - 1) / 2, ((gy + 1) * m - 1) / 2
        ix, iy = math.floor(sx), math.floor(sy)
        value = 0.0
        for dy in (0, 1):
          for dx in (0, 1):
            if 0 <= iy + dy < m and 0 <= ix + dx < m:
              wy = (sy - iy) if dy else (iy + 1 - sy)
              wx = (sx - ix) if dx else (ix + 1 - sx)
              value += wy * wx * masks[n, iy + dy, ix + dx]
        out[n, y, x] = value
  return out


def test_paste_masks_detectron2_matches_its_formula():
  rng = np.random.default_rng(4)
  masks = rng.uniform(0, 1, (4, 9, 9)).astype(np.float32)
  boxes = random_boxes(rng, 4)
  boxes[1] = (2.0, 3.0, 40.0, 33.0)  # wide enough that detectron2's region cut matters
  ours = np.asarray(paste_jit(masks, boxes, HEIGHT, WIDTH, style="detectron2"))
  np.testing.assert_allclose(ours, detectron2_paste_float64(masks, boxes, HEIGHT, WIDTH), rtol=0, atol=1e-5)


@requires_torch
def test_masks_to_boxes_equals_torchvision():
  rng = np.random.default_rng(5)
  masks = rng.uniform(0, 1, (5, 20, 30)) > 0.97
  masks[2] = False  # empty -> zeros
  masks[3] = False
  masks[3, 7, 4] = True  # a single pixel
  ours = np.asarray(jax.jit(masks_lib.masks_to_boxes)(masks))
  np.testing.assert_array_equal(ours, torchvision.ops.masks_to_boxes(torch.tensor(masks)).numpy())


def test_mask_ops_reject_bad_shapes():
  with pytest.raises(ValueError, match=r"masks must have shape \[K, m, m\]"):
    masks_lib.paste_masks_in_image(np.zeros((2, 4, 5)), np.zeros((2, 4)), 10, 10)
  with pytest.raises(ValueError, match=r"boxes must have shape \(2, 4\)"):
    masks_lib.paste_masks_in_image(np.zeros((2, 4, 4)), np.zeros((3, 4)), 10, 10)
  with pytest.raises(ValueError, match="style"):
    masks_lib.paste_masks_in_image(np.zeros((2, 4, 4)), np.zeros((2, 4)), 10, 10, style="mmdet")
  with pytest.raises(ValueError, match=r"masks must have shape \[K, H, W\]"):
    masks_lib.masks_to_boxes(np.zeros((4, 4)))


@requires_torch
def test_roi_mask_targets_equal_torchvision_project_masks_on_boxes():
  rng = np.random.default_rng(6)
  m = 7
  gt_masks = rng.uniform(0, 1, (3, 40, 48)) > 0.5
  # Sides from under 1 (read as 1) to 6m: 1 to 6 samples per bin along an axis, unequal on the two axes; some
  # RoIs reach past the masks' edges, where samples in [-1, 0] and [side - 1, side] read the edge and the rest 0.
  xy = rng.uniform(-6, 40, (40, 2))
  rois = np.concatenate([xy, xy + rng.uniform(0.2, 6 * m, (40, 2))], axis=1).astype(np.float32)
  rois[:4] = [[0, 0, 48, 40], [-3, -2, 51, 43], [10, 10, 10.5, 30], [2.25, 4.5, 16.25, 18.5]]
  matched = rng.integers(0, 3, 40).astype(np.int32)
  ref = roi_heads.project_masks_on_boxes(torch.tensor(gt_masks), torch.tensor(rois), torch.tensor(matched), m)
  ours = np.asarray(jax.jit(masks_lib.roi_mask_targets, static_argnums=3)(gt_masks, rois, matched, m))
  np.testing.assert_allclose(ours, ref.numpy(), rtol=0, atol=1e-5)


def test_mask_iou_equals_numpy_and_empty_pairs_give_zero():
  from segjax.ops.masks import mask_iou  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(5)
  masks = (rng.random((5, 36)) < 0.3).astype(np.float32)
  masks[4] = 0  # empty
  got = np.asarray(mask_iou(masks))
  for i in range(5):
    for j in range(5):
      union = np.logical_or(masks[i], masks[j]).sum()
      want = np.logical_and(masks[i], masks[j]).sum() / union if union else 0.0
      assert abs(got[i, j] - want) < 1e-6, (i, j)


def test_box_masks_fill_the_pixels_whose_centres_lie_in_the_box():
  """Pixel (y, x) is 1 where x1 <= x + 0.5 < x2 and y1 <= y + 0.5 < y2, by a NumPy loop over the pixels; boxes of
  `random_boxes` (some crossing the border, one thinner than a pixel) in a [2, 3] batch."""
  boxes = random_boxes(np.random.default_rng(3), 6).reshape(2, 3, 4)
  ours = np.asarray(masks_lib.box_masks(jnp.asarray(boxes), HEIGHT, WIDTH))
  assert ours.shape == (2, 3, HEIGHT, WIDTH)
  for index in np.ndindex(2, 3):
    x1, y1, x2, y2 = boxes[index]
    expected = [[float(x1 <= x + 0.5 < x2 and y1 <= y + 0.5 < y2) for x in range(WIDTH)] for y in range(HEIGHT)]
    np.testing.assert_array_equal(ours[index], expected)
  assert 0 < ours.sum() < ours.size
