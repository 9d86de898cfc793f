"""YOLO v1: Eq. 3 against a float64 NumPy version written from the paper, the grid targets, inference, shapes and
parameter counts, and training without recompiling across box counts."""
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segjax.models import get_model
from segjax.models import yolo
from train_util import counting_jit

S, B, C = 7, 2, 5
SIZE = (112, 140)  # (H, W): non-square, so x and y scales differ


def _numpy_eq3(coords, confidence, class_probs, boxes, classes, valid, lambda_coord=5.0, lambda_noobj=0.5):
  """Eq. 3 of Redmon et al. 2016 for one image in float64 loops, from the paper's text: the cell holding an
  object's centre is responsible for it (the last such object in input order wins, Darknet's label fill);
  1^obj_ij picks the predictor of highest IoU with the ground truth; its confidence target is that IoU."""
  height, width = SIZE
  truth = {}
  for box, label, ok in zip(boxes, classes, valid):
    if not ok:
      continue
    x1, y1, x2, y2 = (float(v) for v in box)
    cx, cy, w, h = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height
    col, row = min(int(np.floor(cx * S)), S - 1), min(int(np.floor(cy * S)), S - 1)
    truth[row, col] = (cx * S - col, cy * S - row, w, h, int(label))

  def to_box(col, row, x, y, w, h):
    cx, cy = (col + x) / S, (row + y) / S
    return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2

  def iou(a, b):
    iw = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
    ih = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0

  total = 0.0
  coords, confidence, class_probs = (np.asarray(a, np.float64) for a in (coords, confidence, class_probs))
  for row in range(S):
    for col in range(S):
      if (row, col) not in truth:
        total += lambda_noobj * np.sum(confidence[row, col] ** 2)
        continue
      x, y, w, h, label = truth[row, col]
      truth_box = to_box(col, row, x, y, w, h)
      ious = [iou(to_box(col, row, p[0], p[1], p[2] ** 2, p[3] ** 2), truth_box) for p in coords[row, col]]
      j = int(np.argmax(ious))
      p = coords[row, col, j]
      total += lambda_coord * ((x - p[0]) ** 2 + (y - p[1]) ** 2)
      total += lambda_coord * ((np.sqrt(w) - p[2]) ** 2 + (np.sqrt(h) - p[3]) ** 2)
      total += (ious[j] - confidence[row, col, j]) ** 2
      total += lambda_noobj * sum(confidence[row, col, i] ** 2 for i in range(B) if i != j)
      one_hot = np.eye(C)[label - 1]
      total += np.sum((class_probs[row, col] - one_hot) ** 2)
  return total


def _random_truth(rng, m, count):
  height, width = SIZE
  boxes = np.zeros((m, 4), np.float32)
  xy = rng.uniform(0, 1, (count, 2)) * [width, height]
  wh = rng.uniform(5, 60, (count, 2))
  boxes[:count] = np.concatenate([np.maximum(xy - wh / 2, 0), np.minimum(xy + wh / 2, [width, height])], 1)
  classes = np.zeros(m, np.int32)
  classes[:count] = rng.integers(1, C + 1, count)
  return boxes, classes, np.arange(m) < count


def _random_outputs(rng, n):
  coords = rng.uniform(0.05, 0.95, (n, S, S, B, 4)).astype(np.float32)
  return {"coords": jnp.asarray(coords), "confidence": jnp.asarray(rng.uniform(-0.2, 1, (n, S, S, B)), jnp.float32),
          "class_probs": jnp.asarray(rng.uniform(-0.2, 1, (n, S, S, C)), jnp.float32)}


def test_loss_equals_numpy_eq3_with_shared_cells_and_empty_images():
  rng = np.random.default_rng(0)
  m = 12
  truths = [_random_truth(rng, m, count) for count in (0, 3, 12, 7)]
  # Image 2: two objects in one cell (same centre cell, different sizes and classes).
  boxes, classes, valid = truths[2]
  boxes[1] = boxes[0] + np.array([1, 1, -1, -1], np.float32)
  classes[1] = classes[0] % C + 1
  outputs = _random_outputs(rng, len(truths))
  batch = {"image": jnp.zeros((len(truths), *SIZE, 3)), "boxes": jnp.asarray(np.stack([t[0] for t in truths])),
           "classes": jnp.asarray(np.stack([t[1] for t in truths])),
           "instance_valid": jnp.asarray(np.stack([t[2] for t in truths]))}
  config = yolo.model_config("yolo_v1")
  total, metrics = jax.jit(lambda o, b: yolo.loss(o, b, config))(outputs, batch)
  expected = [_numpy_eq3(outputs["coords"][i], outputs["confidence"][i], outputs["class_probs"][i], *truths[i])
              for i in range(len(truths))]
  np.testing.assert_allclose(float(total), np.mean(expected), rtol=1e-5)
  assert expected[0] > 0  # an empty image still pays lambda_noobj for its confidences
  assert 0 < float(metrics["mean_iou"]) < 1


