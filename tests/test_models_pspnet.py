"""PSPNet: the pyramid pooling module against a torch version written here, output shapes at odd sizes, the
ResNet-50 / ADE20K parameter count against a torch count, a tiny model that trains with the auxiliary loss in one
compile, and the configs.

The torch pyramid pooling module follows the released Caffe model's layers and their order: hszhao/PSPNet,
evaluation/prototxt/pspnet50_ADE20K_473.prototxt (conv5_3_pool{1,2,3,6} and the conv5_3_concat order), commit
c479f4fe941ea207cbd3ec7b6ab0de72d493e4ca.
"""
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from segjax.layers.ppm import PyramidPooling
from segjax.models import pspnet
from train_util import REPO, blocky_batch, fit_semantic
from references import requires_torch, torch, torchvision

nn = torch.nn if torch else None
sys.path.insert(0, REPO)
from experiments import demo_pspnet, pspnet_r50_ade20k  # pylint: disable=g-import-not-at-top,wrong-import-position

BINS = (1, 2, 3, 6)


class TorchPPM(torch.nn.Module if torch else object):
  """The paper's module in torch: per bin adaptive average pooling, 1x1 conv to C/4 (no bias), BN, ReLU, bilinear
  upsampling with aligned corners; concatenated after the input, finest bin first (the Caffe model's order)."""

  def __init__(self, channels, bins):
    super().__init__()
    self.bins = bins
    self.stages = nn.ModuleList(
        nn.Sequential(nn.AdaptiveAvgPool2d(b), nn.Conv2d(channels, channels // len(bins), 1, bias=False),
                      nn.BatchNorm2d(channels // len(bins)), nn.ReLU()) for b in bins)

  def forward(self, x):
    up = lambda y: nn.functional.interpolate(y, size=x.shape[2:], mode="bilinear", align_corners=True)
    pooled = {b: up(stage(x)) for b, stage in zip(self.bins, self.stages)}
    return torch.cat([x] + [pooled[b] for b in sorted(self.bins, reverse=True)], dim=1)


def _torch_head(num_classes, channels=2048, aux_channels=1024, aux=True):
  """The rest of the paper's head and the auxiliary FCN head on res4, as torch modules (for counting)."""
  head = [TorchPPM(channels, BINS), nn.Conv2d(2 * channels, 512, 3, padding=1, bias=False), nn.BatchNorm2d(512),
          nn.Conv2d(512, num_classes, 1)]
  if aux:
    head += [nn.Conv2d(aux_channels, aux_channels // 4, 3, padding=1, bias=False), nn.BatchNorm2d(aux_channels // 4),
             nn.Conv2d(aux_channels // 4, num_classes, 1)]
  return nn.ModuleList(head)


@requires_torch
@pytest.mark.parametrize("train", [False, True])
def test_pyramid_pooling_matches_torch(train):
  """Weights copied into a torch PPM; eval mode with random running statistics, train mode with batch statistics."""
  torch.manual_seed(0)
  reference = TorchPPM(16, BINS)
  with torch.no_grad():
    for stage in reference.stages:
      stage[2].running_mean.uniform_(-0.3, 0.3)
      stage[2].running_var.uniform_(0.5, 1.5)
      stage[2].weight.uniform_(0.5, 1.5)
      stage[2].bias.uniform_(-0.3, 0.3)
  reference.train(train)
  x = np.random.default_rng(0).normal(size=(2, 13, 11, 16)).astype(np.float32)  # odd: overlapping bins
  params, stats = {}, {}
  for b, stage in zip(BINS, reference.stages):
    params[f"bin{b}_conv"] = {"kernel": stage[1].weight.detach().numpy().transpose(2, 3, 1, 0)}
    params[f"bin{b}_bn"] = {"scale": stage[2].weight.detach().numpy(), "bias": stage[2].bias.detach().numpy()}
    stats[f"bin{b}_bn"] = {"mean": stage[2].running_mean.numpy(), "var": stage[2].running_var.numpy()}
  with torch.no_grad():
    expected = reference(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
  ours, _ = PyramidPooling(BINS).apply({"params": params, "batch_stats": stats}, x, train, mutable=["batch_stats"])
  assert ours.shape == (2, 13, 11, 16 + 4 * 4)
  np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5)


@requires_torch
@pytest.mark.parametrize("pooling", ["avg", "max"])
def test_pyramid_pooling_without_dimension_reduction_matches_torch(pooling):
  """Table 1's rows without DR: every level's pooled C channels (average or max, B1 or B1236) upsampled as they are,
  concatenated in the Caffe order; no parameters."""
  x = np.random.default_rng(1).normal(size=(2, 13, 11, 8)).astype(np.float32)
  pool = nn.functional.adaptive_avg_pool2d if pooling == "avg" else nn.functional.adaptive_max_pool2d
  xt = torch.from_numpy(x.transpose(0, 3, 1, 2))
  for bins in ((1,), BINS):
    levels = [nn.functional.interpolate(pool(xt, b), size=(13, 11), mode="bilinear", align_corners=True)
              for b in sorted(bins, reverse=True)]
    expected = torch.cat([xt] + levels, dim=1).numpy().transpose(0, 2, 3, 1)
    module = PyramidPooling(bins, pooling, dimension_reduction=False)
    variables = module.init(jax.random.key(0), x, False)
    assert not variables.get("params")
    ours = module.apply(variables, x, False)
    assert ours.shape == (2, 13, 11, 8 * (1 + len(bins)))
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5)


def test_baseline_without_pyramid_has_no_pooling_module():
  """bins () is Table 1's ResNet50-Baseline: the head's 3x3 conv reads C5 directly (C input channels, not 2C)."""
  config = ml_collections.ConfigDict({**TINY.to_dict(), "bins": ()})
  module = pspnet.build(config, ml_collections.ConfigDict({"num_semantic_classes": 5}))
  variables = jax.eval_shape(lambda x: module.init(jax.random.key(0), x), jax.ShapeDtypeStruct((1, 33, 33, 3),
                                                                                             jnp.float32))
  head = variables["params"]["classifier"]
  assert "ppm" not in head
  assert head["bottleneck_conv"]["kernel"].shape[2] == 8 * TINY.width  # ResNet-18's C5: 8 x width channels


def test_unknown_pooling_is_named():
  with pytest.raises(ValueError, match="config.model.pooling"):
    pspnet.build(ml_collections.ConfigDict({**TINY.to_dict(), "pooling": "median"}),
                 ml_collections.ConfigDict({"num_semantic_classes": 5}))


TINY = ml_collections.ConfigDict({"name": "pspnet", "depth": 18, "width": 8, "output_stride": 8, "bins": BINS,
                                  "aux": True, "aux_weight": 0.4, "dtype": "float32"})


@pytest.mark.parametrize("hw", [(65, 81), (50, 33)])
def test_logits_at_input_size_for_odd_sizes(hw):
  module = pspnet.build(TINY, ml_collections.ConfigDict({"num_semantic_classes": 5}))
  images = jax.ShapeDtypeStruct((2, *hw, 3), jnp.float32)
  outputs = jax.eval_shape(lambda x: module.init_with_output(jax.random.key(0), x)[0], images)
  assert outputs["logits"].shape == outputs["aux_logits"].shape == (2, *hw, 5)


def _count(variables):
  return sum(np.size(p) for p in jax.tree.leaves(variables["params"]))


def _r50_ade20k_count(aux):
  """torchvision's ResNet-50 without its ImageNet classifier, plus the torch head above, 150 classes."""
  with torch.device("meta"):  # shapes only, no initialisation
    backbone = torchvision.models.resnet50(weights=None)
  count = sum(p.numel() for name, p in backbone.named_parameters() if not name.startswith("fc."))
  with torch.device("meta"):
    return count + sum(p.numel() for p in _torch_head(150, aux=aux).parameters())


@requires_torch
@pytest.mark.parametrize("aux", [True, False])
def test_r50_ade20k_parameter_count(aux):
  config = ml_collections.ConfigDict({**pspnet_r50_ade20k.get_config().model.to_dict(), "aux": aux})
  module = pspnet.build(config, ml_collections.ConfigDict({"num_semantic_classes": 150}))
  variables = jax.eval_shape(lambda x: module.init(jax.random.key(0), x), jax.ShapeDtypeStruct((1, 65, 65, 3),
                                                                                             jnp.float32))
  assert _count(variables) == _r50_ade20k_count(aux)  # 49,057,132 with the auxiliary head, 46,658,774 without


def test_tiny_pspnet_trains_with_aux_loss_without_recompiling():
  module = pspnet.build(TINY, ml_collections.ConfigDict({"num_semantic_classes": 3}))
  images, labels = blocky_batch(3, blocks=4)  # 32 x 32
  losses, traces, _ = fit_semantic(module, lambda o, b: pspnet.loss(o, b, TINY), images, labels, steps=15)
  assert np.mean(losses[-3:]) < 0.8 * losses[0], losses
  assert traces == 1


def test_loss_adds_the_auxiliary_term_with_weight_0_4():
  """Sec. 3.4: main + 0.4 aux, each a pixel-wise cross entropy over the labelled pixels (float64 NumPy here)."""
  rng = np.random.default_rng(0)
  outputs = {k: rng.normal(size=(2, 5, 7, 4)).astype(np.float32) for k in ("logits", "aux_logits")}
  labels = rng.integers(0, 4, size=(2, 5, 7))
  labels[0, :2] = 255

  def cross_entropy(logits):
    logits = logits.astype(np.float64)
    log_p = logits - logits.max(-1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
    valid = labels != 255
    return -np.take_along_axis(log_p, np.where(valid, labels, 0)[..., None], -1)[..., 0][valid].mean()

  total, metrics = pspnet.loss(outputs, {"semantic": jnp.asarray(labels)}, TINY)
  main, aux = cross_entropy(outputs["logits"]), cross_entropy(outputs["aux_logits"])
  np.testing.assert_allclose([metrics["main_loss"], metrics["aux_loss"]], [main, aux], rtol=1e-5)
  np.testing.assert_allclose(total, main + 0.4 * aux, rtol=1e-5)


def test_bad_bins_are_named():
  module = pspnet.PSPNet(num_classes=2, depth=18, width=8, bins=(0, 2))
  with pytest.raises(ValueError, match="config.model.bins"):
    jax.eval_shape(lambda x: module.init(jax.random.key(0), x), jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))


@pytest.mark.parametrize("experiment", [pspnet_r50_ade20k, demo_pspnet])
def test_configs_open_with_the_docstring_fields_and_build(experiment):
  doc = experiment.__doc__
  name = experiment.__name__.split(".")[-1]
  assert f"--config=experiments/{name}.py" in doc
  for field in ("Table" if "ade20k" in name else "Not a paper row", "mIoU", "Target" if "demo" in name
                else "Needs"):
    assert field in doc, field
  config = experiment.get_config()
  num_classes = 150 if config.dataset.name == "ade20k" else 3
  module = pspnet.build(config.model, ml_collections.ConfigDict({"num_semantic_classes": num_classes}))
  size = tuple(config.dataset.image_size)
  outputs = jax.eval_shape(lambda x: module.init_with_output(jax.random.key(0), x)[0],
                           jax.ShapeDtypeStruct((1, *size, 3), jnp.float32))
  assert outputs["logits"].shape == (1, *size, num_classes)


def test_paper_config_is_the_paper_schedule():
  """Sec. 4.1: poly 0.01 power 0.9, batch 16, 150k iterations on ADE20K, 473 crops, aux weight 0.4, scale 0.5-2."""
  config = pspnet_r50_ade20k.get_config()
  assert (config.optimizer.learning_rate, config.optimizer.power, config.batch_size, config.total_steps) == (
      0.01, 0.9, 16, 150_000)
  assert tuple(config.dataset.image_size) == (473, 473) and config.model.aux_weight == 0.4
  assert (config.dataset.name, config.dataset.train_split, config.dataset.eval_split) == (
      "ade20k", "training", "validation")


@pytest.mark.slow  # two more compiles (train and eval steps)
def test_demo_trains_through_the_loop(tmp_path):
  """The demo's model at width 8 on 32 x 32 images, 20 steps of FAST_OPTIMIZER: the main head's cross-entropy ends
  below CE_BELOW_IMAGE_BLIND (0.7 log 7: under any image-blind predictor's, see train_util)."""
  from segjax.train.loop import train_and_evaluate  # pylint: disable=g-import-not-at-top
  from train_util import CE_BELOW_IMAGE_BLIND, FAST_OPTIMIZER  # pylint: disable=g-import-not-at-top
  from train_util import read_metrics, tiny_config  # pylint: disable=g-import-not-at-top
  demo = demo_pspnet.get_config()
  config = tiny_config(tmp_path / "data", total_steps=20, eval_every_steps=20,
                       **{"dataset.image_size": (32, 32), **FAST_OPTIMIZER})
  config.model = demo.model
  config.model.width = 8
  metrics = train_and_evaluate(config, str(tmp_path / "workdir"))
  train = read_metrics(tmp_path / "workdir")
  assert len(train) == 20 and all(np.isfinite(r["loss"]) and r["aux_loss"] > 0 for r in train)
  assert 0.0 <= metrics["mIoU"] <= 1.0
  main_losses = [r["main_loss"] for r in train]
  assert np.mean(main_losses[-3:]) < CE_BELOW_IMAGE_BLIND, main_losses
