"""GCN + BR: the GCN and BR blocks against torch compositions with copied weights, the GCN's parameter advantage
over a k x k conv (Table 2), output shapes at odd sizes, the ResNet-152 / VOC parameter count against a torch count, a
tiny model that trains in one compile, and the configs."""
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from segjax.layers.gcn import BoundaryRefinement, GlobalConv
from segjax.models import gcn
from train_util import REPO, blocky_batch, fit_semantic
from references import requires_torch, torch, torchvision

nn = torch.nn if torch else None
sys.path.insert(0, REPO)
from experiments import demo_gcn, gcn_r152_voc  # pylint: disable=g-import-not-at-top,wrong-import-position


class TorchGCN(torch.nn.Module if torch else object):
  """Fig. 2b in torch: Conv2d((k, 1)) then Conv2d((1, k)), plus Conv2d((1, k)) then Conv2d((k, 1)), summed."""

  def __init__(self, cin, cout, k):
    super().__init__()
    p = k // 2
    self.left = nn.Sequential(nn.Conv2d(cin, cout, (k, 1), padding=(p, 0)),
                              nn.Conv2d(cout, cout, (1, k), padding=(0, p)))
    self.right = nn.Sequential(nn.Conv2d(cin, cout, (1, k), padding=(0, p)),
                               nn.Conv2d(cout, cout, (k, 1), padding=(p, 0)))

  def forward(self, x):
    return self.left(x) + self.right(x)


class TorchBR(torch.nn.Module if torch else object):
  """Fig. 2c in torch: x + conv3x3(relu(conv3x3(x)))."""

  def __init__(self, channels):
    super().__init__()
    self.conv1, self.conv2 = nn.Conv2d(channels, channels, 3, padding=1), nn.Conv2d(channels, channels, 3, padding=1)

  def forward(self, x):
    return x + self.conv2(torch.relu(self.conv1(x)))


def _conv(layer):
  return {"kernel": layer.weight.detach().numpy().transpose(2, 3, 1, 0), "bias": layer.bias.detach().numpy()}


def _run_torch(module, x):
  with torch.no_grad():
    return module(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)


@requires_torch
@pytest.mark.parametrize("k", [7, 15])
def test_global_conv_matches_torch(k):
  """k = 15 on a 13 x 11 map: the kernel is wider than the map, all of it in the zero padding but one row."""
  torch.manual_seed(0)
  reference = TorchGCN(12, 5, k)
  params = {"left_kx1": _conv(reference.left[0]), "left_1xk": _conv(reference.left[1]),
            "right_1xk": _conv(reference.right[0]), "right_kx1": _conv(reference.right[1])}
  x = np.random.default_rng(0).normal(size=(2, 13, 11, 12)).astype(np.float32)
  expected = _run_torch(reference, x)
  ours = GlobalConv(5, k).apply({"params": params}, x)
  np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


@requires_torch
def test_boundary_refinement_matches_torch():
  torch.manual_seed(0)
  reference = TorchBR(5)
  x = np.random.default_rng(0).normal(size=(2, 9, 7, 5)).astype(np.float32)
  expected = _run_torch(reference, x)
  ours = BoundaryRefinement().apply({"params": {"conv1": _conv(reference.conv1), "conv2": _conv(reference.conv2)}}, x)
  np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5)


def _count(variables):
  return sum(np.size(p) for p in jax.tree.leaves(variables["params"]))


@requires_torch
def test_parameter_advantage_over_a_k_by_k_conv():
  """Sec. 3.1 / Table 2: the GCN on res5 (2048 channels -> 21 scores) has 2k (2048 + 21) 21 weights where a k x k
  conv has k^2 2048 x 21; Table 2 lists 608K vs 2107K at k = 7 (the biases, 84 vs 21, do not show)."""
  k, cin, classes = 7, 2048, 21
  variables = jax.eval_shape(lambda x: GlobalConv(classes, k).init(jax.random.key(0), x),
                             jax.ShapeDtypeStruct((1, 16, 16, cin), jnp.float32))
  ours = _count(variables)
  assert ours == sum(p.numel() for p in TorchGCN(cin, classes, k).parameters())
  dense = sum(p.numel() for p in nn.Conv2d(cin, classes, k).parameters())
  assert (round(ours / 1000), round(dense / 1000)) == (608, 2107)
  np.testing.assert_allclose((ours - 4 * classes) / (dense - classes), 2 * (cin + classes) / (k * cin), rtol=1e-12)


TINY = ml_collections.ConfigDict({"name": "gcn", "depth": 18, "width": 8, "kernel_size": 7, "dtype": "float32"})