def test_responsible_predictor_is_the_higher_iou_one():
  boxes = np.array([[28.0, 20.0, 56.0, 44.0]], np.float32)  # centre (42, 32): cell row 2, col 2 of 112x140
  has, coords, one_hot = yolo.encode_targets(jnp.asarray(boxes), jnp.array([2]), jnp.array([True]), SIZE, S, C)
  assert bool(has[2, 2]) and int(has.sum()) == 1
  outputs = {"coords": jnp.zeros((S, S, B, 4)).at[2, 2, 1].set(coords[2, 2]).at[2, 2, 0].set(
      coords[2, 2] * jnp.array([1, 1, 0.5, 0.5])), "confidence": jnp.zeros((S, S, B)),
             "class_probs": jnp.zeros((S, S, C))}
  terms, iou = yolo.image_loss(outputs, has, coords, one_hot, 5.0, 0.5)
  # Predictor 1 is exact: no coordinate loss, IoU 1, confidence target 1 (loss_obj = (0 - 1)^2).
  assert float(terms["loss_xy"]) == 0 and float(terms["loss_wh"]) == 0
  np.testing.assert_allclose([float(iou), float(terms["loss_obj"])], [1.0, 1.0], rtol=1e-6)


def test_targets_round_trip():
  rng = np.random.default_rng(1)
  height, width = SIZE
  # One box per cell (distinct centre cells), so every box is kept.
  cells = rng.choice(S * S, 10, replace=False)
  centre = (np.stack([cells % S, cells // S], 1) + rng.uniform(0.05, 0.95, (10, 2))) / S * [width, height]
  wh = rng.uniform(4, 50, (10, 2))
  boxes = np.concatenate([centre - wh / 2, centre + wh / 2], 1).astype(np.float32)
  classes = rng.integers(1, C + 1, 10).astype(np.int32)
  m = 16
  padded = np.zeros((m, 4), np.float32)
  padded[:10] = boxes
  labels = np.zeros(m, np.int32)
  labels[:10] = classes
  targets = yolo.encode_targets(jnp.asarray(padded), jnp.asarray(labels), jnp.arange(m) < 10, SIZE, S, C)
  decoded, decoded_classes, valid = yolo.decode_targets(*targets, SIZE)
  assert int(valid.sum()) == 10
  np.testing.assert_allclose(np.asarray(decoded)[cells], boxes, atol=1e-3)
  np.testing.assert_array_equal(np.asarray(decoded_classes)[cells], classes)


def test_two_objects_in_one_cell_keep_the_last():
  boxes = jnp.array([[10.0, 10, 30, 30], [12, 12, 28, 28]])
  has, coords, one_hot = yolo.encode_targets(boxes, jnp.array([1, 3]), jnp.array([True, True]), SIZE, S, C)
  assert int(has.sum()) == 1
  assert int(jnp.argmax(one_hot[has][0])) + 1 == 3


def test_loss_compiles_once_for_zero_and_max_boxes():
  config = yolo.model_config("yolo_v1")
  fn = counting_jit(lambda o, b: yolo.loss(o, b, config)[0])
  rng = np.random.default_rng(2)
  m = 8
  for count in (0, m):
    boxes, classes, valid = _random_truth(rng, m, count)
    batch = {"image": jnp.zeros((1, *SIZE, 3)), "boxes": jnp.asarray(boxes[None]),
             "classes": jnp.asarray(classes[None]), "instance_valid": jnp.asarray(valid[None])}
    fn(_random_outputs(rng, 1), batch)
  assert fn.traces == 1


def _info(num_classes):
  return types.SimpleNamespace(num_thing_classes=num_classes)


@pytest.mark.parametrize("name,convs", [("yolo_v1", 24), ("fast_yolo", 9)])
def test_architecture_shapes_and_parameter_count(name, convs):
  config = yolo.model_config(name)
  config.num_classes = 20
  module = get_model(name).build(config, _info(20))
  shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, 448, 448, 3))))["params"]
  conv_names = [k for k in shapes if k.startswith("conv")]
  assert len(conv_names) == convs
  # Parameters computed independently from the layer list: channels in -> out, k x k, plus biases.
  layers = [layer for layer in yolo.ARCHITECTURES[name] if layer != "M"]
  expected, channels = 0, 3
  for filters, size, _ in layers:
    expected += size * size * channels * filters + filters
    channels = filters
  expected += 7 * 7 * channels * 4096 + 4096 + 4096 * 1470 + 1470
  assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes)) == expected
  out = jax.eval_shape(lambda v: module.apply(v, jnp.zeros((2, 448, 448, 3))),
                       jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, 448, 448, 3)))))
  assert out["class_probs"].shape == (2, 7, 7, 20) and out["coords"].shape == (2, 7, 7, 2, 4)
  assert out["confidence"].shape == (2, 7, 7, 2)  # 7 * 7 * (20 + 2 + 8) = 7 x 7 x 30


