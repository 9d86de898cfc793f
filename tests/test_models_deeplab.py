"""DeepLab v3 and torchvision's FCN-ResNet: converted torchvision models give torchvision's logits through a
Predictor made of the converter's output alone, the same parameter counts, a loss that falls in training, and one
compile per input shape."""
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from segjax.inference import Predictor
from segjax.models import deeplab
from segjax.weights import torchvision as tv_weights
from references import optional, requires_torch, torch, torchvision

segmentation = getattr(optional("torchvision.models"), "segmentation", None)

NUM_CLASSES = 5


def _random_torch_model(name):
  torch.manual_seed(0)
  model = getattr(segmentation, name)(weights=None, weights_backbone=None, num_classes=NUM_CLASSES, aux_loss=True)
  with torch.no_grad():  # running statistics away from (0, 1), so a wrong mean/var mapping shows
    for module in model.modules():
      if isinstance(module, torch.nn.BatchNorm2d):
        module.running_mean.uniform_(-0.2, 0.2)
        module.running_var.uniform_(0.5, 1.5)
        module.weight.uniform_(0.5, 1.5)
        module.bias.uniform_(-0.2, 0.2)
  return model.eval()


@pytest.fixture(scope="module", params=["deeplabv3_resnet50", "fcn_resnet50"])
def converted(request):
  model = _random_torch_model(request.param)
  state = {k: v.numpy() for k, v in model.state_dict().items()}
  config, variables = tv_weights.convert(request.param, state)
  return request.param, model, config, variables


@requires_torch
def test_logits_match_torchvision(converted):
  """segjax on the [0, 1] image; torchvision on it normalised by its weights' own transforms (resize left out). The
  converter's config builds the model without a data set; the Predictor made of it alone gives the same logits."""
  name, model, config, variables = converted
  module = deeplab.build(config, None)
  x = np.random.default_rng(0).uniform(size=(1, 65, 81, 3)).astype(np.float32)  # odd sizes: crops and resizes
  normalise = torchvision.models.get_model_weights(name).DEFAULT.transforms(resize_size=None)
  with torch.no_grad():
    expected = model(normalise(torch.from_numpy(x.transpose(0, 3, 1, 2))))
  outputs = jax.jit(lambda v, x: module.apply(v, x, train=False))(variables, x)
  for key, ref in (("logits", expected["out"]), ("aux_logits", expected["aux"])):
    ref = ref.numpy().transpose(0, 2, 3, 1)
    assert outputs[key].shape == ref.shape
    np.testing.assert_allclose(outputs[key], ref, rtol=0, atol=1e-4 * np.abs(ref).max())
  (result,) = Predictor(config, variables)([x[0]])
  ref = expected["out"].numpy()[0].transpose(1, 2, 0)
  np.testing.assert_allclose(result["logits"], ref, rtol=0, atol=1e-4 * np.abs(ref).max())
  np.testing.assert_array_equal(result["labels"], result["logits"].argmax(-1))


@requires_torch
def test_parameter_count_matches_torchvision(converted):
  _, model, _, variables = converted
  torch_count = sum(p.numel() for p in model.parameters())
  ours = sum(np.size(p) for p in jax.tree.leaves(variables["params"]))
  assert ours == torch_count


def test_bad_pixel_normalization_is_named():
  info = ml_collections.ConfigDict({"num_semantic_classes": NUM_CLASSES})
  for bad in ({"pixel_std": (0.2, 0.2)}, {"pixel_std": (0.2, 0.0, 0.2)}, {"pixel_mean": (0.5,)}):
    with pytest.raises(ValueError, match=r"config.model.pixel_mean / pixel_std: 3 values each"):
      deeplab.build(ml_collections.ConfigDict({**TINY.to_dict(), **bad}), info)


@requires_torch
def test_converter_names_missing_keys():
  model = _random_torch_model("deeplabv3_resnet50")
  state = {k: v.numpy() for k, v in model.state_dict().items() if k != "classifier.0.project.0.weight"}
  with pytest.raises(ValueError, match="classifier.0.project.0.weight"):
    tv_weights.convert("deeplabv3_resnet50", state)


TINY = ml_collections.ConfigDict({"name": "deeplab_v3", "depth": 18, "width": 8, "output_stride": 16,
                                  "multi_grid": (1, 2), "head": "aspp", "rates": (6, 12, 18), "aux": True,
                                  "aux_weight": 0.4, "dtype": "float32"})


# Deformable ConvNets' DeepLab: the fc1024 head on a frozen-BN trunk with deformable res5 (bottleneck ResNets only).
DCN_HEAD = {"depth": 50, "multi_grid": None, "head": "fc1024", "norm": "frozen", "deformable_stages": (5,)}


# The fc1024 head on a frozen-BN ResNet-18 (the deformable res5's gradients: tests/test_backbones_deformable.py).
# The going-deeper head: block5 (two basic blocks, as ResNet-18's block4) and the 1x1 classifier (marked slow).
@pytest.mark.parametrize("overrides", [{}, {"head": "fc1024", "norm": "frozen"},
                                       pytest.param({"head": "cascade", "cascade_blocks": 1}, marks=pytest.mark.slow)],
                         ids=["aspp", "fc1024_frozen", "cascade"])
