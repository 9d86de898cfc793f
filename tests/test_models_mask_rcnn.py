"""Mask / Faster R-CNN: converted torchvision models give torchvision's detections, the same parameter count, a
clear error on unknown config keys; a tiny model's loss falls and its train step compiles once for batches with
0 and with max_instances instances. The C4 variant gives the detections of torchvision's MaskRCNN class assembled
on a ResNet-50 C4 trunk with the res5 head. The mask head on the chunks of the positives / detections gives the
loss, gradient and predictions of the mask head on all slots."""
import collections

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from segjax.inference import Predictor
from segjax.models import mask_rcnn
from segjax.weights import torchvision as tv_weights
from segjax.weights import torchvision_detection
import references
from references import optional, requires_torch, torch
from train_util import counting_jit

detection = getattr(optional("torchvision.models"), "detection", None)

SIZE = 160  # a multiple of 32 that torchvision leaves unresized with min_size = max_size = SIZE
TOP = 20  # detections compared, by rank


def _image():
  """Smooth colour blobs on a gradient: structure for random filters to respond to."""
  rng = np.random.default_rng(0)
  ys, xs = np.mgrid[:SIZE, :SIZE] / SIZE
  image = np.stack([ys, xs, 0.5 * (ys + xs)], -1) * 0.5
  for _ in range(6):
    cy, cx, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.2)
    image[(ys - cy) ** 2 + (xs - cx) ** 2 < r**2] = rng.uniform(0, 1, 3)
  return image[None].astype(np.float32)


def _random_torch_model(name):
  torch.manual_seed(0)
  model = getattr(detection, name)(weights=None, weights_backbone=None, min_size=SIZE, max_size=SIZE)
  with torch.no_grad():
    for module in model.modules():  # statistics away from (0, 1), so a wrong mean/var mapping shows
      if isinstance(module, torch.nn.BatchNorm2d):
        module.running_mean.uniform_(-0.2, 0.2)
        module.running_var.uniform_(0.5, 1.5)
        module.weight.uniform_(0.5, 1.5)
        module.bias.uniform_(-0.2, 0.2)
    # Random ResNet features are large (std ~100 at fc7): logits scaled to a std of a few units, so that scores
    # are spread out rather than tied at 1, and the background class held back, so that detections pass the
    # 0.05 threshold; small box deltas, so that boxes stay near their anchors and proposals.
    model.rpn.head.cls_logits.weight.mul_(0.2)
    model.roi_heads.box_predictor.cls_score.weight.mul_(0.05)
    model.roi_heads.box_predictor.cls_score.bias[0] = -20.0
    model.roi_heads.box_predictor.bbox_pred.weight.mul_(0.1)
    model.rpn.head.bbox_pred.weight.mul_(0.1)
  return model.eval()


def _box_iou(a, b):
  lt, rb = np.maximum(a[:, :2], b[:, :2]), np.minimum(a[:, 2:], b[:, 2:])
  inter = np.prod(np.clip(rb - lt, 0, None), 1)
  area = lambda x: np.prod(x[:, 2:] - x[:, :2], 1)
  return inter / (area(a) + area(b) - inter)


@pytest.fixture(scope="module", params=["maskrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn"])
def parity(request):
  model = _random_torch_model(request.param)
  image = _image()
  with torch.no_grad():
    reference = model([torch.from_numpy(image[0]).permute(2, 0, 1)])[0]
  config, variables = tv_weights.convert(request.param, {k: v.numpy() for k, v in model.state_dict().items()})
  ours = Predictor(config, variables)(image)[0]
  return request.param, model, config, variables, {k: v.numpy() for k, v in reference.items()}, ours


@requires_torch
def test_detections_equal_torchvision(parity):
  name, _, _, _, reference, ours = parity
  _assert_same_detections(ours, reference, masks=name.startswith("mask"))


