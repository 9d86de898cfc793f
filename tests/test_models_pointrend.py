"""PointRend on Mask R-CNN: shapes, config checks, a tiny model's loss falls and its train step compiles once for
batches with 0 and max_instances instances; adaptive subdivision refines the upsampled coarse mask at the most
uncertain cells only and equals dense point-head inference when every cell is refined."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import flax.linen as nn
import pytest

from segjax.models import get_model, pointrend
from segjax.ops.pooling import resize_bilinear
from train_util import counting_jit

INFO = ml_collections.ConfigDict({"num_thing_classes": 2})


def tiny_config():
  config = pointrend.model_config()
  config.update({"depth": 18, "width": 8, "norm": "batch", "fpn_channels": 16, "representation_size": 64,
                 "mask_head_channels": 16, "coarse_fc_dim": 64, "point_fc_dim": 32,
                 "anchor_sizes": ((8,), (16,), (32,), (64,), (128,)),
                 "rpn_pre_nms_top_n_train": 200, "rpn_post_nms_top_n_train": 100, "rpn_pre_nms_top_n_test": 100,
                 "rpn_post_nms_top_n_test": 50, "roi_batch_size_per_image": 32, "detections_per_image": 6})
  return config


def _batch(num_instances, size=64, max_instances=4, seed=0):
  """Images with num_instances bright discs (class 1) and squares (class 2) and their padded ground truth."""
  rng = np.random.default_rng(seed)
  image = rng.uniform(0, 0.2, (2, size, size, 3)).astype(np.float32)
  boxes = np.zeros((2, max_instances, 4), np.float32)
  classes = np.zeros((2, max_instances), np.int32)
  masks = np.zeros((2, max_instances, size, size), np.uint8)
  ys, xs = np.mgrid[:size, :size] + 0.5
  for b in range(2):
    for i in range(num_instances):
      x, y = rng.integers(0, size - 24, 2)
      side = int(rng.integers(14, 24))
      disc = i % 2 == 0
      inside = ((xs - x - side / 2) ** 2 + (ys - y - side / 2) ** 2 < (side / 2) ** 2) if disc else (
          (xs >= x) & (xs < x + side) & (ys >= y) & (ys < y + side))
      boxes[b, i] = (x, y, x + side, y + side)
      classes[b, i] = 1 if disc else 2
      masks[b, i] = inside
      image[b, inside] = (0.9, 0.8, 0.1) if disc else (0.1, 0.7, 0.9)
  valid = np.arange(max_instances)[None].repeat(2, 0) < num_instances
  return {"image": image, "boxes": boxes, "classes": classes, "masks": masks,
          "is_crowd": np.zeros((2, max_instances), bool), "instance_valid": valid}


def test_registered_with_mask_rcnns_contract():
  module = get_model("pointrend")
  assert module is pointrend and module.TASK == "instance"
  assert {"subdivision_steps", "subdivision_num_points", "score_threshold"} <= module.INFERENCE_KEYS


@pytest.mark.parametrize("key,value,match", [("train_num_pionts", 3, "train_num_pionts"),
                                             ("backbone", "c4", "FPN backbone"),
                                             ("coarse_pooler_resolution", 7, "must be even"),
                                             ("importance_sample_ratio", 1.5, "importance_sample_ratio")])
def test_bad_config_is_an_error_naming_the_key(key, value, match):
  config = pointrend.model_config()
  config[key] = value
  with pytest.raises(ValueError, match=match):
    pointrend.build(config, INFO)


@pytest.mark.slow  # the detector's train step and predict compile
def test_tiny_model_trains_without_recompiling_and_predicts_subdivided_masks():
  config = tiny_config()
  module = pointrend.build(config, INFO)
  batch = _batch(3)
  variables = module.init(jax.random.key(0), batch["image"], train=False)
  params = variables["params"]
  assert "mask_head" not in params and params["point_head"]["fc1"]["kernel"].shape == (16 + 2, 32)
  assert params["coarse_mask_head"]["prediction"]["kernel"].shape == (64, 7 * 7 * 2)
  optimizer = optax.adam(2e-3)
  state = (params, variables["batch_stats"], optimizer.init(params))

  @counting_jit
  def step(state, batch, key):
    params, batch_stats, opt_state = state

    def loss_fn(params):
      outputs, updates = module.apply(
          {"params": params, "batch_stats": batch_stats}, batch["image"], train=True, mutable=["batch_stats"],
          rngs={"sampling": key}, targets={k: batch[k] for k in pointrend.FORWARD_KEYS})
      total, metrics = pointrend.loss(outputs, batch, config)
      return total, (updates, metrics, outputs)

    (_, (updates, metrics, outputs)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    deltas, opt_state = optimizer.update(grads, opt_state)
    return (optax.apply_updates(params, deltas), updates["batch_stats"], opt_state), metrics, outputs

  point_losses, totals = [], []
  for i in range(12):
    state, metrics, outputs = step(state, batch, jax.random.key(i))
    point_losses.append(float(metrics["loss_mask_point"]))
    totals.append(sum(float(v) for k, v in metrics.items() if k.startswith("loss_")))
  p = outputs["point_logits"].shape[1]
  assert outputs["point_logits"].shape == outputs["point_labels"].shape == (2, p, 196)
  assert outputs["mask_logits"].shape == (2, p, 7, 7)
  labels = np.asarray(outputs["point_labels"])[np.asarray(outputs["mask_valid"])]
  assert labels.size and 0.05 < labels.mean() < 0.95  # positives' points fall inside and outside their masks
  assert np.mean(totals[-3:]) < 0.7 * np.mean(totals[:3])
  assert np.mean(point_losses[-3:]) < 0.85 * np.mean(point_losses[:3])
  for count in (0, 4):  # no instances, and max_instances: the same program
    state, metrics, _ = step(state, _batch(count, seed=count), jax.random.key(100 + count))
    assert np.isfinite(float(metrics["loss_mask_point"]))
  assert step.traces == 1

  predict = jax.jit(lambda v, x: pointrend.predict(module.apply(v, x, train=False), config))
  outputs = predict({"params": state[0], "batch_stats": state[1]}, batch["image"])
  assert outputs["masks"].shape == (2, 6, 64, 64) and outputs["mask_probabilities"].shape == (2, 6, 224, 224)
  assert outputs["valid"].any() and np.isfinite(outputs["mask_probabilities"]).all()


class _Parts(pointrend.PointRend):
  """PointRend exposing the pieces of its mask branch on given boxes."""

  @nn.compact
  def parts(self, image, boxes, labels):
    _, levels = self.pyramid(image, False)
    coarse_head, point_head = heads = self._heads()
    coarse = self._coarse_logits(coarse_head, levels[0], boxes)
    subdivided = self._subdivision(heads, levels[0], boxes, labels)
    side = subdivided.shape[-1]
    grid = (jnp.stack(jnp.meshgrid(jnp.arange(side), jnp.arange(side), indexing="xy"), -1) + 0.5) / side
    points = jnp.broadcast_to(grid.reshape(-1, 2), (*boxes.shape[:2], side * side, 2))
    dense = self._point_logits(point_head, levels[0], boxes, points, coarse, labels)
    return coarse, subdivided, dense.reshape(subdivided.shape)


def _subdivision_parts(num_points, steps):
  """A tiny PointRend's coarse logits, subdivided logits and the point head on every cell of their grid."""
  config = tiny_config()
  config.update({"subdivision_steps": steps, "subdivision_num_points": num_points})
  reference = pointrend.build(config, INFO)
  module = _Parts(num_classes=reference.num_classes, config=reference.config)
  image = jnp.asarray(_batch(2)["image"])
  variables = reference.init(jax.random.key(1), image, train=False)
  boxes = jnp.asarray([[[4.0, 6.0, 40.0, 30.0], [10.0, 10.0, 60.0, 58.0]]] * 2)
  labels = jnp.asarray([[1, 2], [2, 1]])
  # Parameters away from their near-zero initialisation, so that the point head's logits vary over the box.
  leaves, tree = jax.tree.flatten(variables)
  keys = jax.random.split(jax.random.key(2), len(leaves))
  variables = jax.tree.unflatten(tree, [x + 0.05 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])
  outputs = jax.jit(lambda v: module.apply(v, image, boxes, labels, method=_Parts.parts))(variables)
  return outputs, labels