def test_tiny_deeplab_trains_without_recompiling(overrides):
  config = ml_collections.ConfigDict({**TINY.to_dict(), **overrides})
  module = deeplab.build(config, ml_collections.ConfigDict({"num_semantic_classes": 3}))
  rng = np.random.default_rng(0)
  labels = np.kron(rng.integers(0, 3, size=(2, 6, 6)), np.ones((8, 8), np.int32))  # 8x8 blocks of a class
  images = (np.eye(3)[labels] * 0.6 + rng.uniform(0, 0.4, size=(2, 48, 48, 3))).astype(np.float32)
  labels[:, :4] = 255
  variables = module.init(jax.random.key(0), images[:1], train=False)
  optimizer = optax.adam(3e-3)
  traces = []

  @jax.jit
  def step(params, batch_stats, opt_state, batch, key):
    traces.append(1)

    def loss_fn(params):
      outputs, updates = module.apply({"params": params, "batch_stats": batch_stats}, batch["image"], train=True,
                                      mutable=["batch_stats"], rngs={"dropout": key})
      return deeplab.loss(outputs, batch, config)[0], updates

    (value, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    deltas, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, deltas), updates["batch_stats"], opt_state, value

  params, batch_stats, opt_state = variables["params"], variables["batch_stats"], optimizer.init(variables["params"])
  losses = []
  for i in range(25):
    batch = {"image": jnp.asarray(images), "semantic": jnp.asarray(labels)}
    params, batch_stats, opt_state, value = step(params, batch_stats, opt_state, batch, jax.random.key(i))
    losses.append(float(value))
  assert np.mean(losses[-3:]) < 0.8 * losses[0], losses
  assert len(traces) == 1
  outputs = module.apply({"params": params, "batch_stats": batch_stats}, images, train=False)
  assert outputs["logits"].shape == (2, 48, 48, 3) and outputs["aux_logits"].shape == (2, 48, 48, 3)


def test_unknown_head_is_named():
  module = deeplab.DeepLabV3(num_classes=2, depth=18, width=8, head="pspnet")
  with pytest.raises(ValueError, match="config.model.head"):
    module.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))


@requires_torch
def test_paper_config_has_torchvision_r101_parameter_count():
  """The VOC config's model (21 classes, no aux head) is torchvision's deeplabv3_resnet101 to the parameter."""
  from train_util import REPO  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, REPO)
  from experiments import deeplab_v3_r101_voc  # pylint: disable=g-import-not-at-top
  config = deeplab_v3_r101_voc.get_config()
  module = deeplab.build(config.model, ml_collections.ConfigDict({"num_semantic_classes": 21}))
  ours = sum(np.size(p) for p in jax.tree.leaves(tv_weights.abstract_variables(module)["params"]))
  reference = segmentation.deeplabv3_resnet101(weights=None, weights_backbone=None, num_classes=21)
  assert ours == sum(p.numel() for p in reference.parameters())


@pytest.mark.slow  # 20 loop steps and the eval compile
def test_demo_config_trains_through_the_loop(tmp_path):
  """experiments/demo_deeplab_v3.py (v3+ decoder, aux head) at width 8 for 20 steps of FAST_OPTIMIZER: the main
  head's cross-entropy ends below CE_BELOW_IMAGE_BLIND (0.7 log 7: under any image-blind predictor's, see
  train_util); num_pictures 0 writes none."""
  from train_util import CE_BELOW_IMAGE_BLIND, FAST_OPTIMIZER  # pylint: disable=g-import-not-at-top
  from train_util import REPO, train_through_loop  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, REPO)
  from experiments import demo_deeplab_v3  # pylint: disable=g-import-not-at-top
  metrics, train = train_through_loop(tmp_path, demo_deeplab_v3.get_config().model, steps=20, num_pictures=0,
                                      **FAST_OPTIMIZER)
  assert not (tmp_path / "workdir" / "pictures").exists()
  assert all(np.isfinite(r["loss"]) and r["aux_loss"] > 0 for r in train)
  assert 0.0 <= metrics["mIoU"] <= 1.0
  main_losses = [r["main_loss"] for r in train]
  assert np.mean(main_losses[-3:]) < CE_BELOW_IMAGE_BLIND, main_losses


def test_v3plus_paper_config_builds_and_says_what_it_reproduces():
  from train_util import REPO  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, REPO)
  from experiments import deeplab_v3plus_r101_voc  # pylint: disable=g-import-not-at-top
  for field in ("python -m segjax.main --config=experiments/deeplab_v3plus_r101_voc.py", "Table 3", "78.85",
                "What differs"):
    assert field in deeplab_v3plus_r101_voc.__doc__
  config = deeplab_v3plus_r101_voc.get_config()
  assert (config.model.head, config.model.depth, config.model.output_stride) == ("decoder", 101, 16)
  module = deeplab.build(config.model, ml_collections.ConfigDict({"num_semantic_classes": 21}))
  head = tv_weights.abstract_variables(module)["params"]["classifier"]
  assert head["low_level_conv"]["kernel"].shape == (1, 1, 256, 48)  # ResNet-101's C2


