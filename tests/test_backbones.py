"""ResNet, VGG-16 and norm layers against torchvision / torch (random weights, no downloads).

Parity tolerance: max |ours - torch| <= 1e-4 * max |torch| per feature map, float32.
"""
import copy
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segjax.backbones.resnet import ResNet
from segjax.backbones.vgg import VGG16, max_pool_ceil
from segjax.layers.norms import BatchNorm, FrozenBatchNorm, norm_layer
from segjax.weights.torchvision import abstract_variables, convert, convert_resnet_backbone, fill_variables, vgg16_torch_key
from references import requires_torch, torch, torchvision


RTOL = 1e-4
STAGES = {"layer1": "C2", "layer2": "C3", "layer3": "C4", "layer4": "C5"}


def assert_close(ours, ref, rtol=RTOL):
  ours, ref = np.asarray(ours, np.float32), np.asarray(ref, np.float32)
  assert ours.shape == ref.shape
  err = np.abs(ours - ref).max()
  assert err <= rtol * np.abs(ref).max(), (err, np.abs(ref).max())


def nhwc(t):
  return t.detach().numpy().transpose(0, 2, 3, 1)


def randomize_bn(model, seed=0):
  """Random affine and running statistics, so eval-mode BatchNorm is not the identity."""
  g = torch.Generator().manual_seed(seed)
  for m in model.modules():
    if isinstance(m, torch.nn.BatchNorm2d):
      c = m.num_features
      with torch.no_grad():
        m.running_mean.copy_(torch.randn(c, generator=g) * 0.2)
        m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
        m.weight.copy_(torch.rand(c, generator=g) + 0.5)
        m.bias.copy_(torch.randn(c, generator=g) * 0.2)
  return model


def dilate_in_place(model, output_stride, multi_grid=None):
  """Our documented dilation rule applied to a plain torchvision ResNet (BasicBlock has none in torchvision).

  Each dilated stage loses its stride; its first block keeps the previous dilation, the others
  the new one; in the last stage block i's rate is multiplied by multi_grid[i]. Dilated convs:
  Bottleneck.conv2, or both 3x3 convs of a BasicBlock.
  """
  stride, dilation = 4, 1
  for s, layer in enumerate([model.layer1, model.layer2, model.layer3, model.layer4]):
    previous = dilation
    if s > 0 and stride * 2 > output_stride:
      dilation *= 2
      layer[0].downsample[0].stride = (1, 1)
      (layer[0].conv2 if hasattr(layer[0], "conv3") else layer[0].conv1).stride = (1, 1)
    elif s > 0:
      stride *= 2
    for b, block in enumerate(layer):
      rate = (previous if b == 0 else dilation) * (multi_grid[b] if (s == 3 and multi_grid) else 1)
      for conv in [block.conv2] if hasattr(block, "conv3") else [block.conv1, block.conv2]:
        conv.dilation, conv.padding = (rate, rate), (rate, rate)
  return model


def resnet_parity(tmodel, x, **kwargs):
  """Converts tmodel (eval), runs both on x [N,H,W,3]; asserts C2..C5 parity; returns max abs diffs."""
  config, variables = convert_resnet_backbone(tmodel.state_dict(), **kwargs)
  ours = ResNet(**{k: v for k, v in config.items() if k != "backbone"}).apply(variables, x, train=False)
  body = torchvision.models._utils.IntermediateLayerGetter(tmodel.eval(), STAGES)
  with torch.no_grad():
    ref = body(torch.from_numpy(x.transpose(0, 3, 1, 2)))
  diffs = {}
  for name, feat in ref.items():
    assert_close(ours[name], nhwc(feat))
    diffs[name] = float(np.abs(np.asarray(ours[name]) - nhwc(feat)).max())
  return ours, diffs


X64 = np.random.RandomState(0).randn(1, 64, 64, 3).astype(np.float32)