def _assert_same_detections(ours, reference, masks=True, top=TOP):
  assert len(reference["boxes"]) >= top  # the comparison has something to compare
  assert len(ours["boxes"]) == len(reference["boxes"])
  np.testing.assert_array_equal(ours["labels"][:top], reference["labels"][:top])
  np.testing.assert_allclose(ours["scores"][:top], reference["scores"][:top], atol=2e-3)
  assert _box_iou(ours["boxes"][:top], reference["boxes"][:top]).min() > 0.98
  if masks:
    ours_binary, reference_binary = ours["masks"][:top] > 0.5, reference["masks"][:top, 0] > 0.5
    inter = (ours_binary & reference_binary).sum((1, 2))
    union = (ours_binary | reference_binary).sum((1, 2))
    assert np.all(union > 0) and (inter / union).min() > 0.95
    assert np.abs(ours["masks"][:top] - reference["masks"][:top, 0]).max() < 1e-2


@requires_torch
def test_parameter_count_equals_torchvision(parity):
  _, model, _, variables, _, _ = parity
  # torchvision's BatchNorm weight and bias are parameters; a frozen norm keeps them in batch_stats here.
  norm_affine = [v for path, v in jax.tree_util.tree_leaves_with_path(variables["batch_stats"])
                 if path[-1].key in ("scale", "bias")]
  count = sum(np.size(v) for v in jax.tree_util.tree_leaves(variables["params"])) + sum(map(np.size, norm_affine))
  assert count == sum(p.numel() for p in model.parameters())


C4_OVERRIDES = {"rpn_post_nms_top_n_test": 50, "detections_per_image": 20}  # res5 runs on every RoI: keep it cheap


