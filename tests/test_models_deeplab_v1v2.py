"""DeepLab v1 (basic and LargeFOV, VGG-16) and v2 (ResNet-101 ASPP-L): DeepLab's x8 interpolation against torch and
float64 NumPy, the trunks against torch rebuilt from the prototxts, parameter counts against the papers' Table 2 and
torchvision, ImageNet weight conversion, training without recompiling, and the experiment configs."""
import ast
import functools
import pathlib
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from segjax.backbones.vgg import VGG16
from segjax.config import override
from segjax.layers.upsample import interp_zoom
from segjax.models import deeplab_v1, deeplab_v2, get_model
from segjax.train import pretrained
from segjax.weights.torchvision import abstract_variables, convert
from references import requires_torch, torch, torchvision


REPO = pathlib.Path(__file__).resolve().parents[1]
VOC = ml_collections.ConfigDict({"num_semantic_classes": 21})
# VGG-16's 13 convs (in, out), written out from Simonyan & Zisserman's Table 1 (configuration D).
VGG16_CONVS = ((3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256), (256, 512),
               (512, 512), (512, 512), (512, 512), (512, 512), (512, 512))


def _count(tree):
  return sum(int(np.size(x)) for x in jax.tree.leaves(tree))


def _bilinear_reference(x, factor, height, width):
  """float64: output pixel y reads score y / factor, clamped to the last score."""
  h, w = x.shape[1:3]
  x = x.astype(np.float64)

  def taps(out, size):
    src = np.minimum(np.arange(out) / factor, size - 1)
    lo = np.floor(src).astype(int)
    return lo, np.minimum(lo + 1, size - 1), src - lo

  y0, y1, fy = taps(height, h)
  x0, x1, fx = taps(width, w)
  fy, fx = fy[None, :, None, None], fx[None, None, :, None]
  top = x[:, y0][:, :, x0] * (1 - fx) + x[:, y0][:, :, x1] * fx
  bottom = x[:, y1][:, :, x0] * (1 - fx) + x[:, y1][:, :, x1] * fx
  return top * (1 - fy) + bottom * fy


@requires_torch
def test_interp_zoom_is_caffe_interp_on_aligned_sizes_and_clamps_past_the_last_score():
  x = np.random.default_rng(0).normal(size=(2, 5, 4, 3)).astype(np.float32)
  aligned = interp_zoom(x, 8, 33, 25)  # 8 (h - 1) + 1: Caffe Interp zoom_factor 8 = align_corners=True
  ref = torch.nn.functional.interpolate(torch.from_numpy(x.transpose(0, 3, 1, 2)), size=(33, 25), mode="bilinear",
                                        align_corners=True).numpy().transpose(0, 2, 3, 1)
  np.testing.assert_allclose(aligned, ref, rtol=0, atol=1e-6)
  other = interp_zoom(x, 8, 40, 30)  # past the last score centre (32, 24) the last row/column repeats
  np.testing.assert_allclose(other, _bilinear_reference(x, 8, 40, 30), rtol=0, atol=1e-6)
  np.testing.assert_allclose(other[:, 32:], np.broadcast_to(other[:, 32:33], other[:, 32:].shape), atol=1e-6)


def _torch_trunk(variant, width):
  """DeepLab's VGG-16 trunk rebuilt in torch from the prototxts: 3x3 max pools (stride 2, 2, 2, 1, 1, pad 1, ceil),
  conv5 dilated 2; "deeplab": fc6 4x4 dilation 4 pad 6; "deeplab_largefov": pool5a 3x3 average, fc6 3x3 dilation 12."""
  layers, channels, scale = [], 3, width / 64
  for index, (_, out) in enumerate(VGG16_CONVS):
    stage = 1 + (index >= 2) + (index >= 4) + (index >= 7) + (index >= 10)
    dilation = 2 if stage == 5 else 1
    layers += [torch.nn.Conv2d(channels, int(out * scale), 3, padding=dilation, dilation=dilation), torch.nn.ReLU()]
    channels = int(out * scale)
    if index in (1, 3, 6, 9, 12):
      layers.append(torch.nn.MaxPool2d(3, 2 if stage <= 3 else 1, 1, ceil_mode=True))
  if variant == "deeplab":
    fc = 64 * width
    layers.append(torch.nn.Conv2d(channels, fc, 4, padding=6, dilation=4))
  else:
    fc = 16 * width
    layers += [torch.nn.AvgPool2d(3, 1, 1), torch.nn.Conv2d(channels, fc, 3, padding=12, dilation=12)]
  layers += [torch.nn.ReLU(), torch.nn.Conv2d(fc, fc, 1), torch.nn.ReLU()]
  return torch.nn.Sequential(*layers).eval()