@pytest.mark.parametrize("hw", [(65, 81), (50, 33)])
def test_logits_at_input_size_for_odd_sizes(hw):
  """Odd sizes make each deconvolved map overhang the finer one (65 -> C2..C5 of 17, 9, 5, 3); it is cropped."""
  module = gcn.build(TINY, ml_collections.ConfigDict({"num_semantic_classes": 5}))
  outputs = jax.eval_shape(lambda x: module.init_with_output(jax.random.key(0), x)[0],
                           jax.ShapeDtypeStruct((2, *hw, 3), jnp.float32))
  assert outputs["logits"].shape == (2, *hw, 5)


def _torch_decoder_count(backbone, num_classes, k, channels=(256, 512, 1024, 2048)):
  """Fig. 2: a GCN and a BR per level, a deconv (4 x 4, stride 2, no bias) and a BR after each of the 3 fusions and
  each of the 2 final upsamplings; plus torchvision's ResNet trunk without its ImageNet classifier."""
  count = sum(p.numel() for name, p in backbone.named_parameters() if not name.startswith("fc."))
  modules = [TorchGCN(c, num_classes, k) for c in channels] + [TorchBR(num_classes) for _ in range(4 + 3 + 2)]
  modules += [nn.ConvTranspose2d(num_classes, num_classes, 4, stride=2, padding=1, bias=False) for _ in range(5)]
  return count + sum(p.numel() for m in modules for p in m.parameters())


@requires_torch
def test_r152_voc_parameter_count():
  config = gcn_r152_voc.get_config()
  module = gcn.build(config.model, ml_collections.ConfigDict({"num_semantic_classes": 21}))
  variables = jax.eval_shape(lambda x: module.init(jax.random.key(0), x),
                             jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))
  with torch.device("meta"):  # shapes only, no initialisation
    assert _count(variables) == _torch_decoder_count(torchvision.models.resnet152(weights=None), 21, 15)


def test_tiny_gcn_trains_without_recompiling():
  module = gcn.build(TINY, ml_collections.ConfigDict({"num_semantic_classes": 3}))
  images, labels = blocky_batch(3, blocks=4)  # 32 x 32
  losses, traces, _ = fit_semantic(module, lambda o, b: gcn.loss(o, b, TINY), images, labels, steps=15)
  assert np.mean(losses[-3:]) < 0.8 * losses[0], losses
  assert traces == 1


def test_even_kernel_is_named():
  module = gcn.GCN(num_classes=2, depth=18, width=8, kernel_size=8)
  with pytest.raises(ValueError, match="config.model.kernel_size"):
    jax.eval_shape(lambda x: module.init(jax.random.key(0), x), jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))


@pytest.mark.parametrize("experiment", [gcn_r152_voc, demo_gcn])
def test_configs_open_with_the_docstring_fields_and_build(experiment):
  doc = experiment.__doc__
  name = experiment.__name__.split(".")[-1]
  assert f"--config=experiments/{name}.py" in doc
  for field in ("82.2 mIoU" if "voc" in name else "Not a paper row", "Target" if "demo" in name
                else "Needs"):
    assert field in doc, field
  config = experiment.get_config()
  num_classes = 21 if config.dataset.name == "voc" else 3
  module = gcn.build(config.model, ml_collections.ConfigDict({"num_semantic_classes": num_classes}))
  size = tuple(config.dataset.image_size)
  outputs = jax.eval_shape(lambda x: module.init_with_output(jax.random.key(0), x)[0],
                           jax.ShapeDtypeStruct((1, *size, 3), jnp.float32))
  assert outputs["logits"].shape == (1, *size, num_classes)
  if config.dataset.name == "voc":
    assert (config.dataset.root, config.dataset.train_split, config.dataset.eval_split) == (
        "~/data/VOCdevkit", "train_aug", "val")


@pytest.mark.slow  # two more compiles (train and eval steps)
def test_demo_trains_through_the_loop(tmp_path):
  """The demo's model at width 8 on 32 x 32 images, 20 steps of FAST_OPTIMIZER: its cross-entropy ends
  below CE_BELOW_IMAGE_BLIND (0.7 log 7: under any image-blind predictor's, see train_util)."""
  from segjax.train.loop import train_and_evaluate  # pylint: disable=g-import-not-at-top
  from train_util import CE_BELOW_IMAGE_BLIND, FAST_OPTIMIZER  # pylint: disable=g-import-not-at-top
  from train_util import read_metrics, tiny_config  # pylint: disable=g-import-not-at-top
  demo = demo_gcn.get_config()
  config = tiny_config(tmp_path / "data", total_steps=20, eval_every_steps=20,
                       **{"dataset.image_size": (32, 32), **FAST_OPTIMIZER})
  config.model = demo.model
  config.model.width = 8
  metrics = train_and_evaluate(config, str(tmp_path / "workdir"))
  train = read_metrics(tmp_path / "workdir")
  assert len(train) == 20 and all(np.isfinite(r["loss"]) for r in train)
  assert 0.0 <= metrics["mIoU"] <= 1.0
  losses = [r["loss"] for r in train]
  assert np.mean(losses[-3:]) < CE_BELOW_IMAGE_BLIND, losses
