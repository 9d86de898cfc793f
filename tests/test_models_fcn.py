"""FCN-32s/16s/8s on VGG-16 against the released Caffe networks (voc-fcn*s/train.prototxt, rebuilt here in torch):
logits, parameter count, output size and the bilinear initialisation of the upsampling; a tiny FCN trains without
recompiling; the FCN and CRF-as-RNN configs build."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from segjax.backbones.vgg import VGG16
from segjax.config import override
from segjax.layers.upsample import BilinearUpsample
from segjax.models import fcn, get_model
from segjax.train import pretrained
from segjax.weights import torchvision as tv_weights
from train_util import blocky_batch
from references import requires_torch, torch, torchvision


VGG = [("conv1_1", 3, 64), ("conv1_2", 64, 64), "pool", ("conv2_1", 64, 128), ("conv2_2", 128, 128), "pool",
       ("conv3_1", 128, 256), ("conv3_2", 256, 256), ("conv3_3", 256, 256), "pool3",
       ("conv4_1", 256, 512), ("conv4_2", 512, 512), ("conv4_3", 512, 512), "pool4",
       ("conv5_1", 512, 512), ("conv5_2", 512, 512), ("conv5_3", 512, 512), "pool"]


def vgg_fcn_config(skips, skip_scales=None):
  config = {"name": "fcn", "backbone": "vgg16", "skips": skips, "dtype": "float32"}
  return ml_collections.ConfigDict(config if skip_scales is None else {**config, "skip_scales": skip_scales})


def build(config, num_classes):
  return fcn.build(config, ml_collections.ConfigDict({"num_semantic_classes": num_classes}))


class CaffeFCN8s(torch.nn.Module if torch else object):
  """voc-fcn8s(-atonce)/train.prototxt in torch, layer by layer (eval mode: the Dropout layers are identities)."""

  def __init__(self, num_classes, scales=(1.0, 1.0)):
    super().__init__()
    self.scales = scales
    self.convs = torch.nn.ModuleDict({name: torch.nn.Conv2d(cin, cout, 3, padding=100 if name == "conv1_1" else 1)
                                      for name, cin, cout in (l for l in VGG if isinstance(l, tuple))})
    self.fc6, self.fc7 = torch.nn.Conv2d(512, 4096, 7), torch.nn.Conv2d(4096, 4096, 1)
    self.score_fr = torch.nn.Conv2d(4096, num_classes, 1)
    self.score_pool4, self.score_pool3 = torch.nn.Conv2d(512, num_classes, 1), torch.nn.Conv2d(256, num_classes, 1)
    deconv = lambda k: torch.nn.ConvTranspose2d(num_classes, num_classes, k, stride=k // 2, bias=False)
    self.upscore2, self.upscore_pool4, self.upscore8 = deconv(4), deconv(4), deconv(16)

  def forward(self, data):
    x, pools = data, {}
    for layer in VGG:
      if isinstance(layer, tuple):
        x = torch.relu(self.convs[layer[0]](x))
      else:
        x = pools[layer] = torch.nn.functional.max_pool2d(x, 2, 2, ceil_mode=True)  # Caffe rounds up
    x = torch.relu(self.fc7(torch.relu(self.fc6(x))))
    crop = lambda a, offset, like: a[:, :, offset:offset + like.shape[2], offset:offset + like.shape[3]]
    upscore2 = self.upscore2(self.score_fr(x))
    fuse_pool4 = upscore2 + crop(self.score_pool4(self.scales[0] * pools["pool4"]), 5, upscore2)
    upscore_pool4 = self.upscore_pool4(fuse_pool4)
    fuse_pool3 = upscore_pool4 + crop(self.score_pool3(self.scales[1] * pools["pool3"]), 9, upscore_pool4)
    return crop(self.upscore8(fuse_pool3), 31, data)


def caffe_parameter_count(num_classes):
  """Blobs of voc-fcn8s/train.prototxt: conv weights and biases, deconv weights only (bias_term: false)."""
  convs = [(cin, cout, 3) for _, cin, cout in (l for l in VGG if isinstance(l, tuple))]
  convs += [(512, 4096, 7), (4096, 4096, 1), (4096, num_classes, 1), (512, num_classes, 1), (256, num_classes, 1)]
  deconvs = [(num_classes, num_classes, k) for k in (4, 4, 16)]
  return sum(i * o * k * k + o for i, o, k in convs) + sum(i * o * k * k for i, o, k in deconvs)


def to_jax_variables(model):
  """The torch reference's weights as FCNVGG16 variables (OIHW -> HWIO; a ConvTranspose2d kernel is applied flipped
  relative to lax.conv_transpose, see tests/test_layers_upsample.py)."""
  conv = lambda m: {"kernel": m.weight.detach().numpy().transpose(2, 3, 1, 0), "bias": m.bias.detach().numpy()}
  deconv = lambda m: {"kernel": m.weight.detach().numpy().transpose(2, 3, 0, 1)[::-1, ::-1].copy()}
  backbone = {name: conv(m) for name, m in model.convs.items()}
  backbone.update(fc6=conv(model.fc6), fc7=conv(model.fc7))
  return {"params": {"backbone": backbone, "score_fr": conv(model.score_fr), "score_pool4": conv(model.score_pool4),
                     "score_pool3": conv(model.score_pool3), "upscore2": deconv(model.upscore2),
                     "upscore_pool4": deconv(model.upscore_pool4), "upscore8": deconv(model.upscore8)}}


@requires_torch
@pytest.mark.parametrize("hw, scales", [((37, 45), (1.0, 1.0)), ((45, 33), (0.01, 0.0001))])
def test_vgg_fcn8s_matches_caffe_prototxt(hw, scales):
  """Staged voc-fcn8s at one odd size, at-once (pool4 x 0.01, pool3 x 0.0001) at another: random weights, score
  layers boosted by 1 / scale so that every stream counts in the sum. segjax takes the [0, 1] image, the reference
  that image normalised as torchvision's VGG-16 weights expect."""
  torch.manual_seed(sum(hw))
  reference = CaffeFCN8s(5, scales).eval()
  with torch.no_grad():
    for m in reference.modules():
      if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
        torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")  # activations keep their scale through VGG-16
        if m.bias is not None:
          m.bias.uniform_(-0.1, 0.1)
    reference.score_pool4.weight /= scales[0]
    reference.score_pool3.weight /= scales[1]
  x = np.random.default_rng(sum(hw)).uniform(0, 1, (1, *hw, 3)).astype(np.float32)
  imagenet = torchvision.models.VGG16_Weights.DEFAULT.transforms()
  normalised = torchvision.transforms.functional.normalize(torch.from_numpy(x.transpose(0, 3, 1, 2)), imagenet.mean,
                                                           imagenet.std)
  with torch.no_grad():
    expected = reference(normalised).numpy().transpose(0, 2, 3, 1)
  module = build(vgg_fcn_config(("pool4", "pool3"), scales), 5)
  logits = jax.jit(lambda v, x: module.apply(v, x)["logits"])(to_jax_variables(reference), x)
  assert logits.shape == expected.shape == (1, *hw, 5)
  np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-4 * np.abs(expected).max())