@pytest.mark.slow
def test_subdivision_refining_every_cell_equals_the_point_head_on_the_dense_grid():
  (_, subdivided, dense), _ = _subdivision_parts(num_points=56 * 56, steps=3)
  assert subdivided.shape == (2, 2, 56, 56)
  np.testing.assert_allclose(subdivided, dense, atol=1e-5)


@pytest.mark.slow  # initialises and compiles a whole (tiny) PointRend detector
def test_subdivision_changes_only_the_most_uncertain_cells_of_the_upsampled_mask():
  """One step: the coarse 7x7 logits upsampled to 14x14, its 20 cells of smallest |logit| replaced by the point
  head's logits there, the others kept."""
  (coarse, subdivided, dense), labels = _subdivision_parts(num_points=20, steps=1)
  of_class = np.take_along_axis(np.asarray(coarse), np.asarray(labels - 1)[:, :, None, None, None], -1)[..., 0]
  upsampled = np.asarray(resize_bilinear(jnp.asarray(of_class.reshape(4, 7, 7, 1)), 14, 14)).reshape(2, 2, 14, 14)
  expected = upsampled.copy()
  for i in range(2):
    for j in range(2):
      most_uncertain = np.argsort(np.abs(upsampled[i, j]).ravel(), kind="stable")[:20]
      expected[i, j].ravel()[most_uncertain] = np.asarray(dense)[i, j].ravel()[most_uncertain]
  np.testing.assert_allclose(subdivided, expected, atol=1e-5)
  assert np.sum(~np.isclose(subdivided, upsampled, atol=1e-7)) > 0