@requires_torch
@pytest.mark.parametrize("output_stride", [32, 16, 8])
def test_resnet50_matches_torchvision(output_stride):
  torch.manual_seed(0)
  rswd = {32: [False, False, False], 16: [False, False, True], 8: [False, True, True]}[output_stride]
  tmodel = randomize_bn(torchvision.models.resnet50(weights=None, replace_stride_with_dilation=rswd))
  ours, _ = resnet_parity(tmodel, X64, depth=50, output_stride=output_stride)
  sizes = {"C2": 16, "C3": 8, "C4": 64 // min(16, output_stride), "C5": 64 // output_stride}
  assert {k: v.shape[1] for k, v in ours.items()} == sizes


@requires_torch
@pytest.mark.parametrize("output_stride", [32, 16, 8])
def test_resnet18_matches_torchvision(output_stride):
  """Stride 32 is torchvision as is; 16 and 8 dilate its BasicBlocks by `dilate_in_place`."""
  torch.manual_seed(0)
  tmodel = dilate_in_place(randomize_bn(torchvision.models.resnet18(weights=None)), output_stride)
  resnet_parity(tmodel, X64, depth=18, output_stride=output_stride)


@requires_torch
def test_dilate_in_place_reproduces_torchvision_dilation():
  """The rule used for the ResNet-18 references gives torchvision's own dilated ResNet-50."""
  with torch.device("meta"):
    ref = torchvision.models.resnet50(weights=None, replace_stride_with_dilation=[False, True, True])
    ours = dilate_in_place(torchvision.models.resnet50(weights=None), 8)
  for (name, a), (_, b) in zip(ref.named_modules(), ours.named_modules()):
    if isinstance(a, torch.nn.Conv2d):
      assert (a.stride, a.dilation, a.padding) == (b.stride, b.dilation, b.padding), name


@requires_torch
def test_multi_grid_matches_dilated_reference():
  """DeepLab v3 multi-grid (1, 2) at output stride 8: last-stage rates (2 * 1, 4 * 2)."""
  torch.manual_seed(1)
  tmodel = dilate_in_place(randomize_bn(torchvision.models.resnet18(weights=None)), 8, multi_grid=(1, 2))
  assert tmodel.layer4[1].conv1.dilation == (8, 8)
  x = np.random.RandomState(1).randn(1, 96, 96, 3).astype(np.float32)  # C5 is 12x12 > rate 8
  resnet_parity(tmodel, x, depth=18, output_stride=8, multi_grid=(1, 2))


@requires_torch
def test_frozen_norm_resnet_matches_torchvision():
  torch.manual_seed(2)
  tmodel = randomize_bn(torchvision.models.resnet18(weights=None))
  resnet_parity(tmodel, X64, depth=18, norm="frozen")


@requires_torch
@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_resnet_parameter_count_matches_torchvision(depth):
  with torch.device("meta"):
    tmodel = getattr(torchvision.models, f"resnet{depth}")(weights=None)
  expected = sum(p.numel() for n, p in tmodel.named_parameters() if not n.startswith("fc."))
  params = abstract_variables(ResNet(depth=depth))["params"]
  assert sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params)) == expected


