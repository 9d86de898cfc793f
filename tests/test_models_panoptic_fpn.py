"""Panoptic FPN: the semantic branch against a torch version of Fig. 3 written here (outputs, parameter count), the
thing -> "other" labels against NumPy, a tiny model's loss falls without recompiling for 0 and max_instances
instances, its merged output has the contract's shapes (slow), the experiment configs build and follow detectron2's
schedule.

The torch semantic branch follows detectron2's SemSegFPNHead: facebookresearch/detectron2,
detectron2/modeling/meta_arch/semantic_seg.py, commit 21b8d10c3dfa238fbaded7d5c4922d379d037f0b.
"""
import importlib
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from segjax.data import coco
from segjax.models import panoptic_fpn
from segjax.ops.pooling import resize_bilinear
from references import requires_torch, torch
from test_models_mask_rcnn import _batch, tiny_config as tiny_mask_rcnn_config
from train_util import counting_jit


# Synthetic-like classes by semantic train id: 4 things, then 3 stuff (the synthetic set's order).
IS_THING = (True, True, True, True, False, False, False)


def _info(is_thing=IS_THING):
  categories = tuple(coco.Category(id=k + 1, name=f"c{k}", supercategory="", isthing=int(t))
                     for k, t in enumerate(is_thing))
  return types.SimpleNamespace(num_thing_classes=sum(is_thing), categories=categories)


def tiny_config():
  config = panoptic_fpn.model_config()
  config.update({k: v for k, v in tiny_mask_rcnn_config().items() if k != "name"})
  config.update({"semantic_channels": 32, "stuff_area_threshold": 16})
  return config