def test_v3plus_decoder_shapes():
  """v3+ (Sec. 3.1): 48-channel C2 projection, two 3x3 convs of 256 on the concatenation, logits at input size."""
  config = ml_collections.ConfigDict({**TINY.to_dict(), "head": "decoder", "aux": False})
  module = deeplab.build(config, ml_collections.ConfigDict({"num_semantic_classes": 3}))
  variables = tv_weights.abstract_variables(module, (50, 66))
  head = variables["params"]["classifier"]
  assert head["low_level_conv"]["kernel"].shape == (1, 1, 8, 48)  # C2 of a width-8 ResNet-18 has 8 channels
  assert head["decoder1_conv"]["kernel"].shape == (3, 3, 256 + 48, 256)
  outputs = jax.eval_shape(lambda v, x: module.apply(v, x, train=False), variables,
                           jax.ShapeDtypeStruct((1, 50, 66, 3), jnp.float32))
  assert outputs["logits"].shape == (1, 50, 66, 3)


def test_fc1024_head_shapes_and_parameters():
  """Deformable ConvNets' DeepLab head (resnet_v1_101_deeplab_dcn.py): fc6 1x1 to 1024 with bias, score 1x1 to the
  classes; with frozen BN the trunk's normalisation holds no trainable parameters; logits at the input size."""
  config = ml_collections.ConfigDict({**TINY.to_dict(), **DCN_HEAD, "aux": False})
  module = deeplab.build(config, ml_collections.ConfigDict({"num_semantic_classes": 3}))
  variables = tv_weights.abstract_variables(module, (50, 66))
  head = variables["params"]["classifier"]
  channels = 4 * 8 * 8  # C5 of a width-8 ResNet-50: bottleneck expansion 4 times res5's 8 * width
  assert head["fc6"]["kernel"].shape == (1, 1, channels, 1024) and head["fc6"]["bias"].shape == (1024,)
  assert head["score"]["kernel"].shape == (1, 1, 1024, 3) and head["score"]["bias"].shape == (3,)
  assert sum(np.size(p) for p in jax.tree.leaves(head)) == channels * 1024 + 1024 + 1024 * 3 + 3
  backbone = variables["params"]["backbone"]
  assert not [k for k in backbone if "bn" in k] and "bn1" in variables["batch_stats"]["backbone"]
  offsets = [k for block in backbone.values() if isinstance(block, dict) for k in block if "offset" in k]
  assert len(offsets) == 3  # one offset conv beside conv2 of each of res5's three bottleneck blocks
  outputs = jax.eval_shape(lambda v, x: module.apply(v, x, train=False), variables,
                           jax.ShapeDtypeStruct((1, 50, 66, 3), jnp.float32))
  assert outputs["logits"].shape == (1, 50, 66, 3)


@pytest.mark.parametrize("name,classes,plain,deformable", [("deeplab_dcn_r101_voc", 21, "70.7", "75.9"),
                                                            ("deeplab_dcn_r101_cityscapes", 19, "70.3", "75.2")])
def test_dcn_paper_configs_build_the_reference_model(name, classes, plain, deformable):
  """Deformable ConvNets' DeepLab configs: ResNet-101, deformable res5, fc1024 head; `optimizer.frozen` fixes conv1
  and res2 (torchvision's layer1) and nothing else, as the reference's FIXED_PARAMS; the docstring names the rows."""
  import importlib  # pylint: disable=g-import-not-at-top
  import re  # pylint: disable=g-import-not-at-top
  from train_util import REPO  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, REPO)
  module_ = importlib.import_module(f"experiments.{name}")
  for field in (f"python -m segjax.main --config=experiments/{name}.py", plain, deformable, "Needs"):
    assert field in module_.__doc__
  config = module_.get_config()
  module = deeplab.build(config.model, ml_collections.ConfigDict({"num_semantic_classes": classes}))
  params = tv_weights.abstract_variables(module, (64, 64))["params"]
  assert params["classifier"]["fc6"]["kernel"].shape == (1, 1, 2048, 1024)
  assert params["classifier"]["score"]["kernel"].shape == (1, 1, 1024, classes)
  paths = ["/".join(str(getattr(k, "key", k)) for k in path) for path, _ in jax.tree_util.tree_leaves_with_path(params)]
  frozen = [p for p in paths if any(re.match(r, p) for r in config.optimizer.frozen)]
  assert frozen and all(p.startswith(("backbone/conv1/", "backbone/layer1_")) for p in frozen)
  assert len([p for p in paths if p.startswith(("backbone/conv1/", "backbone/layer1_"))]) == len(frozen)
  assert len([p for p in paths if "offset" in p]) == 2 * 3  # kernel and bias of res5's three offset convs