@requires_torch
def test_resnet_train_mode_matches_torch_forward_stats_and_gradients():
  """Train mode: batch statistics for the output; running_var updated with torch's unbiased
  variance; gradients of sum(C5 * w) w.r.t. input and every parameter equal torch autograd's."""
  torch.manual_seed(3)
  tmodel = randomize_bn(torchvision.models.resnet18(weights=None))
  _, variables = convert_resnet_backbone(tmodel.state_dict(), depth=18)
  rng = np.random.RandomState(3)
  x = rng.randn(2, 64, 64, 3).astype(np.float32)
  w = rng.randn(2, 2, 2, 512).astype(np.float32)

  @jax.jit
  def loss(params, x):
    feats, updated = ResNet(depth=18).apply(
        {"params": params, "batch_stats": variables["batch_stats"]}, x, train=True, mutable=["batch_stats"])
    return jnp.sum(feats["C5"] * w), (feats, updated["batch_stats"])

  (grad_params, grad_x), (ours, updated) = jax.grad(loss, argnums=(0, 1), has_aux=True)(variables["params"], x)
  body = torchvision.models._utils.IntermediateLayerGetter(tmodel.train(), STAGES)
  xt = torch.from_numpy(x.transpose(0, 3, 1, 2)).requires_grad_()
  ref = body(xt)
  (ref["C5"] * torch.from_numpy(w.transpose(0, 3, 1, 2))).sum().backward()
  for name, feat in ref.items():
    assert_close(ours[name], nhwc(feat))
  assert_close(grad_x, nhwc(xt.grad))
  torch_grads = {**tmodel.state_dict(), **{k: p.grad for k, p in tmodel.named_parameters() if p.grad is not None}}
  _, expected_grads = convert_resnet_backbone(torch_grads, depth=18)
  for path, g in jax.tree.leaves_with_path(grad_params):
    want = functools.reduce(lambda t, k: t[k.key], path, expected_grads["params"])
    assert_close(g, want)

  _, expected = convert_resnet_backbone(tmodel.state_dict(), depth=18)
  got = jax.tree.leaves_with_path(updated)
  assert len(got) == len(jax.tree.leaves(expected["batch_stats"])) == 2 * 20
  for (path, new), old, want in zip(got, jax.tree.leaves(variables["batch_stats"]), jax.tree.leaves(expected["batch_stats"])):
    assert not np.allclose(new, old), path
    np.testing.assert_allclose(new, want, rtol=1e-4, atol=1e-5, err_msg=str(path))


def random_variables(module, hw, seed=0):
  """NumPy-random variables shaped like module.init's (init itself is slow on CPU): He-scaled
  kernels, positive variances, scales near 1."""
  rng = np.random.RandomState(seed)

  def draw(path, leaf):
    name, shape = path[-1].key, leaf.shape
    if name == "kernel":
      return rng.randn(*shape).astype(np.float32) * np.sqrt(2.0 / np.prod(shape[:-1]))
    if name in ("var", "scale"):
      return rng.rand(*shape).astype(np.float32) + 0.5
    return rng.randn(*shape).astype(np.float32) * 0.1

  return jax.tree_util.tree_map_with_path(draw, abstract_variables(module, hw))


TINY = ResNet(depth=18, width=16)
X_TINY = np.random.RandomState(4).rand(2, 32, 32, 3).astype(np.float32)
TRACES = []


@jax.jit
def tiny_eval(variables, x):
  TRACES.append(1)
  return TINY.apply(variables, x, train=False)


def test_resnet_jit_no_recompile():
  variables = random_variables(TINY, (32, 32))
  out1 = tiny_eval(variables, X_TINY)
  out2 = tiny_eval(jax.tree.map(lambda v: v * 1.01, variables), X_TINY + 1.0)
  assert len(TRACES) == 1 and not np.allclose(out1["C5"], out2["C5"])


def test_resnet_bfloat16_keeps_float32_params_and_tracks_float32():
  variables = random_variables(TINY, (32, 32))
  bf16 = jax.jit(lambda v, x: ResNet(depth=18, width=16, dtype=jnp.bfloat16).apply(v, x, train=False))(variables, X_TINY)
  f32 = tiny_eval(variables, X_TINY)
  abstract = abstract_variables(ResNet(depth=18, width=16, dtype=jnp.bfloat16))
  assert {p.dtype for p in jax.tree.leaves(abstract)} == {jnp.dtype(jnp.float32)}
  for name in f32:
    assert bf16[name].dtype == jnp.bfloat16
    assert_close(bf16[name], f32[name], rtol=5e-2)