def _torch_c4_model():
  """torchvision's MaskRCNN class on a random ResNet-50 C4 trunk, with layer4 (res5) as its box and mask heads:
  14x14 RoIAlign on C4, res5, average pool -> predictor; res5 -> deconv -> 14x14 masks (He et al. 2017, Fig. 4)."""
  torchvision = references.torchvision
  torch.manual_seed(0)
  resnet = torchvision.models.resnet50(weights=None)
  trunk = torch.nn.Sequential(collections.OrderedDict(
      (k, getattr(resnet, k)) for k in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3")))
  trunk.out_channels = 1024

  class Res5(torch.nn.Module):
    def __init__(self, pool):
      super().__init__()
      self.res5, self.pool = resnet.layer4, pool

    def forward(self, x):
      x = self.res5(x)
      return x.mean((2, 3)) if self.pool else x

  pooler = lambda: torchvision.ops.MultiScaleRoIAlign(["0"], 14, 2)
  model = detection.MaskRCNN(
      trunk, min_size=SIZE, max_size=SIZE,
      rpn_anchor_generator=detection.anchor_utils.AnchorGenerator(((32, 64, 128, 256, 512),), ((0.5, 1.0, 2.0),)),
      rpn_head=detection.rpn.RPNHead(1024, 15), rpn_pre_nms_top_n_test=6000,
      rpn_post_nms_top_n_test=C4_OVERRIDES["rpn_post_nms_top_n_test"],
      box_roi_pool=pooler(), box_head=Res5(True), box_predictor=detection.faster_rcnn.FastRCNNPredictor(2048, 91),
      box_detections_per_img=C4_OVERRIDES["detections_per_image"], mask_roi_pool=pooler(), mask_head=Res5(False),
      mask_predictor=detection.mask_rcnn.MaskRCNNPredictor(2048, 256, 91))
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, torch.nn.BatchNorm2d):
        module.running_mean.uniform_(-0.2, 0.2)
        module.running_var.uniform_(0.5, 1.5)
        module.weight.uniform_(0.5, 1.5)
        module.bias.uniform_(-0.2, 0.2)
    model.rpn.head.cls_logits.weight.mul_(0.2)  # as _random_torch_model: spread scores, hold back the background
    model.roi_heads.box_predictor.cls_score.weight.mul_(0.05)
    model.roi_heads.box_predictor.cls_score.bias[0] = -20.0
    model.roi_heads.box_predictor.bbox_pred.weight.mul_(0.1)
    model.rpn.head.bbox_pred.weight.mul_(0.1)
  return model.eval()


def _c4_variables(model, module):
  """The assembled model's weights as the segjax C4 model's variables: the trunk and res5 in `backbone`."""
  state = {k: v.numpy() for k, v in model.state_dict().items()}
  for name in ("cls_score", "bbox_pred"):  # Linear [O, I] -> Dense [I, O]
    state[f"roi_heads.box_predictor.{name}.weight"] = state[f"roi_heads.box_predictor.{name}.weight"].T
  deconv = "roi_heads.mask_predictor.conv5_mask.weight"
  state[deconv] = state[deconv].transpose(1, 0, 2, 3)  # ConvTranspose2d [I, O, a, b]

  def torch_key(path):
    if path[0] != "backbone":
      return torchvision_detection.torch_key(path)
    key = tv_weights.resnet_torch_key(path[1:])
    return "roi_heads.box_head.res5." + key[len("layer4."):] if key.startswith("layer4.") else "backbone." + key

  variables, used = tv_weights.fill_variables(tv_weights.abstract_variables(module, (64, 64)), state, torch_key)
  tv_weights.check_unexpected({k: v for k, v in state.items() if not k.startswith("roi_heads.mask_head.")}, used)
  return variables


@requires_torch
def test_c4_detections_equal_torchvision_maskrcnn_assembled_on_c4():
  model = _torch_c4_model()
  image = _image()
  with torch.no_grad():
    reference = {k: v.numpy() for k, v in model([torch.from_numpy(image[0]).permute(2, 0, 1)])[0].items()}
  config = mask_rcnn.model_config("c4")
  config.update({"num_classes": 91, "norm": "frozen", **C4_OVERRIDES})
  module = mask_rcnn.build(config, None)
  variables = _c4_variables(model, module)
  ours = Predictor(config, variables)(image)[0]
  assert reference["masks"].shape[1:] == (1, SIZE, SIZE)
  _assert_same_detections(ours, reference, top=10)
  # Parameters: torchvision counts BatchNorm's weight and bias, which the frozen norm keeps in batch_stats.
  norm_affine = [v for path, v in jax.tree_util.tree_leaves_with_path(variables["batch_stats"])
                 if path[-1].key in ("scale", "bias")]
  count = sum(np.size(v) for v in jax.tree_util.tree_leaves(variables["params"])) + sum(map(np.size, norm_affine))
  assert count == sum(p.numel() for p in model.parameters())


def test_unknown_config_key_is_an_error():
  config = mask_rcnn.model_config()
  config.rpn_nms_treshold = 0.6
  with pytest.raises(ValueError, match="rpn_nms_treshold"):
    mask_rcnn.build(config, ml_collections.ConfigDict({"num_thing_classes": 3}))


def tiny_config(backbone="fpn"):
  config = mask_rcnn.model_config(backbone, "faster_rcnn" if backbone == "vgg16" else "mask_rcnn")  # VGG: boxes only
  anchor_sizes = ((8,), (16,), (32,), (64,), (128,)) if backbone == "fpn" else ((8, 16, 32, 64, 128),)
  config.update({"box_head_dropout": 0.0,"depth": 18, "width": 8, "norm": "batch", "fpn_channels": 32, "representation_size": 64,
                 "mask_head_channels": 16, "anchor_sizes": anchor_sizes,
                 "rpn_pre_nms_top_n_train": 200, "rpn_post_nms_top_n_train": 100, "rpn_pre_nms_top_n_test": 100,
                 "rpn_post_nms_top_n_test": 50, "roi_batch_size_per_image": 32, "detections_per_image": 10})
  return config


def _batch(num_instances, size=64, max_instances=4, seed=0):
  """Images with num_instances bright squares and their padded ground truth."""
  rng = np.random.default_rng(seed)
  image = rng.uniform(0, 0.2, (2, size, size, 3)).astype(np.float32)
  boxes = np.zeros((2, max_instances, 4), np.float32)
  masks = np.zeros((2, max_instances, size, size), np.uint8)
  for b in range(2):
    for i in range(num_instances):
      x, y = rng.integers(0, size - 24, 2)
      side = int(rng.integers(12, 24))
      boxes[b, i] = (x, y, x + side, y + side)
      masks[b, i, y:y + side, x:x + side] = 1
      image[b, y:y + side, x:x + side] = (0.9, 0.8, 0.1)
  valid = np.arange(max_instances)[None].repeat(2, 0) < num_instances
  return {"image": image, "boxes": boxes, "classes": np.where(valid, 1, 0).astype(np.int32), "masks": masks,
          "is_crowd": np.zeros((2, max_instances), bool), "instance_valid": valid}


@pytest.mark.parametrize("backbone", mask_rcnn.BACKBONES)
def test_tiny_model_trains_without_recompiling(backbone):
  config = tiny_config(backbone)
  module = mask_rcnn.build(config, ml_collections.ConfigDict({"num_thing_classes": 1}))
  batch = _batch(3)
  variables = module.init(jax.random.key(0), batch["image"], train=False)
  optimizer = optax.adam(2e-3)
  # VGG-16 has no batch norm: its batch_stats are empty.
  state = (variables["params"], variables.get("batch_stats", {}), optimizer.init(variables["params"]))

  @counting_jit
  def step(state, batch, key):
    params, batch_stats, opt_state = state

    def loss_fn(params):
      outputs, updates = module.apply(
          {"params": params, "batch_stats": batch_stats}, batch["image"], train=True, mutable=["batch_stats"],
          rngs={"sampling": key}, targets={k: batch[k] for k in mask_rcnn.FORWARD_KEYS})
      return mask_rcnn.loss(outputs, batch, config)[0], updates

    (value, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    deltas, opt_state = optimizer.update(grads, opt_state)
    return (optax.apply_updates(params, deltas), updates.get("batch_stats", {}), opt_state), value

  losses = []
  for i in range(12):
    state, value = step(state, batch, jax.random.key(i))
    losses.append(float(value))
  assert np.isfinite(losses).all() and np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3])
  for count in (0, 4):  # no instances, and max_instances: the same program
    state, value = step(state, _batch(count, seed=count), jax.random.key(100 + count))
    assert np.isfinite(float(value))
  assert step.traces == 1

  predict = counting_jit(lambda v, x: mask_rcnn.predict(module.apply(v, x, train=False), None))
  outputs = predict({"params": state[0], "batch_stats": state[1]}, batch["image"])
  assert outputs["masks"].shape == (2, 10, 64, 64) and outputs["boxes"].shape == (2, 10, 4)
  assert np.isfinite(outputs["masks"]).all() and outputs["valid"].any()
  assert outputs["valid"].dtype == jnp.bool_ and np.all((outputs["labels"] == 1) | ~outputs["valid"])