def test_vgg_fcn8s_parameter_count_is_the_prototxts():
  """134,489,759 at 21 classes: VGG-16 without fc8 (134,260,544) plus the score and upscore layers."""
  module = build(vgg_fcn_config(("pool4", "pool3")), 21)
  variables = jax.eval_shape(lambda x: module.init(jax.random.key(0), x), jax.ShapeDtypeStruct((1, 32, 32, 3),
                                                                                                jnp.float32))
  ours = sum(np.prod(p.shape) for p in jax.tree.leaves(variables["params"]))
  assert ours == caffe_parameter_count(21)
  assert 134_000_000 < ours < 135_000_000


@pytest.mark.parametrize("skips, upsampling", [((), {"upscore": 64}), (("pool4",), {"upscore2": 4, "upscore16": 32}),
                                               (("pool4", "pool3"), {"upscore2": 4, "upscore_pool4": 4,
                                                                     "upscore8": 16})])
def test_vgg_fcn_outputs_have_the_input_size(skips, upsampling):
  module = build(vgg_fcn_config(skips), 21)
  for hw in ((1, 1), (31, 47), (64, 64), (500, 375)):
    x = jax.ShapeDtypeStruct((2, *hw, 3), jnp.float32)
    variables = jax.eval_shape(lambda x: module.init(jax.random.key(0), x), x)
    outputs = jax.eval_shape(lambda v, x: module.apply(v, x, train=True, rngs={"dropout": jax.random.key(1)}),
                             variables, x)
    assert outputs["logits"].shape == (2, *hw, 21)
  heads = {k: v for k, v in variables["params"].items() if k != "backbone"}
  assert {k: v["kernel"].shape for k, v in heads.items() if k.startswith("upscore")} == {
      k: (size, size, 21, 21) for k, size in upsampling.items()}
  assert all(set(heads[k]) == {"kernel"} for k in upsampling)  # no bias, as bias_term: false