def test_predict_class_specific_confidence_and_per_class_nms():
  s, b, c = 2, 2, 3
  coords = np.full((1, s, s, b, 4), 0.5, np.float32)
  coords[..., 2:] = 0.5  # w = h = 0.25 of the image
  confidence = np.zeros((1, s, s, b), np.float32)
  confidence[0, 0, 0] = [0.9, 0.8]  # two identical boxes in cell (0, 0)
  class_probs = np.zeros((1, s, s, c), np.float32)
  class_probs[0, 0, 0] = [0.1, 0.7, 0.2]
  outputs = {"coords": jnp.asarray(coords), "confidence": jnp.asarray(confidence),
             "class_probs": jnp.asarray(class_probs), "boxes": yolo.decode_boxes(jnp.asarray(coords), (64, 64))}
  config = yolo.model_config("yolo_v1")
  config.score_threshold = 0.1
  config.detections_per_image = 8
  out = yolo.predict(outputs, config)
  valid = np.asarray(out["valid"][0])
  scores = np.asarray(out["scores"][0])[valid]
  labels = np.asarray(out["labels"][0])[valid]
  # Per class, the duplicate (IoU 1) box is suppressed; class 1 (0.9 * 0.1 = 0.09) is under the threshold.
  np.testing.assert_allclose(scores, [0.9 * 0.7, 0.9 * 0.2], rtol=1e-6)
  np.testing.assert_array_equal(labels, [2, 3])
  np.testing.assert_allclose(np.asarray(out["boxes"][0, 0]), [8, 8, 24, 24], atol=1e-5)


