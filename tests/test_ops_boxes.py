"""segjax.ops.boxes and segjax.ops.anchors against torchvision (and detectron2's formula in float64 NumPy)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segjax.ops import anchors as anchors_lib
from segjax.ops import boxes as boxes_lib
from references import optional, requires_torch, torch, torchvision

det_utils = optional("torchvision.models.detection._utils")
AnchorGenerator = getattr(optional("torchvision.models.detection.anchor_utils"), "AnchorGenerator", None)
ImageList = getattr(optional("torchvision.models.detection.image_list"), "ImageList", None)


def random_boxes(rng, n, size=100.0, degenerate=0):
  """[n, 4] float32 boxes; the first `degenerate` have zero width."""
  xy = rng.uniform(0, size, (n, 2))
  wh = rng.uniform(1, size / 2, (n, 2))
  wh[:degenerate, 0] = 0
  return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


box_iou_jit = jax.jit(boxes_lib.box_iou)
giou_jit = jax.jit(boxes_lib.generalized_box_iou)


@requires_torch
@pytest.mark.parametrize("n,m", [(5, 7), (33, 12)])
def test_box_iou_and_area_equal_torchvision_bitwise(n, m):
  rng = np.random.default_rng(n)
  a, b = random_boxes(rng, n, degenerate=2), random_boxes(rng, m, degenerate=1)
  a[1] = a[0]  # two identical zero-area boxes: 0 / 0 = NaN in torchvision
  ours = np.asarray(box_iou_jit(a, b))
  ref = torchvision.ops.box_iou(torch.tensor(a), torch.tensor(b)).numpy()
  np.testing.assert_array_equal(ours, ref)  # NaNs compare equal here
  self_iou = np.asarray(box_iou_jit(a, a))
  assert np.isnan(self_iou[0, 1])
  ref_area = torchvision.ops.box_area(torch.tensor(a)).numpy()
  np.testing.assert_array_equal(np.asarray(boxes_lib.box_area(a)), ref_area)


def test_box_iou_leading_batch_dims():
  rng = np.random.default_rng(0)
  a, b = random_boxes(rng, 12).reshape(2, 6, 4), random_boxes(rng, 10).reshape(2, 5, 4)
  ours = np.asarray(boxes_lib.box_iou(a, b))
  assert ours.shape == (2, 6, 5)
  for i in range(2):
    np.testing.assert_array_equal(ours[i], np.asarray(box_iou_jit(a[i], b[i])))


@requires_torch
def test_generalized_box_iou_and_gradient_match_torchvision():
  rng = np.random.default_rng(1)
  a, b = random_boxes(rng, 9), random_boxes(rng, 6)
  weight = rng.normal(size=(9, 6)).astype(np.float32)
  ours = np.asarray(giou_jit(a, b))
  ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
  ref = torchvision.ops.generalized_box_iou(ta, tb)
  np.testing.assert_allclose(ours, ref.detach().numpy(), rtol=1e-6, atol=1e-6)
  (ref * torch.tensor(weight)).sum().backward()
  weighted_giou = lambda x, y: jnp.sum(boxes_lib.generalized_box_iou(x, y) * weight)
  ga, gb = jax.jit(jax.grad(weighted_giou, (0, 1)))(a, b)
  np.testing.assert_allclose(np.asarray(ga), ta.grad.numpy(), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(np.asarray(gb), tb.grad.numpy(), rtol=1e-4, atol=1e-6)


@requires_torch
@pytest.mark.parametrize("in_fmt", boxes_lib.BOX_FORMATS)
@pytest.mark.parametrize("out_fmt", boxes_lib.BOX_FORMATS)
def test_box_convert_matches_torchvision(in_fmt, out_fmt):
  boxes = random_boxes(np.random.default_rng(2), 8)
  ours = np.asarray(boxes_lib.box_convert(boxes, in_fmt, out_fmt))
  ref = torchvision.ops.box_convert(torch.tensor(boxes), in_fmt, out_fmt).numpy()
  np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-5)


@requires_torch
def test_clip_boxes_matches_torchvision():
  boxes = random_boxes(np.random.default_rng(3), 20, size=140.0) - 20
  ours = np.asarray(boxes_lib.clip_boxes(boxes, 90, 110))
  ref = torchvision.ops.clip_boxes_to_image(torch.tensor(boxes), (90, 110)).numpy()
  np.testing.assert_array_equal(ours, ref)


@requires_torch
@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_encode_decode_match_torchvision_box_coder(weights):
  rng = np.random.default_rng(4)
  proposals, gt = random_boxes(rng, 15), random_boxes(rng, 15)
  coder = det_utils.BoxCoder(weights)
  ref_deltas = coder.encode_single(torch.tensor(gt), torch.tensor(proposals)).numpy()
  deltas = np.asarray(boxes_lib.encode_boxes(gt, proposals, weights))
  np.testing.assert_allclose(deltas, ref_deltas, rtol=1e-5, atol=1e-6)
  # Per-class deltas [N, C * 4] as the box head predicts; large dw exercises the log(1000/16) clamp.
  codes = rng.normal(0, 2, (15, 3 * 4)).astype(np.float32)
  codes[0, 2] = 30.0
  ref_boxes = coder.decode_single(torch.tensor(codes), torch.tensor(proposals)).numpy()
  ours = np.asarray(boxes_lib.decode_boxes(codes.reshape(15, 3, 4), proposals[:, None], weights))
  np.testing.assert_allclose(ours.reshape(15, 12), ref_boxes, rtol=1e-5, atol=1e-3)
  roundtrip = boxes_lib.decode_boxes(jnp.asarray(deltas), proposals, weights)
  np.testing.assert_allclose(np.asarray(roundtrip), gt, rtol=1e-5, atol=1e-3)


@requires_torch
def test_encode_and_decode_gradients_match_torch_autograd():
  rng = np.random.default_rng(5)
  proposals, gt = random_boxes(rng, 6), random_boxes(rng, 6)
  codes = rng.normal(0, 0.5, (6, 4)).astype(np.float32)
  weights = (10.0, 10.0, 5.0, 5.0)
  coder = det_utils.BoxCoder(weights)
  tg, tc = torch.tensor(gt, requires_grad=True), torch.tensor(codes, requires_grad=True)
  coder.encode_single(tg, torch.tensor(proposals)).pow(2).sum().backward()
  coder.decode_single(tc, torch.tensor(proposals)).pow(2).sum().backward()
  g_gt = jax.grad(lambda x: jnp.sum(boxes_lib.encode_boxes(x, proposals, weights) ** 2))(gt)
  g_codes = jax.grad(lambda x: jnp.sum(boxes_lib.decode_boxes(x, proposals, weights) ** 2))(codes)
  np.testing.assert_allclose(np.asarray(g_gt), tg.grad.numpy(), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(np.asarray(g_codes), tc.grad.numpy(), rtol=1e-4, atol=1e-3)


def test_box_ops_compile_once_for_new_values():
  traces = []

  @jax.jit
  def f(a, b):
    traces.append(1)
    return boxes_lib.box_iou(a, b), boxes_lib.encode_boxes(a, b)

  rng = np.random.default_rng(6)
  for _ in range(3):
    f(random_boxes(rng, 4), random_boxes(rng, 4))
  assert len(traces) == 1


def test_bad_box_shapes_raise_value_error():
  with pytest.raises(ValueError, match=r"boxes1 must have shape \[..., 4\], got \(3, 3\)"):
    boxes_lib.box_iou(np.zeros((3, 3)), np.zeros((2, 4)))
  with pytest.raises(ValueError, match="out_fmt"):
    boxes_lib.box_convert(np.zeros((3, 4)), "xyxy", "yxyx")
  with pytest.raises(ValueError, match="deltas"):
    boxes_lib.decode_boxes(np.zeros((3, 5)), np.zeros((3, 4)))


# ---- anchors ----

FPN_SIZES = ((32,), (64,), (128,), (256,), (512,))


@requires_torch
@pytest.mark.parametrize("sizes,ratios", [
    (FPN_SIZES, ((0.5, 1.0, 2.0),) * 5),
    (((16, 24, 40), (48, 60, 100)), ((0.3, 1.0, 1.7), (0.5, 2.0))),
])
def test_fpn_anchors_equal_torchvision_anchor_generator(sizes, ratios):
  image_shape = (96, 128)
  feature_shapes = [(96 // 2**(i + 2), 128 // 2**(i + 2)) for i in range(len(sizes))]
  generator = AnchorGenerator(sizes, ratios)
  images = ImageList(torch.zeros(2, 3, *image_shape), [image_shape, (80, 100)])
  features = [torch.zeros(2, 8, h, w) for h, w in feature_shapes]
  ref = generator(images, features)
  ours = np.asarray(anchors_lib.fpn_anchors(image_shape, feature_shapes, sizes, ratios))
  for ref_image in ref:
    np.testing.assert_array_equal(ours, ref_image.numpy())


def detectron2_anchors_float64(feature_shape, stride, sizes, ratios, offset):
  """detectron2 DefaultAnchorGenerator (generate_cell_anchors, _create_grid_offsets), plainly in float64."""
  rows = []
  for i in range(feature_shape[0]):
    for j in range(feature_shape[1]):
      cx, cy = (j + offset) * stride, (i + offset) * stride
      for size in sizes:
        for ratio in ratios:
          w = math.sqrt(size * size / ratio)
          h = ratio * w
          rows.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
  return np.array(rows)


@pytest.mark.parametrize("offset", [0.0, 0.5])
def test_anchor_grid_detectron2_matches_its_formula(offset):
  sizes, ratios = (32, 40.3), (0.5, 1.0, 2.0)
  ours = np.asarray(anchors_lib.anchor_grid((5, 7), 16, sizes, ratios, offset, style="detectron2"))
  ref = detectron2_anchors_float64((5, 7), 16, sizes, ratios, offset)
  assert ours.shape == (5 * 7 * 6, 4)
  np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-4)


def test_anchor_bad_arguments_raise_value_error():
  with pytest.raises(ValueError, match="feature_shape"):
    anchors_lib.anchor_grid((5, 7, 1), 16, (32,), (1.0,))
  with pytest.raises(ValueError, match="style"):
    anchors_lib.anchor_grid((5, 7), 16, (32,), (1.0,), style="mmdet")
  with pytest.raises(ValueError, match="sizes must have one entry per level"):
    anchors_lib.fpn_anchors((64, 64), [(16, 16), (8, 8)], ((32,),), (1.0,))