@pytest.mark.parametrize("depth, channels", [(18, (16, 32, 64, 128)), (50, (64, 128, 256, 512))])
def test_resnet_width_and_output_stride_shapes(depth, channels):
  variables = abstract_variables(ResNet(depth=depth, width=16))  # the same for every output stride
  x = jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32)
  for output_stride, sizes in [(32, (16, 8, 4, 2)), (16, (16, 8, 4, 4)), (8, (16, 8, 8, 8))]:
    module = ResNet(depth=depth, width=16, output_stride=output_stride)
    out = jax.eval_shape(lambda v, x: module.apply(v, x, train=False), variables, x)
    assert {k: v.shape for k, v in out.items()} == {
        f"C{i + 2}": (2, s, s, c) for i, (s, c) in enumerate(zip(sizes, channels))}


def test_resnet_stages_run_separately_with_the_same_variables():
  """To C4 on the image, then res5 on those features: the C5 of one full pass (the C4 detectors' RoI head)."""
  variables = random_variables(TINY, (32, 32))
  module = ResNet(depth=18, width=16)
  full = tiny_eval(variables, X_TINY)
  c4 = module.apply(variables, X_TINY, train=False, stop="C4")
  assert set(c4) == {"C2", "C3", "C4"}
  c5 = module.apply(variables, c4["C4"], train=False, start="C5")
  assert set(c5) == {"C5"}
  assert_close(c5["C5"], full["C5"])  # float32: jit and eager fuse differently
  with pytest.raises(ValueError, match="ResNet stages"):
    module.apply(variables, c4["C4"], train=False, start="C5", stop="C4")


def test_resnet_bad_arguments():
  with pytest.raises(ValueError, match="depth must be one of"):
    ResNet(depth=20)
  with pytest.raises(ValueError, match="output_stride must be one of"):
    ResNet(output_stride=4)
  with pytest.raises(ValueError, match="norm must be one of"):
    ResNet(norm="layer")
  with pytest.raises(ValueError, match="multi_grid needs 2 rates for depth 18"):
    ResNet(depth=18, multi_grid=(1, 2, 4))
  with pytest.raises(ValueError, match=r"x must be \[N, H, W, 3\]; got shape \(1, 3, 32, 32\)"):
    ResNet(depth=18, width=16).init(jax.random.key(0), jnp.zeros((1, 3, 32, 32)), train=False)


# ---------------------------------------------------------------- norms


