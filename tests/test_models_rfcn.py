"""R-FCN: position-sensitive pooling and voting equal a float64 NumPy port of the paper's Eq. 1-2; OHEM keeps the
RoIs of highest loss (a NumPy stable argsort of the loss recomputed from the outputs); a tiny model's loss falls on a
fixed batch and its train step compiles once for batches with 0 to max_instances boxes; conv5 is dilated at stride 16;
the paper configs build."""
import importlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from segjax.models import rfcn
from segjax.ops.matching import hardest
from train_util import counting_jit


def _vote_reference(maps, boxes, k):
  """Eq. 1-2 of Dai et al. 2016 in float64, boxes given on the map's grid (integers x0, y0, x0 + w, y0 + h).

  Eq. 1: r_d(i, j) = (1 / n) sum_{(x, y) in bin(i, j)} z_{i,j,d}(x + x0, y + y0), bin(i, j) the pixels
  floor(j w / k) <= x < ceil((j + 1) w / k), floor(i h / k) <= y < ceil((i + 1) h / k) (the paper's footnote),
  n their count, z_{i,j,d} the channel d k^2 + i k + j. Eq. 2 with the text's averaging vote:
  r_d = (1 / k^2) sum_{i,j} r_d(i, j).
  """
  d = maps.shape[-1] // k**2
  out = np.zeros((len(boxes), d))
  for r, (x0, y0, x1, y1) in enumerate(boxes):
    w, h = x1 - x0, y1 - y0
    for i in range(k):
      for j in range(k):
        ys = slice(y0 + (i * h) // k, y0 - ((-(i + 1) * h) // k))
        xs = slice(x0 + (j * w) // k, x0 - ((-(j + 1) * w) // k))
        out[r] += maps[ys, xs, np.arange(d) * k**2 + i * k + j].mean((0, 1)) / k**2
  return out


def test_vote_equals_the_papers_eq_1_and_2():
  """Random score maps and RoIs (k = 7, 5 outputs, 2 images of 20 x 24 cells): the RoIs are on the map's grid, where
  Eq. 1 is unambiguous, and end before the last row and column (which torchvision's ps_roi_pool, hence ours, clips
  away). Sizes from 1 cell (bins of one pixel, shared) to 23 cells wide."""
  k, d, stride = 7, 5, 16
  rng = np.random.default_rng(0)
  maps = rng.normal(size=(2, 20, 24, k * k * d))
  grid = []
  for _ in range(2):
    x0, y0 = rng.integers(0, 12, 8), rng.integers(0, 10, 8)
    x1 = np.minimum(x0 + rng.integers(1, 24, 8), 23)
    y1 = np.minimum(y0 + rng.integers(1, 20, 8), 19)
    grid.append(np.stack([x0, y0, x1, y1], 1))
  grid = np.stack(grid)
  grid[0, 0] = (0, 0, 23, 19)  # the whole readable map
  grid[0, 1] = (5, 5, 6, 6)  # one cell
  ours = rfcn.vote(jnp.asarray(maps, jnp.float32), jnp.asarray(grid * stride, jnp.float32), k, 1 / stride)
  for n in range(2):
    np.testing.assert_allclose(ours[n], _vote_reference(maps[n], grid[n], k), rtol=1e-5, atol=1e-5)


def _hardest_reference(losses, valid, count):
  order = np.argsort(-np.where(valid, losses, -np.inf), kind="stable")[:count]
  chosen = np.zeros(len(losses), bool)
  chosen[order[valid[order]]] = True
  return chosen


@pytest.mark.parametrize("valid_fraction", [0.8, 0.2])  # more, and fewer, valid RoIs than B = 128
def test_hardest_keeps_the_highest_losses(valid_fraction):
  rng = np.random.default_rng(1)
  losses = rng.exponential(size=300).astype(np.float32)
  losses[::7] = losses[3]  # ties, broken by position as a stable sort
  valid = rng.uniform(size=300) < valid_fraction
  chosen = np.asarray(hardest(jnp.asarray(losses), jnp.asarray(valid), 128))
  np.testing.assert_array_equal(chosen, _hardest_reference(losses, valid, 128))
  assert chosen.sum() == min(128, valid.sum())


def tiny_config():
  config = rfcn.model_config()
  config.update({"depth": 18, "width": 8, "norm": "batch", "head_channels": 32, "ps_size": 3,
                 "anchor_sizes": ((16, 32, 64),), "rpn_pre_nms_top_n_train": 200, "rpn_post_nms_top_n_train": 60,
                 "rpn_pre_nms_top_n_test": 200, "rpn_post_nms_top_n_test": 60, "ohem_rois": 16,
                 "detections_per_image": 10})
  return config


SIZE = 96


def _batch(num_instances, max_instances=4, seed=0):
  """Two images with num_instances bright squares of class 1 (yellow) or 2 (cyan), and their padded boxes."""
  rng = np.random.default_rng(seed)
  image = rng.uniform(0, 0.2, (2, SIZE, SIZE, 3)).astype(np.float32)
  boxes = np.zeros((2, max_instances, 4), np.float32)
  classes = np.zeros((2, max_instances), np.int32)
  for b in range(2):
    for i in range(num_instances):
      side = int(rng.integers(20, 40))
      x, y = rng.integers(0, SIZE - side, 2)
      boxes[b, i] = (x, y, x + side, y + side)
      classes[b, i] = 1 + i % 2
      image[b, y:y + side, x:x + side] = (0.9, 0.8, 0.1) if i % 2 == 0 else (0.1, 0.8, 0.9)
  valid = np.arange(max_instances)[None].repeat(2, 0) < num_instances
  return {"image": image, "boxes": boxes, "classes": classes, "instance_valid": valid}


def _module(config):
  return rfcn.build(config, ml_collections.ConfigDict({"num_thing_classes": 2}))


@pytest.mark.slow  # compiles the whole training forward
def test_ohem_selects_the_rois_of_highest_loss():
  """The B = 16 RoIs kept by OHEM are the top 16 of every labelled RoI by Eq. 3's loss, recomputed in NumPy from the
  model's own logits, deltas and targets."""
  config = tiny_config()
  module = _module(config)
  batch = _batch(3)
  variables = jax.jit(lambda x: module.init(jax.random.key(0), x))(batch["image"])
  outputs, _ = jax.jit(lambda v, x, t: module.apply(v, x, train=True, mutable=["batch_stats"],
                                                    rngs={"sampling": jax.random.key(1)}, targets=t))(
      variables, batch["image"], {k: batch[k] for k in rfcn.FORWARD_KEYS})
  o = jax.tree.map(lambda x: np.asarray(x, np.float64), outputs)
  logits = o["class_logits"] - o["class_logits"].max(-1, keepdims=True)
  log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  ce = -np.take_along_axis(log_softmax, o["roi_labels"].astype(int)[..., None], -1)[..., 0]
  diff = np.abs(o["box_deltas"] - o["box_targets"])
  box = np.where(diff < 1, 0.5 * diff**2, diff - 0.5).sum(-1) * (o["roi_positive"] > 0)  # smooth L1, beta 1
  candidates = outputs["roi_candidates"]
  assert candidates.sum(1).min() > 16  # more labelled RoIs than OHEM keeps
  np.testing.assert_allclose(o["roi_losses"], np.where(candidates, ce + box, 0.0), rtol=1e-5, atol=1e-6)
  for n in range(2):
    losses = np.where(candidates[n], ce[n] + box[n], 0.0)
    expected = _hardest_reference(np.float32(losses), np.asarray(candidates[n]), 16)
    chosen = np.asarray(outputs["roi_selected"][n])
    # Near-ties between float32 and float64 may swap places: the chosen losses must be the 16 largest.
    np.testing.assert_allclose(np.sort(losses[chosen]), np.sort(losses[expected]), rtol=1e-5)


def _train_step(module, config, optimizer):
  @counting_jit
  def step(state, batch, key):
    params, batch_stats, opt_state = state

    def loss_fn(params):
      outputs, updates = module.apply(
          {"params": params, "batch_stats": batch_stats}, batch["image"], train=True, mutable=["batch_stats"],
          rngs={"sampling": key}, targets={k: batch[k] for k in rfcn.FORWARD_KEYS})
      total, metrics = rfcn.loss(outputs, batch, config)
      return total, (metrics, updates)

    (value, (metrics, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    deltas, opt_state = optimizer.update(grads, opt_state)
    return (optax.apply_updates(params, deltas), updates["batch_stats"], opt_state), (value, metrics)

  return step


STEPS = 40


@pytest.mark.slow  # two compilations of the whole train step and 40 steps: past the non-slow budget
@pytest.mark.parametrize("ohem, ratio", [(True, 0.8), (False, 0.5)])
def test_tiny_model_trains_without_recompiling(ohem, ratio):
  """40 Adam steps on one batch of 2 images and 3 boxes of 2 classes. The RoI classifier starts at the cross-entropy
  of uniform scores, log 3 (its maps' std-0.01 initialisation gives near-zero logits); the total loss must end (mean
  of the last 3 steps) below `ratio` x its first value: 0.8 with OHEM, whose loss is that of the 16 hardest RoIs, 0.5
  on the balanced sample (both met for seeds 0, 1 and 2 of the batch and initialisation). Then batches with 0 and 4
  boxes run the same compiled step, and inference returns static-shape detections of the trained classes."""
  config = tiny_config()
  config.ohem = ohem
  module = _module(config)
  batch = _batch(3)
  variables = jax.jit(lambda x: module.init(jax.random.key(0), x, train=False))(batch["image"])
  optimizer = optax.adam(1e-2)
  state = (variables["params"], variables["batch_stats"], optimizer.init(variables["params"]))
  step = _train_step(module, config, optimizer)
  losses = []
  for i in range(STEPS):
    state, (value, metrics) = step(state, batch, jax.random.key(i))
    losses.append(float(value))
    if i == 0:
      assert abs(float(metrics["loss_classifier"]) - np.log(3)) < 0.05, metrics
  assert np.mean(losses[-3:]) < ratio * losses[0], losses
  for count in (0, 4):  # no boxes, and max_instances: the same program
    state, (value, _) = step(state, _batch(count, seed=count), jax.random.key(100 + count))
    assert np.isfinite(float(value))
  assert step.traces == 1

  predict = jax.jit(lambda v, x: rfcn.predict(module.apply(v, x, train=False), None))
  outputs = predict({"params": state[0], "batch_stats": state[1]}, batch["image"])
  assert outputs["boxes"].shape == (2, 10, 4) and outputs["valid"].dtype == jnp.bool_
  assert outputs["valid"].any() and np.all(np.isin(outputs["labels"][outputs["valid"]], (1, 2)))


def test_unknown_config_key_is_an_error():
  config = rfcn.model_config()
  config.ohem_roi = 64
  with pytest.raises(ValueError, match="ohem_roi"):
    _module(config)


@pytest.mark.parametrize("name, classes, model", [("rfcn_r101_voc07", 20, "rfcn"), ("rfcn_r101_coco", 80, "rfcn_coco")])
def test_experiment_configs_build(name, classes, model):
  """The paper configs: ResNet-101 with C5 at stride 16, a 1024-d reduction, k^2 (C + 1) = 49 (C + 1) class maps and
  4 k^2 = 196 box maps, OHEM with B = 128 of N = 300, and the optimizer's schedule and frozen layers apply."""
  from segjax.models import get_model  # pylint: disable=g-import-not-at-top
  from segjax.train.optim import make_optimizer  # pylint: disable=g-import-not-at-top
  experiment = importlib.import_module(f"experiments.{name}")
  config = experiment.get_config()
  assert config.model.name == model and get_model(model).build is rfcn.build
  assert "Needs" in experiment.__doc__ and f"--config=experiments/{name}.py" in experiment.__doc__
  module = get_model(model).build(config.model, ml_collections.ConfigDict({"num_thing_classes": classes}))
  shapes = jax.eval_shape(lambda x: module.init(jax.random.key(0), x), jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))
  head = shapes["params"]["ps_head"]
  assert head["conv_new"]["kernel"].shape == (1, 1, 2048, 1024)
  assert head["rfcn_cls"]["kernel"].shape[-1] == 49 * (classes + 1) and head["rfcn_bbox"]["kernel"].shape[-1] == 196
  assert len([k for k in shapes["params"]["backbone"] if k.startswith("layer3_")]) == 23  # ResNet-101's conv4
  assert config.model.ohem and config.model.ohem_rois == 128 and config.model.rpn_post_nms_top_n_train == 300
  jax.eval_shape(make_optimizer(config).init, shapes["params"])


def test_conv5_runs_at_stride_16_with_every_3x3_dilated_by_2():
  """The paper's "a trous" conv5 (Sec. 2.1): stride 1, dilation 2 in every 3x3 of conv5, so C5 and the score maps are
  at stride 16. Every convolution the model runs is intercepted; ResNet-50 with 3 conv5 blocks."""
  config = tiny_config()
  config.depth = 50
  module = _module(config)
  seen = []

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if context.method_name == "__call__" and type(context.module).__name__ == "Conv":
      seen.append((context.module.path, context.module.kernel_size, context.module.kernel_dilation,
                   context.module.strides, out.shape))
    return out

  with nn.intercept_methods(record):
    jax.eval_shape(lambda x: module.init(jax.random.key(0), x), jax.ShapeDtypeStruct((1, 64, 96, 3), jnp.float32))
  conv5 = [s for s in seen if "layer4_" in "/".join(s[0]) and tuple(s[1]) == (3, 3)]
  assert len(conv5) == 3
  for _, _, dilation, strides, shape in conv5:
    assert dilation in (2, (2, 2)) and strides in (1, (1, 1), None) and shape[1:3] == (4, 6)
  score_maps = [s for s in seen if s[0][-1] in ("rfcn_cls", "rfcn_bbox")]
  assert [s[4][1:] for s in score_maps] == [(4, 6, 9 * 3), (4, 6, 4 * 9)]


@pytest.mark.slow  # the train step compiled for 1 and 8 devices; Mask R-CNN's 8-device test covers a detector
def test_eight_device_training_gives_the_losses_of_one_device():
  """Data-parallel R-FCN (RPN and RoI sampling, OHEM over the position-sensitive votes) equals one device."""
  from train_util import concatenated_batches, losses_on_one_and_eight_devices  # pylint: disable=g-import-not-at-top
  config = tiny_config()
  module = _module(config)
  batches = [concatenated_batches(_batch, (3, 0, 4, 1), 1), concatenated_batches(_batch, (2, 4, 1, 3), 5)]
  variables = jax.device_get(module.init(jax.random.key(0), batches[0]["image"], train=False))
  keys = ("loss", "loss_objectness", "loss_classifier", "loss_box_reg")
  losses = losses_on_one_and_eight_devices(module, rfcn, config, variables, batches, keys)
  assert np.all(np.array(losses[1])[:, 3] > 0)  # foreground RoIs reached the box loss
  np.testing.assert_allclose(losses[8], losses[1], rtol=1e-4, atol=1e-6)