@pytest.mark.parametrize("name", ["pointrend_r50_fpn_1x_coco", "demo_pointrend"])
def test_experiment_configs_build(name):
  import importlib  # pylint: disable=g-import-not-at-top
  config = importlib.import_module(f"experiments.{name}").get_config()
  module = pointrend.build(config.model, ml_collections.ConfigDict({"num_thing_classes": 80}))
  shapes = jax.eval_shape(lambda x: module.init(jax.random.key(0), x), jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))
  assert shapes["params"]["point_head"]["predictor"]["kernel"].shape[-1] == 80


@pytest.mark.slow  # the detector's train step compiles twice (1 and 8 devices)
def test_eight_device_training_gives_the_losses_of_one_device():
  """Data-parallel PointRend (the sampled training points of each RoI) equals one device over two steps."""
  from train_util import concatenated_batches, losses_on_one_and_eight_devices  # pylint: disable=g-import-not-at-top
  config = tiny_config()
  module = pointrend.build(config, INFO)
  batches = [concatenated_batches(_batch, (3, 0, 4, 1), 1), concatenated_batches(_batch, (2, 4, 1, 3), 5)]
  variables = jax.device_get(module.init(jax.random.key(0), batches[0]["image"], train=False))
  keys = ("loss", "loss_objectness", "loss_classifier", "loss_mask", "loss_mask_point")
  losses = losses_on_one_and_eight_devices(module, pointrend, config, variables, batches, keys)
  assert np.all(np.array(losses[1])[:, 4] > 0)  # the point head was trained on foreground RoIs
  np.testing.assert_allclose(losses[8], losses[1], rtol=1e-4, atol=1e-6)