def test_convolutional_head_equals_numpy():
  """head="convolutional": a 3x3 convolution (leaky ReLU) and a 1x1 convolution on the last S x S map, each cell's
  5B + C values split as C class probabilities, B confidences, B x 4 coordinates; against float64 NumPy from the
  last convolution's output."""
  config = yolo.model_config("fast_yolo")
  config.update({"width_multiplier": 0.125, "hidden_units": 6, "grid_size": 4, "skip_pools": 2, "dropout_rate": 0.0,
                 "head": "convolutional"})
  module = yolo.build(config, _info(C))
  images = jax.random.uniform(jax.random.key(1), (2, 64, 64, 3))
  variables = module.init(jax.random.key(0), images)
  out, state = module.apply(variables, images, capture_intermediates=lambda m, _: m.name == "conv8",
                            mutable=["intermediates"])
  features = np.asarray(state["intermediates"]["conv8"]["__call__"][0], np.float64)
  params = jax.tree.map(lambda x: np.asarray(x, np.float64), variables["params"])
  leaky = lambda x: np.where(x > 0, x, 0.1 * x)
  x = np.pad(leaky(features), [(0, 0), (1, 1), (1, 1), (0, 0)])
  kernel = params["head_conv"]["kernel"]  # [3, 3, in, out]
  hidden = sum(np.einsum("nhwi,io->nhwo", x[:, dy:dy + 4, dx:dx + 4], kernel[dy, dx])
               for dy in range(3) for dx in range(3)) + params["head_conv"]["bias"]
  cells = leaky(hidden) @ params["head_out"]["kernel"][0, 0] + params["head_out"]["bias"]  # [2, 4, 4, 5B + C]
  assert cells.shape == (2, 4, 4, 5 * B + C)
  np.testing.assert_allclose(out["class_probs"], cells[..., :C], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(out["confidence"], cells[..., C:C + B], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(out["coords"], cells[..., C + B:].reshape(2, 4, 4, B, 4), rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match="S x S"):  # a 2 x 2 last map for a 4 x 4 grid
    module.init(jax.random.key(0), images[:, :32, :32])


TINY = {"width_multiplier": 0.125, "hidden_units": 64, "batch_norm": True, "grid_size": 4, "dropout_rate": 0.0}


def _tiny_batch(rng, counts, m=6, size=64):
  """Images with a bright square per object (class = colour channel), boxes on the squares."""
  n = len(counts)
  image = np.full((n, size, size, 3), 0.2, np.float32)
  boxes = np.zeros((n, m, 4), np.float32)
  classes = np.zeros((n, m), np.int32)
  valid = np.zeros((n, m), bool)
  for i, count in enumerate(counts):
    for j in range(count):
      x, y = rng.integers(0, size - 16, 2)
      w, h = rng.integers(8, 16, 2)
      c = rng.integers(1, 4)
      image[i, y:y + h, x:x + w, c - 1] = 1.0
      boxes[i, j], classes[i, j], valid[i, j] = (x, y, x + w, y + h), c, True
  return {"image": image, "boxes": boxes, "classes": classes, "instance_valid": valid}


def _train_step(config, devices, variables, batch_size):
  import optax  # pylint: disable=g-import-not-at-top
  from segjax.train import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from segjax.train.state import TrainState  # pylint: disable=g-import-not-at-top
  from segjax.train.steps import make_train_step  # pylint: disable=g-import-not-at-top
  del batch_size
  module = yolo.build(config, _info(3))
  optimizer, schedule = optax.adam(1e-3), optax.constant_schedule(1e-3)
  mesh = mesh_lib.make_mesh(devices)
  state = jax.device_put(TrainState.create(variables, optimizer), mesh_lib.replicated(mesh))
  shardings = jax.tree.map(lambda _: mesh_lib.replicated(mesh), state)
  step = make_train_step(module, yolo, config, optimizer, schedule, mesh, shardings)
  return state, lambda s, b, k: step(s, jax.device_put(b, mesh_lib.batch_sharding(mesh)), k), step


def _tiny_config(name="fast_yolo"):
  config = yolo.model_config(name)
  config.update(TINY)
  return config


def test_yolo_trains_without_recompiling_across_box_counts():
  config = _tiny_config()
  rng = np.random.default_rng(3)
  batch = _tiny_batch(rng, (3, 1))
  module = yolo.build(config, _info(3))
  variables = jax.device_get(jax.jit(lambda x: module.init(jax.random.key(0), x))(batch["image"]))
  state, step, jitted = _train_step(config, jax.devices()[:1], variables, 2)
  losses = []
  for i in range(12):
    state, metrics = step(state, batch, jax.random.key(i))
    losses.append(float(metrics["loss"]))
  assert losses[-1] < 0.5 * losses[0], losses
  for counts in ((0, 0), (6, 6), (2, 0)):
    state, metrics = step(state, _tiny_batch(rng, counts), jax.random.key(0))
    assert np.isfinite(float(metrics["loss"]))
  assert jitted._cache_size() == 1  # pylint: disable=protected-access  (made by make_train_step)
  predict = counting_jit(lambda v, x: yolo.predict(module.apply(v, x), config))
  for counts in ((0, 0), (6, 6)):
    out = predict(state.variables, _tiny_batch(rng, counts)["image"])
    assert out["boxes"].shape == (2, 100, 4)
  assert predict.traces == 1


def test_eight_device_training_gives_the_losses_of_one_device():
  assert jax.device_count() == 8
  config = _tiny_config()
  config.dropout_rate = 0.5  # the dropout mask must not depend on how the batch is sharded
  rng = np.random.default_rng(4)
  batches = [_tiny_batch(rng, (3, 0, 6, 1, 2, 5, 4, 6)), _tiny_batch(rng, (1, 1, 0, 2, 6, 3, 0, 5))]
  module = yolo.build(config, _info(3))
  variables = jax.device_get(jax.jit(lambda x: module.init(jax.random.key(0), x))(batches[0]["image"]))
  losses = {}
  for devices in (jax.devices()[:1], jax.devices()):
    state, step, _ = _train_step(config, devices, variables, 8)
    losses[len(devices)] = []
    for i, batch in enumerate(batches):
      state, metrics = step(state, batch, jax.random.key(i))
      losses[len(devices)].append([float(metrics[k]) for k in ("loss", "loss_xy", "loss_class", "loss_noobj")])
  # The first step's losses agree to reduction order; the second step's follow one update, which amplifies the
  # reduction-order differences of the sharded gradient (3e-4 relative on an AMD EPYC host).
  np.testing.assert_allclose(losses[8][0], losses[1][0], rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(losses[8][1], losses[1][1], rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("name", ["yolo_v1_voc", "fast_yolo_voc", "demo_yolo"])
def test_experiment_configs_build(name):
  import importlib  # pylint: disable=g-import-not-at-top
  from segjax.train.optim import learning_rate_schedule, make_optimizer  # pylint: disable=g-import-not-at-top
  config = importlib.import_module(f"experiments.{name}").get_config()
  module = get_model(config.model.name).build(config.model, _info(20))
  images = jax.ShapeDtypeStruct((1, *config.dataset.image_size, 3), jnp.float32)
  shapes = jax.eval_shape(lambda x: module.init(jax.random.key(0), x), images)
  out = jax.eval_shape(module.apply, shapes, images)
  assert out["class_probs"].shape == (1, 7, 7, 20) and out["coords"].shape == (1, 7, 7, 2, 4)
  jax.eval_shape(make_optimizer(config).init, shapes["params"])
  if name != "demo_yolo":  # the paper's schedule: 1e-3 rising to 1e-2, then 1e-3 at epoch 75, 1e-4 at 105 of 135
    schedule = learning_rate_schedule(config)
    epoch = 16551 / 64
    np.testing.assert_allclose([float(schedule(s)) for s in (0, 10 * epoch, 80 * epoch, 110 * epoch)],
                               [1e-3, 1e-2, 1e-3, 1e-4], rtol=1e-5)
    assert config.total_steps == round(135 * epoch) and config.batch_size == 64


@pytest.mark.parametrize("head", ["fully_connected",  # the convolutional head: its first convolutions at 64x64
                                  pytest.param("convolutional", marks=pytest.mark.slow)])
def test_overfits_a_fixed_batch_to_high_voc_map(head):
  """Learning, end to end: a tiny Fast YOLO trained on one fixed batch (one object per cell, so every box is
  representable) reaches a VOC mAP near 1 on that batch through predict (eval mode: running batch statistics, no
  dropout), and Eq. 3 falls far below its initial value; with either head (the convolutional one on a 4 x 4 map:
  two poolings left out)."""
  from segjax.evaluation import voc  # pylint: disable=g-import-not-at-top
  config = _tiny_config()
  config.batch_norm_momentum = 0.9  # running statistics that follow a short run
  if head == "convolutional":
    config.update({"head": head, "skip_pools": 2})
  size, cell = 64, 16
  rng = np.random.default_rng(7)
  cells = [((0, 0), (2, 1)), ((1, 3), (3, 0), (2, 2)), ((3, 3),), ((0, 2), (1, 1))]
  n, m = len(cells), 4
  batch = {"image": np.full((n, size, size, 3), 0.2, np.float32), "boxes": np.zeros((n, m, 4), np.float32),
           "classes": np.zeros((n, m), np.int32), "instance_valid": np.zeros((n, m), bool)}
  for i, image_cells in enumerate(cells):
    for j, (row, col) in enumerate(image_cells):
      w, h = rng.integers(8, 15, 2)
      x = col * cell + rng.integers(0, cell) - w // 2
      y = row * cell + rng.integers(0, cell) - h // 2
      x, y = np.clip([x, y], 0, [size - w, size - h])
      c = rng.integers(1, 4)
      batch["image"][i, y:y + h, x:x + w, c - 1] = 1.0
      batch["boxes"][i, j], batch["classes"][i, j], batch["instance_valid"][i, j] = (x, y, x + w, y + h), c, True
  module = yolo.build(config, _info(3))
  variables = jax.device_get(jax.jit(lambda x: module.init(jax.random.key(0), x))(batch["image"]))
  state, step, _ = _train_step(config, jax.devices()[:1], variables, n)
  losses = []
  for i in range(300):
    state, metrics = step(state, batch, jax.random.key(i))
    losses.append(float(metrics["loss"]))
  assert np.mean(losses[-10:]) < 0.05 * losses[0], (losses[0], losses[-10:])
  out = jax.device_get(jax.jit(lambda v, x: yolo.predict(module.apply(v, x), config))(state.variables,
                                                                                          batch["image"]))
  images = [voc.ImageDetections(out["boxes"][i][out["valid"][i]], out["scores"][i][out["valid"][i]],
                                out["labels"][i][out["valid"][i]], batch["boxes"][i][batch["instance_valid"][i]],
                                batch["classes"][i][batch["instance_valid"][i]],
                                np.zeros(batch["instance_valid"][i].sum(), bool)) for i in range(n)]
  assert voc.voc_metrics(images, ("r", "g", "b"))["voc_mAP"] >= 0.9