@pytest.mark.parametrize("name", ["mask_rcnn_r50_fpn_1x_coco", "mask_rcnn_r50_fpn_3x_coco",
                                  "mask_rcnn_r101_fpn_3x_coco", "mask_rcnn_r50_c4_1x_coco", "demo_mask_rcnn",
                                  "faster_rcnn_r50_fpn_1x_coco"])
def test_experiment_configs_build(name):
  import importlib  # pylint: disable=g-import-not-at-top
  from segjax.train.optim import learning_rate_schedule  # pylint: disable=g-import-not-at-top
  config = importlib.import_module(f"experiments.{name}").get_config()
  module = mask_rcnn.build(config.model, ml_collections.ConfigDict({"num_thing_classes": 80}))
  shapes = jax.eval_shape(lambda x: module.init(jax.random.key(0), x), jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))
  assert shapes["params"]["box_head"]["cls_score"]["kernel"].shape[-1] == 81
  from segjax.train.optim import make_optimizer  # pylint: disable=g-import-not-at-top
  jax.eval_shape(make_optimizer(config).init, shapes["params"])  # config.optimizer.frozen matches parameters
  schedule = learning_rate_schedule(config)
  if config.optimizer.schedule == "step":  # detectron2's recipe: warm-up, then x0.1 at each step
    base, (first, second) = config.optimizer.learning_rate, config.optimizer.decay_steps
    assert float(schedule(0)) == pytest.approx(base * 0.001, rel=1e-4)
    assert float(schedule(first - 1)) == pytest.approx(base, rel=1e-4)
    assert float(schedule(first + 1)) == pytest.approx(base * 0.1, rel=1e-4)
    assert float(schedule(second + 1)) == pytest.approx(base * 0.01, rel=1e-4)