@requires_torch
def test_batch_norm_matches_torch_train_eval_and_gradient():
  rng = np.random.RandomState(6)
  x = rng.randn(2, 5, 5, 8).astype(np.float32) * 3 + 1
  w = rng.randn(2, 5, 5, 8).astype(np.float32)
  tbn = torch.nn.BatchNorm2d(8)
  with torch.no_grad():
    tbn.weight.copy_(torch.from_numpy(rng.rand(8).astype(np.float32) + 0.5))
    tbn.bias.copy_(torch.from_numpy(rng.randn(8).astype(np.float32)))
  variables = {"params": {"scale": tbn.weight.detach().numpy().copy(), "bias": tbn.bias.detach().numpy().copy()},
               "batch_stats": {"mean": np.zeros(8, np.float32), "var": np.ones(8, np.float32)}}
  xt = torch.from_numpy(x.transpose(0, 3, 1, 2)).requires_grad_()
  yt = tbn.train()(xt)
  (yt * torch.from_numpy(w.transpose(0, 3, 1, 2))).sum().backward()

  def f(x, params):
    return BatchNorm(use_running_average=False).apply(
        {"params": params, "batch_stats": variables["batch_stats"]}, x, mutable=["batch_stats"])

  (y, stats) = f(x, variables["params"])
  assert_close(y, nhwc(yt), rtol=1e-5)
  np.testing.assert_allclose(stats["batch_stats"]["mean"], tbn.running_mean.numpy(), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(stats["batch_stats"]["var"], tbn.running_var.numpy(), rtol=1e-5, atol=1e-6)
  gx, gp = jax.grad(lambda x, p: jnp.sum(f(x, p)[0] * w), argnums=(0, 1))(x, variables["params"])
  assert_close(gx, nhwc(xt.grad), rtol=1e-4)
  np.testing.assert_allclose(gp["scale"], tbn.weight.grad.numpy(), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(gp["bias"], tbn.bias.grad.numpy(), rtol=1e-4, atol=1e-4)

  y_eval = BatchNorm(use_running_average=True).apply({"params": variables["params"], **stats}, x)
  assert_close(y_eval, nhwc(tbn.eval()(torch.from_numpy(x.transpose(0, 3, 1, 2)))), rtol=1e-5)
  with pytest.raises(ValueError, match="more than 1 value per channel"):
    BatchNorm(use_running_average=False).init(jax.random.key(0), jnp.zeros((1, 1, 1, 8)))


@requires_torch
def test_frozen_and_group_norm_match_torch():
  rng = np.random.RandomState(7)
  x = rng.randn(2, 4, 4, 64).astype(np.float32)
  xt = torch.from_numpy(x.transpose(0, 3, 1, 2))
  stats = {k: rng.rand(64).astype(np.float32) + 0.5 for k in ("scale", "bias", "mean", "var")}
  frozen = torchvision.ops.FrozenBatchNorm2d(64)
  for ours, theirs in [("scale", "weight"), ("bias", "bias"), ("mean", "running_mean"), ("var", "running_var")]:
    getattr(frozen, theirs).copy_(torch.from_numpy(stats[ours]))
  y = FrozenBatchNorm().apply({"batch_stats": stats}, x)
  assert_close(y, nhwc(frozen(xt)), rtol=1e-5)

  group = torch.nn.GroupNorm(32, 64)
  with torch.no_grad():
    group.weight.copy_(torch.from_numpy(stats["scale"]))
    group.bias.copy_(torch.from_numpy(stats["bias"]))
  y = norm_layer("group", train=True)().apply({"params": {"scale": stats["scale"], "bias": stats["bias"]}}, x)
  assert_close(y, nhwc(group(xt)), rtol=1e-5)
  with pytest.raises(ValueError, match="norm must be one of"):
    norm_layer("instance", train=False)


# ---------------------------------------------------------------- VGG-16


@requires_torch
def test_max_pool_ceil_matches_torch():
  x = np.random.RandomState(8).randn(1, 7, 10, 2).astype(np.float32)
  for window, stride, pad in [(2, 2, 0), (3, 2, 1), (3, 1, 1)]:
    ref = torch.nn.MaxPool2d(window, stride, pad, ceil_mode=True)(torch.from_numpy(x.transpose(0, 3, 1, 2)))
    assert_close(max_pool_ceil(x, window, stride, pad), nhwc(ref), rtol=0)


@pytest.fixture(scope="module")
def torch_vgg16():
  torch.manual_seed(9)
  return torchvision.models.vgg16(weights=None).eval()


def run_features(features, x):
  """torch Sequential on NHWC x; returns NHWC outputs of its max pools in order."""
  pools, h = [], torch.from_numpy(x.transpose(0, 3, 1, 2))
  with torch.no_grad():
    for m in features:
      h = m(h)
      if isinstance(m, torch.nn.MaxPool2d):
        pools.append(h)
  return pools


@requires_torch
def test_vgg16_fcn_matches_torchvision(torch_vgg16):
  """FCN trunk = torchvision vgg16 with Caffe's conv1_1 pad 100 and ceil-mode pools; fc6/fc7 = its
  classifier Linear layers slid over pool5 (FCN's convolutionalisation)."""
  config, variables = convert("vgg16", torch_vgg16.state_dict())
  assert config.to_dict() == {"backbone": "vgg16", "variant": "fcn"}
  assert variables["params"]["fc6"]["kernel"].shape == (7, 7, 512, 4096)
  features = copy.deepcopy(torch_vgg16.features)
  features[0].padding = (100, 100)
  for m in features:
    if isinstance(m, torch.nn.MaxPool2d):
      m.ceil_mode = True
  x = np.random.RandomState(9).rand(1, 32, 32, 3).astype(np.float32)
  ours = VGG16(variant="fcn").apply(variables, x, train=False)
  pools = run_features(features, x)
  for name, ref in zip(["pool3", "pool4", "pool5"], pools[2:]):
    assert_close(ours[name], nhwc(ref))
  assert ours["pool5"].shape == (1, 8, 8, 512) and ours["fc7"].shape == (1, 2, 2, 4096)
  fc = torch_vgg16.classifier
  for i in range(2):
    for j in range(2):
      with torch.no_grad():
        window = pools[4][:, :, i:i + 7, j:j + 7].flatten(1)
        ref = torch.relu(fc[3](torch.relu(fc[0](window))))
      assert_close(ours["fc7"][:, i, j], ref.numpy())


@requires_torch
def test_vgg16_deeplab_largefov_matches_torch_reference(torch_vgg16):
  """DeepLab-LargeFOV prototxt rebuilt from torchvision's modules: pools 3x3 (stride 2, 2, 2, 1, 1,
  pad 1, ceil), conv5 dilation 2, pool5a 3x3 average, fc6 3x3 dilation 12 -> 1024, fc7 1x1."""
  torch.manual_seed(10)
  layers = []
  for m in copy.deepcopy(torch_vgg16.features):
    if isinstance(m, torch.nn.MaxPool2d):
      m = torch.nn.MaxPool2d(3, 2 if sum(isinstance(l, torch.nn.MaxPool2d) for l in layers) < 3 else 1, 1, ceil_mode=True)
    layers.append(m)
  for conv in layers[24:29:2]:
    conv.dilation, conv.padding = (2, 2), (2, 2)
  features = torch.nn.Sequential(*layers)
  classifier = torch.nn.Sequential(torch.nn.Conv2d(512, 1024, 3, padding=12, dilation=12), torch.nn.ReLU(),
                                   torch.nn.Identity(), torch.nn.Conv2d(1024, 1024, 1), torch.nn.ReLU())
  state = {**{f"features.{k}": v for k, v in features.state_dict().items()},
           **{f"classifier.{k}": v for k, v in classifier.state_dict().items()}}
  module = VGG16(variant="deeplab_largefov")
  variables, used = fill_variables(abstract_variables(module), state, vgg16_torch_key)
  assert used == set(state)
  x = np.random.RandomState(10).rand(1, 33, 33, 3).astype(np.float32)  # 32k - 31: 17, 9, 5
  ours = module.apply(variables, x, train=False)
  pools = run_features(features, x)
  for name, ref in zip(["pool3", "pool4", "pool5"], pools[2:]):
    assert_close(ours[name], nhwc(ref))
  with torch.no_grad():
    fc7 = classifier(torch.nn.functional.avg_pool2d(pools[4], 3, 1, 1))
  assert ours["fc7"].shape == (1, 5, 5, 1024)
  assert_close(ours["fc7"], nhwc(fc7))


def test_vgg16_dropout_and_bad_arguments():
  module = VGG16(variant="deeplab_largefov")
  x = np.random.RandomState(11).rand(1, 17, 17, 3).astype(np.float32)
  variables = random_variables(module, (17, 17))
  eval_out = module.apply(variables, x, train=False)["fc7"]
  a = module.apply(variables, x, train=True, rngs={"dropout": jax.random.key(1)})["fc7"]
  b = module.apply(variables, x, train=True, rngs={"dropout": jax.random.key(2)})["fc7"]
  assert not np.allclose(a, b) and not np.allclose(a, eval_out)
  with pytest.raises(ValueError, match="variant must be one of"):
    VGG16(variant="vgg19")
  with pytest.raises(ValueError, match=r"x must be \[N, H, W, 3\]"):
    module.apply(variables, x[..., :1], train=False)