def coord_map(layers):
  """(scale, shift) with data coordinate = scale * index + shift after `layers`, as caffe.coord_map composes them:
  a conv or pool (k, s, pad) maps output o to input s o + (k - 1) / 2 - pad, a deconvolution (k, s) the inverse."""
  scale, shift = 1.0, 0.0
  for kind, k, s, pad in layers:
    a, b = (s, (k - 1) / 2 - pad) if kind == "conv" else (1 / s, -(k - 1) / 2 / s)
    scale, shift = scale * a, scale * b + shift
  return scale, shift


def test_crop_offsets_are_caffes_coord_map():
  """score_pool4c, score_pool3c and score of voc-fcn8s (5, 9, 31), voc-fcn16s (5, 27), voc-fcn32s (19) follow from
  the layer geometry alone: the index in the cropped blob of the reference blob's first cell."""
  trunk = [("conv", 3, 1, 100)] + [("conv", 3, 1, 1) if isinstance(l, tuple) else ("conv", 2, 2, 0) for l in VGG][1:]
  pool3, pool4 = trunk[:VGG.index("pool3") + 1], trunk[:VGG.index("pool4") + 1]
  score_fr = trunk + [("conv", 7, 1, 0), ("conv", 1, 1, 0), ("conv", 1, 1, 0)]
  upscore2 = score_fr + [("deconv", 4, 2, 0)]
  upscore_pool4 = upscore2 + [("deconv", 4, 2, 0)]

  def offset(cropped, reference):
    (a, b), (c, d) = coord_map(cropped), coord_map(reference)
    assert a == c
    return (d - b) / a

  assert (offset(pool4, upscore2), offset(pool3, upscore_pool4)) == (fcn._SKIP_OFFSETS["pool4"],
                                                                     fcn._SKIP_OFFSETS["pool3"])
  for num_skips, (name, factor, crop) in fcn._LAST_UPSAMPLING.items():
    last = [score_fr, upscore2, upscore_pool4][num_skips] + [("deconv", 2 * factor, factor, 0)]
    assert offset(last, []) == crop, name


def numpy_bilinear(x, factor):
  """float64 bilinear interpolation of [H, W] on Caffe's deconvolution grid: output o samples the input at
  (o - f + 1/2) / f (the centre of the 2f kernel); NaN where that lies outside the input."""
  def axis(n):
    coords = (np.arange((n + 1) * factor) - factor + 0.5) / factor
    return coords, (coords >= 0) & (coords <= n - 1)
  (cy, vy), (cx, vx) = axis(x.shape[0]), axis(x.shape[1])
  rows = np.stack([np.interp(cy, np.arange(x.shape[0]), x[:, j]) for j in range(x.shape[1])], 1)
  out = np.stack([np.interp(cx, np.arange(x.shape[1]), rows[i]) for i in range(len(cy))])
  return np.where(vy[:, None] & vx[None, :], out, np.nan)


def test_vgg_fcn8s_upsampling_starts_bilinear_and_scores_at_zero():
  module = build(vgg_fcn_config(("pool4", "pool3")), 3)
  init = jax.jit(lambda key: {k: v for k, v in module.init(key, jnp.zeros((1, 8, 8, 3)))["params"].items()
                              if k != "backbone"})  # XLA drops the unused VGG-16 initialisers and forward pass
  params = init(jax.random.key(0))
  assert all(not np.any(params[k]["kernel"]) for k in ("score_fr", "score_pool4", "score_pool3"))
  ys, xs = np.mgrid[:9, :11] / 10.0
  smooth = np.stack([np.sin(2 * ys + xs), np.cos(ys - 3 * xs), ys * xs], -1)  # three channels, each its own map
  for name, factor in (("upscore2", 2), ("upscore_pool4", 2), ("upscore8", 8)):
    layer = BilinearUpsample(factor, 3, full=True)
    upsampled = np.asarray(layer.apply({"params": params[name]}, smooth[None].astype(np.float32))[0])
    assert upsampled.shape == (10 * factor, 12 * factor, 3)
    for c in range(3):
      expected = numpy_bilinear(smooth[..., c], factor)
      inside = ~np.isnan(expected)
      assert inside.sum() > 0.6 * inside.size
      np.testing.assert_allclose(upsampled[..., c][inside], expected[inside], atol=1e-5)