def test_eight_device_training_gives_the_losses_of_one_device():
  from segjax.train import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from segjax.train.state import TrainState  # pylint: disable=g-import-not-at-top
  from segjax.train.steps import make_train_step  # pylint: disable=g-import-not-at-top
  assert jax.device_count() == 8
  config = tiny_config()
  module = mask_rcnn.build(config, ml_collections.ConfigDict({"num_thing_classes": 1}))
  batches = [{k: np.concatenate([a[k], b[k], a[k], b[k]]) for k in a}
             for a, b in ((_batch(3, seed=1), _batch(1, seed=2)), (_batch(4, seed=3), _batch(0, seed=4)))]
  variables = jax.device_get(module.init(jax.random.key(0), batches[0]["image"], train=False))
  optimizer, schedule = optax.sgd(0.02, momentum=0.9), optax.constant_schedule(0.02)
  losses = {}
  for devices in (jax.devices()[:1], jax.devices()):
    mesh = mesh_lib.make_mesh(devices)
    state = jax.device_put(TrainState.create(variables, optimizer), mesh_lib.replicated(mesh))
    shardings = jax.tree.map(lambda _: mesh_lib.replicated(mesh), state)
    step = make_train_step(module, mask_rcnn, config, optimizer, schedule, mesh, shardings)
    losses[len(devices)] = []
    for i, batch in enumerate(batches):
      state, metrics = step(state, jax.device_put(batch, mesh_lib.batch_sharding(mesh)), jax.random.key(i))
      losses[len(devices)].append([float(metrics[k]) for k in ("loss", "loss_objectness", "loss_mask")])
  np.testing.assert_allclose(losses[8], losses[1], rtol=1e-4, atol=1e-6)