@requires_torch
@pytest.mark.parametrize("variant", ["deeplab", "deeplab_largefov"])
def test_vgg16_deeplab_trunks_match_torch(variant):
  reference = _torch_trunk(variant, 8)
  convs = [m for m in reference if isinstance(m, torch.nn.Conv2d)]
  names = [f"conv{s}_{i}" for s, n in enumerate((2, 2, 3, 3, 3), 1) for i in range(1, n + 1)] + ["fc6", "fc7"]
  params = {name: {"kernel": conv.weight.detach().numpy().transpose(2, 3, 1, 0), "bias": conv.bias.detach().numpy()}
            for name, conv in zip(names, convs)}
  module = VGG16(variant=variant, width=8)
  for size in ((33, 41), (30, 27)):  # 8k + 1 sizes, and sizes where the ceil-mode pools overhang
    x = np.random.default_rng(1).uniform(size=(1, *size, 3)).astype(np.float32)
    ours = module.apply({"params": params}, x, train=False)["fc7"]
    with torch.no_grad():
      ref = reference(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
    stride8 = [functools.reduce(lambda n, _: -(-(n - 1) // 2) + 1, range(3), n) for n in size]  # 3 ceil-mode pools
    assert ours.shape == ref.shape == (1, *stride8, 512 if variant == "deeplab" else 128)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-4 * np.abs(ref).max())


def _table2_count(fc6_kernel, fc_channels, num_classes=21):
  """Parameters of DeepLab v1 from its layer list: VGG-16's convs, fc6 (k x k x 512), fc7 1x1, fc8 1x1, with biases."""
  count = sum(9 * i * o + o for i, o in VGG16_CONVS)
  count += fc6_kernel * fc6_kernel * 512 * fc_channels + fc_channels
  count += fc_channels * fc_channels + fc_channels
  return count + fc_channels * num_classes + num_classes


def test_v1_parameter_counts_are_table2s():
  """Table 2 (Chen et al. 2015) gives millions to one decimal: DeepLab-CRF (4x4) 65.1M, LargeFOV 20.5M."""
  for variant, kernel, channels, published in (("deeplab", 4, 4096, "65.1"), ("largefov", 3, 1024, "20.5")):
    module = deeplab_v1.DeepLabV1(num_classes=21, variant=variant)
    ours = _count(abstract_variables(module, (65, 65))["params"])
    assert ours == _table2_count(kernel, channels)
    assert f"{ours / 1e6:.1f}" == published, (variant, ours)


@requires_torch
def test_v2_parameter_count_is_torchvision_resnet101_plus_aspp():
  module = deeplab_v2.DeepLabV2(num_classes=21)  # frozen BN: scale and bias live in batch_stats
  variables = abstract_variables(module, (65, 65))
  frozen_affine = _count([v for k, v in jax.tree_util.tree_flatten_with_path(variables["batch_stats"])[0]
                          if k[-1].key in ("scale", "bias")])
  backbone = torchvision.models.resnet101(weights=None)
  reference = sum(p.numel() for n, p in backbone.named_parameters() if not n.startswith("fc."))
  aspp = 4 * (3 * 3 * 2048 * 21 + 21)  # four 3x3 convs 2048 -> 21 with bias
  assert _count(variables["params"]) + frozen_affine == reference + aspp == 44_048_532


@requires_torch
def test_imagenet_fc6_is_decimated_and_fits_the_models():
  with torch.device("meta"):  # torchvision vgg16's state dict shapes, without its slow initialisation
    shapes = {k: tuple(v.shape) for k, v in torchvision.models.vgg16(weights=None).state_dict().items()}
  rng = np.random.default_rng(0)
  state = {k: rng.random(shape, dtype=np.float32) for k, shape in shapes.items()}
  fc6 = state["classifier.0.weight"].reshape(4096, 512, 7, 7)
  fc7 = state["classifier.3.weight"]
  config, variables = convert("vgg16_deeplab", state)
  assert config.variant == "deeplab"
  np.testing.assert_array_equal(variables["params"]["fc6"]["kernel"], fc6[:, :, 0::2, 0::2].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(variables["params"]["fc7"]["kernel"][0, 0], fc7.T)
  _, large = convert("vgg16_deeplab_largefov", state)
  np.testing.assert_array_equal(large["params"]["fc6"]["kernel"], fc6[::4, :, 0::3, 0::3].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(large["params"]["fc6"]["bias"], state["classifier.0.bias"][::4])
  np.testing.assert_array_equal(large["params"]["fc7"]["kernel"][0, 0], fc7[::4, ::4].T)
  np.testing.assert_array_equal(large["params"]["conv5_3"]["bias"], state["features.28.bias"])
  # config.init_from: the converted trunk lands on the DenseCRF-wrapped model's base/backbone.
  model = get_model("dense_crf").build(ml_collections.ConfigDict(
      {"base": {"name": "deeplab_v1", "variant": "largefov", "width": 64, "dtype": "float32"}, "crf": {}}), VOC)
  variables = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), abstract_variables(model, (33, 33)))
  merged = pretrained.merge_pretrained(variables, large)
  np.testing.assert_array_equal(merged["params"]["base"]["backbone"]["fc7"]["bias"], state["classifier.3.bias"][::4])


@requires_torch
def test_frozen_norm_model_starts_from_torchvision_resnet():
  """DeepLab v2's frozen BN keeps scale and bias as batch_stats; converted ImageNet BN weights are params."""
  torch.manual_seed(0)
  state = torchvision.models.resnet18(weights=None).state_dict()
  with torch.no_grad():
    state["bn1.weight"].uniform_(0.5, 1.5)
  _, saved = convert("resnet18", {k: v.numpy() for k, v in state.items()})
  module = deeplab_v2.DeepLabV2(num_classes=3, depth=18, width=64)
  variables = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), abstract_variables(module, (33, 33)))
  merged = pretrained.merge_pretrained(variables, saved)
  np.testing.assert_array_equal(merged["batch_stats"]["backbone"]["bn1"]["scale"], state["bn1.weight"].numpy())
  np.testing.assert_array_equal(merged["params"]["backbone"]["conv1"]["kernel"],
                                state["conv1.weight"].numpy().transpose(2, 3, 1, 0))


TINY = {
    "deeplab_v1": ml_collections.ConfigDict({"name": "deeplab_v1", "variant": "deeplab", "width": 8,
                                             "dtype": "float32"}),
    "deeplab_v2": ml_collections.ConfigDict({"name": "deeplab_v2", "depth": 18, "width": 8, "norm": "batch",
                                             "output_stride": 8, "rates": (2, 4, 6, 8), "dtype": "float32"}),
}


def _blocks(rng, n=2, size=41):
  """Colour-coded 8x8 blocks of a class, centred on the stride-8 score centres (8i, 8j) of a DeepLab net."""
  cells = rng.integers(0, 3, size=(n, size // 8 + 1, size // 8 + 1))
  index = (np.arange(size) + 4) // 8
  labels = cells[:, index][:, :, index].astype(np.int32)
  images = (np.eye(3)[labels] * 0.6 + rng.uniform(0, 0.4, size=(n, size, size, 3))).astype(np.float32)
  labels[:, :4] = 255
  return {"image": jnp.asarray(images), "semantic": jnp.asarray(labels)}


@pytest.mark.parametrize("name", sorted(TINY))
def test_tiny_model_trains_without_recompiling(name):
  config, model = TINY[name], get_model(name)
  module = model.build(config, ml_collections.ConfigDict({"num_semantic_classes": 3}))
  rng = np.random.default_rng(0)
  batch = _blocks(rng)
  variables = module.init(jax.random.key(0), batch["image"][:1], train=False)
  optimizer = optax.adam(1e-3)
  traces = []

  @jax.jit
  def step(variables, opt_state, batch, key):
    traces.append(1)

    def loss_fn(params):
      outputs, updates = module.apply({**variables, "params": params}, batch["image"], train=True,
                                      mutable=["batch_stats"], rngs={"dropout": key})
      return model.loss(outputs, batch, config)[0], updates

    (value, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables["params"])
    deltas, opt_state = optimizer.update(grads, opt_state)
    return {**variables, **updates, "params": optax.apply_updates(variables["params"], deltas)}, opt_state, value

  opt_state, losses = optimizer.init(variables["params"]), []
  for i in range(30):
    variables, opt_state, value = step(variables, opt_state, batch if i < 29 else _blocks(rng), jax.random.key(i))
    losses.append(float(value))
  assert np.isfinite(losses).all() and np.mean(losses[-4:-1]) < 0.8 * losses[0], losses
  assert len(traces) == 1  # the second batch reused the compiled step
  outputs = module.apply(variables, batch["image"], train=False)
  assert outputs["logits"].shape == (2, 41, 41, 3)
  assert model.predict(outputs, config)["labels"].dtype == jnp.int32


def test_bad_variant_is_named():
  with pytest.raises(ValueError, match="config.model.variant"):
    deeplab_v1.DeepLabV1(num_classes=3, variant="msc")


CONFIGS = {"deeplab_v1_vgg16_crf_voc": ("59.80", "63.74", 65_140_565),
           "deeplab_v1_largefov_crf_voc": ("62.25", "67.64", 20_505_429),
           "deeplab_v2_r101_aspp_crf_voc": ("76.35", "77.69", 43_943_188),
           "demo_deeplab_crf": (None, None, None)}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_experiment_config_builds_and_has_its_docstring(name):
  sys.path.insert(0, str(REPO))
  config_module = __import__(f"experiments.{name}", fromlist=["get_config"])
  doc = ast.get_docstring(ast.parse((REPO / "experiments" / f"{name}.py").read_text()))
  assert f"python -m segjax.main --config=experiments/{name}.py" in doc
  without_crf, with_crf, count = CONFIGS[name]
  if count is None:
    assert "Not a paper row" in doc
  else:
    assert "Table" in doc and without_crf in doc and with_crf in doc and "Schedule" in doc and "Differences" in doc
    assert "scripts.convert_weights --name" in doc and "--config.init_from" in doc
  config = config_module.get_config()
  assert config.model.name == "dense_crf" and set(config.model.crf) >= {"w_bilateral", "theta_alpha", "theta_beta"}
  module = get_model("dense_crf").build(config.model, VOC)
  variables = abstract_variables(module, (65, 65))  # jax.eval_shape: no compute
  outputs = jax.eval_shape(lambda v, x: module.apply(v, x, train=False), variables,
                           jax.ShapeDtypeStruct((1, 65, 65, 3), jnp.float32))
  assert outputs["crf_probabilities"].shape == outputs["logits"].shape == (1, 65, 65, 21)
  if count is not None:
    assert _count(variables["params"]) == count


@pytest.mark.slow
def test_demo_trains_through_the_loop(tmp_path):
  """experiments/demo_deeplab_crf.py at width 8 on the tiny split, 30 steps of FAST_OPTIMIZER at the demo's 1e-3 (the
  VGG trunk has no normalisation layers: at 1e-2 or 3e-3 an early step throws its loss far up): its cross-entropy
  ends below CE_BELOW_IMAGE_BLIND (0.7 log 7: under any image-blind predictor's, see train_util)."""
  from segjax.train.loop import train_and_evaluate  # pylint: disable=g-import-not-at-top
  from train_util import CE_BELOW_IMAGE_BLIND, FAST_OPTIMIZER, TINY as TINY_RUN  # pylint: disable=g-import-not-at-top
  from train_util import read_metrics  # pylint: disable=g-import-not-at-top
  from experiments import demo_deeplab_crf  # pylint: disable=g-import-not-at-top
  steps = 30
  config = override(demo_deeplab_crf.get_config(), {
      **{k: v for k, v in TINY_RUN.items() if not k.startswith("model.")}, **FAST_OPTIMIZER,
      "optimizer.learning_rate": 1e-3, "total_steps": steps, "eval_every_steps": steps,
      "checkpoint_every_steps": steps, "model.base.width": 8, "dataset.root": str(tmp_path / "data"),
      "dataset.data_dir": str(tmp_path / "data_tfds")})
  metrics = train_and_evaluate(config, str(tmp_path / "workdir"))
  train = read_metrics(tmp_path / "workdir")
  assert len(train) == steps and all(np.isfinite(r["loss"]) for r in train)
  assert 0.0 <= metrics["mIoU"] <= 1.0
  losses = [r["loss"] for r in train]
  assert np.mean(losses[-3:]) < CE_BELOW_IMAGE_BLIND, losses