def test_bad_vgg_config_is_named():
  with pytest.raises(ValueError, match="config.model.skips"):
    build(vgg_fcn_config(("pool3",)), 3)
  with pytest.raises(ValueError, match="config.model.skip_scales"):
    build(vgg_fcn_config(("pool4", "pool3"), (0.01,)), 3)
  with pytest.raises(ValueError, match="config.model.backbone"):
    build(ml_collections.ConfigDict({"backbone": "vgg19", "skips": ()}), 3)


TINY = ml_collections.ConfigDict({"name": "fcn", "backbone": "resnet", "depth": 18, "width": 8, "output_stride": 32,
                                  "skips": ("C4", "C3"), "dtype": "float32"})


def test_tiny_fcn8s_trains_without_recompiling():
  module = get_model("fcn").build(TINY, ml_collections.ConfigDict({"num_semantic_classes": 3}))
  images, labels = blocky_batch(3, blocks=6)  # 8x8 blocks of a class, 48x48
  variables = module.init(jax.random.key(0), images[:1])
  optimizer = optax.adam(1e-2)
  traces = []

  @jax.jit
  def step(params, batch_stats, opt_state, batch):
    traces.append(1)

    def loss_fn(params):
      outputs, updates = module.apply({"params": params, "batch_stats": batch_stats}, batch["image"], train=True,
                                      mutable=["batch_stats"])
      return fcn.loss(outputs, batch, TINY)[0], updates

    (value, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    deltas, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, deltas), updates["batch_stats"], opt_state, value

  params, batch_stats, opt_state = variables["params"], variables["batch_stats"], optimizer.init(variables["params"])
  losses = []
  for i in range(20):
    flip = i % 2 == 1  # a second batch of other contents, same shapes
    batch = {"image": images[:, :, ::-1] if flip else images, "semantic": labels[:, :, ::-1] if flip else labels}
    params, batch_stats, opt_state, value = step(params, batch_stats, opt_state, batch)
    losses.append(float(value))
  assert np.mean(losses[-4:]) < 0.7 * losses[0], losses
  assert len(traces) == 1


def _experiment(name):
  import importlib  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  from train_util import REPO  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, REPO)
  return importlib.import_module(f"experiments.{name}")


@pytest.mark.parametrize("name, num_classes, fields", [
    ("fcn8s_vgg16_voc", 21, ("Table 3", "62.2", "62.7", "65.4", "0.01", "0.0001", "Schedule:", "What differs:",
                             "Needs")),
    ("crf_rnn_fcn8s_voc", 21, ("Table 1", "72.0", "74.7", "1e-13", "Schedule:", "What differs:", "Needs")),
    ("demo_crf_rnn", 7, ("Not a paper row", "Target"))])
def test_experiment_configs_build_and_say_what_they_reproduce(name, num_classes, fields):
  module = _experiment(name)
  doc = module.__doc__
  assert f"python -m segjax.main --config=experiments/{name}.py" in doc
  assert all(field in doc for field in fields), [f for f in fields if f not in doc]
  config = module.get_config()
  model_lib = get_model(config.model.name)
  model = model_lib.build(config.model, ml_collections.ConfigDict({"num_semantic_classes": num_classes}))
  x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
  outputs = jax.eval_shape(lambda v, x: model.apply(v, x), variables, x)
  assert outputs["logits"].shape == (1, 64, 64, num_classes)
  from segjax.train.optim import make_optimizer  # pylint: disable=g-import-not-at-top
  jax.eval_shape(make_optimizer(config).init, variables["params"])  # every optimizer.frozen pattern matches
  if name.endswith("_voc"):
    assert (config.dataset.name, config.dataset.root, config.dataset.train_split, config.dataset.eval_split) == (
        "voc", "~/data/VOCdevkit", "train_aug", "val")
    assert config.model.get("base", config.model).skip_scales == (0.01, 0.0001)  # the at-once FCN-8s, both
  # The docstrings' --config.init_from: converted torchvision VGG-16 into the FCN's backbone, the FCN-8s run's
  # checkpoint into CRF-RNN's base; merge_pretrained raises where an array has no place of its shape.
  if name == "fcn8s_vgg16_voc":
    saved = tv_weights.abstract_variables(VGG16(variant="fcn"))
    merged = jax.eval_shape(pretrained.merge_pretrained, variables, saved)
    assert merged["params"]["backbone"]["fc6"]["kernel"].shape == (7, 7, 512, 4096)
  if name == "crf_rnn_fcn8s_voc":
    assert (config.model.crf.train_iterations, config.model.crf.test_iterations) == (5, 10)
    fcn_config = _experiment("fcn8s_vgg16_voc").get_config()
    saved = jax.eval_shape(lambda x: build(fcn_config.model, num_classes).init(jax.random.key(0), x), x)
    jax.eval_shape(pretrained.merge_pretrained, variables, {"params": saved["params"]})