@requires_torch
@pytest.mark.parametrize("pooler", ["align", "warp", "pool"])
def test_roi_poolers_equal_torchvision_ops_on_each_boxs_level(pooler):
  ops = optional("torchvision.ops")
  config = tiny_config()
  config.roi_pooler = pooler
  module = mask_rcnn.build(config, ml_collections.ConfigDict({"num_thing_classes": 1}))
  rng = np.random.default_rng(0)
  levels = [rng.normal(size=(2, 512 // 2**k, 512 // 2**k, 3)).astype(np.float32) for k in range(2, 7)]
  xy = rng.uniform(0, 100, (2, 6, 2))
  boxes = np.concatenate([xy, xy + rng.uniform(8, 400, (2, 6, 2))], -1).astype(np.float32)
  ours = np.asarray(module.apply({}, levels[:4], (1 / 4, 1 / 8, 1 / 16, 1 / 32), jnp.asarray(boxes), 7,
                                 method=mask_rcnn.MaskRCNN._pooled))
  flat = boxes.reshape(-1, 4)
  size = np.sqrt((flat[:, 2] - flat[:, 0]) * (flat[:, 3] - flat[:, 1]))
  level = np.clip(np.floor(4 + np.log2(size / 224) + 1e-6), 2, 5).astype(int) - 2  # FPN Eq. 1, torchvision
  assert len(set(level)) > 1
  for i, (k, box) in enumerate(zip(level, flat)):
    scale = 2.0 ** -(k + 2)
    x = torch.from_numpy(levels[k][i // 6:i // 6 + 1].transpose(0, 3, 1, 2).copy())
    roi = torch.tensor([[0.0, *box]])
    if pooler == "pool":
      reference = ops.roi_pool(x, roi, 7, scale)
    elif pooler == "warp":  # RoIAlign of the box rounded (half away from zero) to its level's grid
      quantized = np.sign(box) * np.floor(np.abs(box.astype(np.float64)) * scale + 0.5) / scale
      assert np.abs(quantized - box).max() > 0.5  # the rounding moves the boxes: the case tests something
      reference = ops.roi_align(x, torch.tensor([[0.0, *quantized]], dtype=torch.float32), 7, scale, sampling_ratio=2,
                                aligned=False)
    else:
      reference = ops.roi_align(x, roi, 7, scale, sampling_ratio=2, aligned=False)
    np.testing.assert_allclose(ours[i], reference[0].numpy().transpose(1, 2, 0), atol=1e-5)


# p = 128 * 0.25 = 32 positive slots (4 chunks of 8) and 100 detections (13 chunks).
CHUNK_OVERRIDES = {"roi_batch_size_per_image": 128, "detections_per_image": 100}


@pytest.fixture(scope="module")
def chunk_model():
  config = tiny_config()
  config.update(CHUNK_OVERRIDES)
  module = mask_rcnn.build(config, ml_collections.ConfigDict({"num_thing_classes": 1}))
  return config, module, module.init(jax.random.key(0), _batch(0)["image"], train=False)


def _on_all_slots(monkeypatch):
  """The reference: one chunk of every slot runs the mask head on all slots at once."""
  monkeypatch.setattr(mask_rcnn, "MASK_CHUNK_SLOTS", 10**6)


def _mask_head_rows(jaxpr, num_classes):
  """For each `cond` in the jaxpr (nested ones included) whose branches run the mask head: per branch, the row counts
  R of its [R, 28, 28, num_classes] logits."""
  def subjaxprs(eqn):
    for value in eqn.params.values():
      for x in value if isinstance(value, (tuple, list)) else (value,):
        if hasattr(x, "eqns") or hasattr(x, "jaxpr"):
          yield getattr(x, "jaxpr", x)

  def rows(j):
    found = {v.aval.shape[0] for e in j.eqns for v in e.outvars
             if getattr(v.aval, "shape", ())[1:] == (28, 28, num_classes)}
    return found.union(*(rows(s) for e in j.eqns for s in subjaxprs(e)))

  def conds(j):
    for e in j.eqns:  # not the segjax.ops.platform choices (platform-dependent conds), only what they hold
      if e.primitive.name == "cond" and "branches_platforms" not in e.params:
        branch_rows = [rows(b.jaxpr) for b in e.params["branches"]]
        if any(branch_rows):
          yield branch_rows
      for s in subjaxprs(e):
        yield from conds(s)

  return list(conds(jaxpr))


def _pairs(*counts):
  """_batch's image pairs, one pair per count of instances (up to 16), in one batch."""
  pairs = [_batch(c, max_instances=16, seed=c) for c in counts]
  return {k: np.concatenate([p[k] for p in pairs]) for k in pairs[0]}


@pytest.mark.slow
def test_mask_head_on_the_positives_chunks_gives_the_loss_and_gradient_of_all_slots(chunk_model, monkeypatch):
  """Training, batch sharded over 8 devices: batches whose positives need different numbers of chunks give the loss
  and gradient of the mask head on all p = 32 slots, from one compiled step."""
  from segjax.train import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  config, module, variables = chunk_model
  mesh = mesh_lib.make_mesh()
  batches = [jax.device_put(_pairs(*counts), mesh_lib.batch_sharding(mesh)) for counts in ((0, 0, 1, 2), (0, 16, 2, 0))]

  def loss_and_grad(params, batch, key):
    def objective(params):
      outputs, _ = module.apply(
          {"params": params, "batch_stats": variables["batch_stats"]}, batch["image"], train=True,
          mutable=["batch_stats"], rngs={"sampling": key}, targets={k: batch[k] for k in mask_rcnn.FORWARD_KEYS})
      return mask_rcnn.loss(outputs, batch, config)[0], outputs["mask_valid"].sum(1).max()
    return jax.value_and_grad(objective, has_aux=True)(params)

  chunk = mask_rcnn.MASK_CHUNK_SLOTS
  step = counting_jit(loss_and_grad)
  rows = _mask_head_rows(step.trace(variables["params"], batches[0], jax.random.key(0)).jaxpr.jaxpr, 2)
  # Forward and backward: the chunk's 8 images x 8 slots, or no slot for the chunks past the positives.
  assert rows and all(r == [{0}, {8 * chunk}] for r in rows), rows
  ours = [step(variables["params"], b, jax.random.key(i)) for i, b in enumerate(batches)]
  assert step.traces == 1
  chunks = [-(-int(positives) // chunk) for (_, positives), _ in ours]
  assert 0 < chunks[0] < chunks[1], chunks  # the batches run different numbers of chunks
  _on_all_slots(monkeypatch)
  reference = jax.jit(loss_and_grad)
  for i, (batch, ((loss, positives), grads)) in enumerate(zip(batches, ours)):
    (reference_loss, reference_positives), reference_grads = reference(variables["params"], batch, jax.random.key(i))
    assert positives == reference_positives
    np.testing.assert_allclose(loss, reference_loss, rtol=1e-6)
    for (path, g), r in zip(jax.tree_util.tree_leaves_with_path(grads), jax.tree.leaves(reference_grads)):
      np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5 * float(np.abs(r).max()),
                                 err_msg=jax.tree_util.keystr(path))


def test_masks_on_the_detections_chunks_equal_those_on_all_slots(chunk_model, monkeypatch):
  """Inference: with no valid detection and with some, the outputs of the mask head on the detections' chunks equal
  those of the mask head on all 100 slots, from one compiled predict."""
  _, module, variables = chunk_model
  image = _batch(3)["image"]
  background = "['params']['box_head']['cls_score']['bias']"
  no_detections = jax.tree_util.tree_map_with_path(  # the background logit raised: no score passes 0.05
      lambda path, x: x.at[0].add(50.0) if jax.tree_util.keystr(path) == background else x, variables)
  predict = counting_jit(lambda v, x: mask_rcnn.predict(module.apply(v, x, train=False), None))
  rows = _mask_head_rows(predict.trace(variables, image).jaxpr.jaxpr, 2)
  chunk = mask_rcnn.MASK_CHUNK_SLOTS
  assert rows == [[{0}, {2 * chunk}]], rows  # a chunk past the detections runs on 0 rows: no mask work
  ours = [predict(v, image) for v in (variables, no_detections)]
  assert predict.traces == 1
  some, none = ours
  # Some chunks run and some are skipped; and none runs.
  assert 0 < some["valid"].sum(1).max() <= 100 - chunk and not none["valid"].any()
  assert (some["masks"][some["valid"]].max((1, 2)) > 0.1).all()  # the compared masks are not empty
  _on_all_slots(monkeypatch)
  reference = jax.jit(lambda v, x: mask_rcnn.predict(module.apply(v, x, train=False), None))
  for v, outputs in zip((variables, no_detections), ours):
    expected = reference(v, image)
    for k in ("boxes", "scores", "labels", "valid"):
      np.testing.assert_array_equal(outputs[k], expected[k], err_msg=k)
    np.testing.assert_allclose(outputs["masks"], expected["masks"], atol=1e-6)


@pytest.mark.slow
def test_mask_loop_memory_does_not_grow_with_the_positive_slots():
  """The training step's temporaries with p = 128 positive slots exceed those with p = 32 (the same 128 RoIs for the
  box head) by less than the first mask convolution's im2col windows of the 96 extra slots' RoIs: the program holds
  one chunk of the mask head, as a switch whose largest branch runs all p slots would not."""
  def temporaries(positive_fraction):
    config = tiny_config()
    config.update({"roi_batch_size_per_image": 128, "roi_positive_fraction": positive_fraction})
    module = mask_rcnn.build(config, ml_collections.ConfigDict({"num_thing_classes": 1}))
    batch = _batch(3)
    variables = jax.eval_shape(lambda: module.init(jax.random.key(0), batch["image"], train=False))

    def loss(params, batch_stats):
      outputs, _ = module.apply({"params": params, "batch_stats": batch_stats}, batch["image"], train=True,
                                mutable=["batch_stats"], rngs={"sampling": jax.random.key(0)},
                                targets={k: batch[k] for k in mask_rcnn.FORWARD_KEYS})
      return mask_rcnn.loss(outputs, batch, config)[0]

    compiled = jax.jit(jax.grad(loss)).lower(variables["params"], variables["batch_stats"]).compile()
    return compiled.memory_analysis().temp_size_in_bytes, config

  small, _ = temporaries(0.25)
  large, config = temporaries(1.0)
  n, extra_slots = 2, 128 - 32
  windows = n * extra_slots * 14 * 14 * 9 * config.fpn_channels * 4  # [N * 96, 14, 14, 9 * C] float32
  assert large - small < windows, (large - small, windows)