class TorchSemanticFPN(torch.nn.Module if torch else object):
  """Kirillov et al. 2019, Fig. 3 in torch: per level [conv3x3, GN(32), ReLU, 2x bilinear] to 1/4, sum, 1x1, 4x."""

  def __init__(self, in_channels, channels, num_classes):
    super().__init__()
    self.scale_heads = torch.nn.ModuleList()
    for k in range(4):
      ops = []
      for stage in range(max(k, 1)):
        ops += [torch.nn.Conv2d(in_channels if stage == 0 else channels, channels, 3, padding=1, bias=False),
                torch.nn.GroupNorm(32, channels), torch.nn.ReLU()]
        if k:
          ops.append(torch.nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
      self.scale_heads.append(torch.nn.Sequential(*ops))
    self.predictor = torch.nn.Conv2d(channels, num_classes, 1)

  def forward(self, levels):
    x = sum(head(level) for head, level in zip(self.scale_heads, levels))
    return torch.nn.functional.interpolate(self.predictor(x), scale_factor=4, mode="bilinear", align_corners=False)


@requires_torch
def test_semantic_head_shapes_and_parity_with_torch():
  rng = np.random.default_rng(0)
  levels = [rng.standard_normal((2, 24 // 2**k, 16 // 2**k, 16)).astype(np.float32) for k in range(4)]
  head = panoptic_fpn.SemanticFPNHead(num_classes=5, channels=32)
  variables = head.init(jax.random.key(0), levels)
  logits = head.apply(variables, levels)
  assert logits.shape == (2, 24, 16, 5)  # 1/4 of a 96 x 64 input

  params = variables["params"]
  reference = TorchSemanticFPN(16, 32, 5)
  assert sum(x.size for x in jax.tree.leaves(params)) == sum(p.numel() for p in reference.parameters())
  with torch.no_grad():
    for k, ops in enumerate(reference.scale_heads):
      convs = [m for m in ops if isinstance(m, torch.nn.Conv2d)]
      norms = [m for m in ops if isinstance(m, torch.nn.GroupNorm)]
      for stage, (conv, norm) in enumerate(zip(convs, norms)):
        conv.weight.copy_(torch.tensor(np.asarray(params[f"p{k + 2}_conv{stage}"]["kernel"]).transpose(3, 2, 0, 1)))
        # Non-trivial affine parameters, so that a wrong GroupNorm mapping shows.
        scale, bias = rng.uniform(0.5, 1.5, 32).astype(np.float32), rng.uniform(-0.5, 0.5, 32).astype(np.float32)
        params[f"p{k + 2}_norm{stage}"] = {"scale": jnp.asarray(scale), "bias": jnp.asarray(bias)}
        norm.weight.copy_(torch.from_numpy(scale))
        norm.bias.copy_(torch.from_numpy(bias))
    params["predictor"]["bias"] = jnp.asarray(rng.uniform(-0.5, 0.5, 5).astype(np.float32))
    reference.predictor.weight.copy_(torch.tensor(np.asarray(params["predictor"]["kernel"]).transpose(3, 2, 0, 1)))
    reference.predictor.bias.copy_(torch.tensor(np.asarray(params["predictor"]["bias"])))
    expected = reference([torch.from_numpy(x.transpose(0, 3, 1, 2)) for x in levels]).numpy().transpose(0, 2, 3, 1)
  ours = resize_bilinear(head.apply({"params": params}, levels), 96, 64)
  np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4)


def test_semantic_targets_map_things_to_other_and_stuff_to_one_up():
  is_thing = (False, True, True, False, True, False, False, True)  # things and stuff interleaved
  rng = np.random.default_rng(1)
  semantic = rng.choice(list(range(8)) + [255], size=(3, 17, 9)).astype(np.int32)
  expected = np.full(semantic.shape, 255)
  stuff_index = 0
  for train_id, thing in enumerate(is_thing):  # detectron2: things -> 0, stuff -> 1.. in order, VOID -> 255
    if not thing:
      stuff_index += 1
    expected[semantic == train_id] = 0 if thing else stuff_index
  np.testing.assert_array_equal(panoptic_fpn.semantic_targets(semantic, is_thing), expected)


def _panoptic_batch(num_instances, seed=0):
  """mask_rcnn's squares batch with semantic labels: sky / grass / road bands (train ids 4..6), the squares
  thing class 0, a VOID row."""
  batch = _batch(num_instances, seed=seed)
  rows = np.arange(64)[:, None].repeat(64, 1)
  semantic = np.where(rows < 20, 4, np.where(rows < 44, 5, 6))[None].repeat(2, 0)
  batch["image"] = np.where(batch["masks"].any(1)[..., None], batch["image"],
                            np.array([[0.4, 0.6, 0.9], [0.3, 0.6, 0.2], [0.5, 0.5, 0.5]], np.float32)[semantic - 4])
  semantic = np.where(batch["masks"].any(1), 0, semantic)
  semantic[:, 30] = 255
  return {**batch, "semantic": semantic.astype(np.int32)}


@pytest.fixture(scope="module")
def trained():
  config = tiny_config()
  module = panoptic_fpn.build(config, _info())
  batch = _panoptic_batch(3)
  # Initialised in train mode under jit: cheaper to compile than the inference path, which only the slow test needs.
  variables = jax.jit(lambda b: module.init({"params": jax.random.key(0), "sampling": jax.random.key(1)}, b["image"],
                                            train=True, targets={k: b[k] for k in panoptic_fpn.FORWARD_KEYS}))(batch)
  optimizer = optax.adam(2e-3)
  state = (variables["params"], variables["batch_stats"], optimizer.init(variables["params"]))

  @counting_jit
  def step(state, batch, key):
    params, batch_stats, opt_state = state

    def loss_fn(params):
      outputs, updates = module.apply(
          {"params": params, "batch_stats": batch_stats}, batch["image"], train=True, mutable=["batch_stats"],
          rngs={"sampling": key}, targets={k: batch[k] for k in panoptic_fpn.FORWARD_KEYS})
      value, metrics = panoptic_fpn.loss(outputs, batch, config)
      return value, (metrics, updates)

    (value, (metrics, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    deltas, opt_state = optimizer.update(grads, opt_state)
    return (optax.apply_updates(params, deltas), updates["batch_stats"], opt_state), (value, metrics)

  history = []
  for i in range(12):
    state, (value, metrics) = step(state, batch, jax.random.key(i))
    history.append((float(value), float(metrics["loss_sem_seg"])))
  for count in (0, 4):  # no instances, and max_instances: the same program
    state, (value, _) = step(state, _panoptic_batch(count, seed=count), jax.random.key(100 + count))
    assert np.isfinite(float(value))
  return module, step, state, np.array(history), batch


def test_tiny_model_trains_without_recompiling(trained):
  _, step, _, history, _ = trained
  assert np.isfinite(history).all()
  losses, semantic = history.T
  assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3])
  assert np.mean(semantic[-3:]) < 0.7 * np.mean(semantic[:3])
  assert step.traces == 1


@pytest.mark.slow
def test_predict_gives_the_panoptic_map_and_segments_in_static_shapes(trained):
  module, _, state, _, batch = trained
  predict = counting_jit(lambda v, x: panoptic_fpn.predict(module.apply(v, x, train=False), tiny_config()))
  outputs = jax.device_get(predict({"params": state[0], "batch_stats": state[1]}, batch["image"]))
  assert outputs["panoptic"].shape == (2, 64, 64) and outputs["panoptic"].dtype == np.int32
  assert outputs["masks"].shape == (2, 10, 64, 64)
  for key in ("id", "category", "is_thing", "score", "area", "valid"):
    assert outputs[f"segment_{key}"].shape == (2, 10 + 3), key
  for b in range(2):  # the rows describe the map: ids, areas, stuff categories 1..3
    valid = outputs["segment_valid"][b]
    ids = outputs["segment_id"][b][valid]
    np.testing.assert_array_equal(ids, np.arange(1, len(ids) + 1))
    np.testing.assert_array_equal(np.bincount(outputs["panoptic"][b].ravel(), minlength=len(ids) + 1)[1:],
                                  outputs["segment_area"][b][valid])
    stuff = valid & ~outputs["segment_is_thing"][b]
    assert np.all((outputs["segment_category"][b][stuff] >= 1) & (outputs["segment_category"][b][stuff] <= 3))
  assert (~outputs["segment_is_thing"] & outputs["segment_valid"]).any()  # the bands became stuff segments
  _ = predict({"params": state[0], "batch_stats": state[1]}, _panoptic_batch(0)["image"])
  assert predict.traces == 1


def test_unknown_key_and_missing_mask_head_are_errors():
  config = tiny_config()
  config.stuff_area_treshold = 10
  with pytest.raises(ValueError, match="stuff_area_treshold"):
    panoptic_fpn.build(config, _info())
  config = tiny_config()
  config.mask = False
  with pytest.raises(ValueError, match="config.model.mask"):
    panoptic_fpn.build(config, _info())
  config = tiny_config()
  config.backbone = "c4"
  with pytest.raises(ValueError, match="config.model.backbone"):
    panoptic_fpn.build(config, _info())


@pytest.mark.parametrize("name", ["panoptic_fpn_r50_1x_coco", "demo_panoptic_fpn"])
def test_experiment_configs_build(name):
  from segjax.train.optim import learning_rate_schedule, make_optimizer  # pylint: disable=g-import-not-at-top
  config = importlib.import_module(f"experiments.{name}").get_config()
  is_thing = (True,) * 80 + (False,) * 53 if "coco" in name else IS_THING
  module = panoptic_fpn.build(config.model, _info(is_thing))
  images = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
  shapes = jax.eval_shape(lambda x: module.init(jax.random.key(0), x), images)
  assert shapes["params"]["box_head"]["cls_score"]["kernel"].shape[-1] == sum(is_thing) + 1
  assert shapes["params"]["semantic_head"]["predictor"]["kernel"].shape[-1] == len(is_thing) - sum(is_thing) + 1
  jax.eval_shape(make_optimizer(config).init, shapes["params"])  # config.optimizer.frozen matches parameters
  schedule = learning_rate_schedule(config)
  if "coco" in name:  # detectron2's R50-FPN 1x: lr 0.02, batch 16, 90k iterations, x0.1 at 60k and 80k
    assert config.batch_size == 16 and config.total_steps == 90_000
    assert config.model.semantic_channels == 128 and config.model.semantic_loss_weight == 0.5
    assert float(schedule(0)) == pytest.approx(0.02 * 0.001, rel=1e-4)
    assert float(schedule(59_999)) == pytest.approx(0.02, rel=1e-4)
    assert float(schedule(60_001)) == pytest.approx(0.002, rel=1e-4)
    assert float(schedule(80_001)) == pytest.approx(0.0002, rel=1e-4)