@pytest.mark.slow  # 100 loop steps of the CRF-RNN
def test_demo_crf_rnn_trains_through_the_loop(tmp_path):
  """The demo's CRF-RNN from scratch at width 8 on 32 x 32 images, 100 steps of FAST_OPTIMIZER: the cross-entropy of
  the CRF's output ends below CE_BELOW_IMAGE_BLIND (0.7 log 7: under any image-blind predictor's, see train_util).
  It starts far above log 7 (the mean-field messages, at the paper's kernel weights, outweigh the random unaries),
  hence the 100 steps."""
  from segjax.train.loop import train_and_evaluate  # pylint: disable=g-import-not-at-top
  from train_util import CE_BELOW_IMAGE_BLIND, FAST_OPTIMIZER  # pylint: disable=g-import-not-at-top
  from train_util import read_metrics  # pylint: disable=g-import-not-at-top
  steps = 100
  config = override(_experiment("demo_crf_rnn").get_config(), FAST_OPTIMIZER)
  config.update({"batch_size": 8, "total_steps": steps, "log_every_steps": 1, "eval_every_steps": steps,
                 "checkpoint_every_steps": steps, "num_pictures": 2})
  config.model.base.width = 8
  config.model.crf.filter = "exact"  # all pixel pairs: at 32 x 32 cheaper to compile than the lattice
  config.dataset.update({"image_size": (32, 32), "num_train": 24, "num_val": 10, "root": str(tmp_path / "data"),
                         "data_dir": str(tmp_path / "data_tfds")})
  metrics = train_and_evaluate(config, str(tmp_path / "workdir"))
  train = read_metrics(tmp_path / "workdir")
  assert len(train) == steps and all(np.isfinite(r["loss"]) and r["crf_overflow"] == 0 for r in train)
  assert 0.0 <= metrics["mIoU"] <= 1.0
  losses = [r["loss"] for r in train]
  assert np.mean(losses[-3:]) < CE_BELOW_IMAGE_BLIND, losses


@pytest.mark.parametrize("name, skips, number", [("fcn32s_vgg16_voc", (), "59.4"),
                                                 ("fcn16s_vgg16_voc", ("pool4",), "62.4")])
def test_fcn32s_and_fcn16s_configs(name, skips, number):
  """Table 2's other rows: the streams of the config, the published number, and the "fixed" row's frozen trunk."""
  module = _experiment(name)
  assert f"python -m segjax.main --config=experiments/{name}.py" in module.__doc__ and number in module.__doc__
  config = module.get_config()
  assert tuple(config.model.skips) == skips and "skip_scales" not in config.model
  model = get_model("fcn").build(config.model, ml_collections.ConfigDict({"num_semantic_classes": 21}))
  x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
  assert jax.eval_shape(lambda v, x: model.apply(v, x), variables, x)["logits"].shape == (1, 64, 64, 21)
  if name == "fcn32s_vgg16_voc":  # FCN-32s-fixed (45.4): only the score layer learns
    from segjax.train.optim import make_optimizer  # pylint: disable=g-import-not-at-top
    assert "45.4" in module.__doc__
    config.optimizer.frozen = ("backbone", "upscore")
    jax.eval_shape(make_optimizer(config).init, variables["params"])
