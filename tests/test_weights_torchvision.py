"""torchvision -> segjax converter: registry, key/shape errors, prefixes, and the CLI round trip."""
import importlib.util
import json
import pathlib

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from segjax.backbones.resnet import ResNet
from segjax.weights.torchvision import CONVERTERS, convert, convert_resnet_backbone, register, resnet_torch_key
from references import requires_torch, torch, torchvision


CLI = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "convert_weights.py"


@pytest.fixture(scope="module")
def resnet18():
  torch.manual_seed(0)
  model = torchvision.models.resnet18(weights=None).eval()
  g = torch.Generator().manual_seed(1)
  for m in model.modules():
    if isinstance(m, torch.nn.BatchNorm2d):
      m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
      m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
  return model


def test_registry_names_and_unknown_name():
  assert {"resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "vgg16"} <= set(CONVERTERS)
  with pytest.raises(ValueError, match=r"unknown model name 'resnet19'; known: \[.*'resnet18'"):
    convert("resnet19", {})
  with pytest.raises(ValueError, match="'resnet50' is already registered"):
    register("resnet50")(lambda sd: None)


@requires_torch
def test_resnet18_layout(resnet18):
  state = resnet18.state_dict()
  config, variables = convert("resnet18", state)
  assert config.to_dict() == {"backbone": "resnet", "depth": 18, "width": 64, "norm": "batch",
                              "output_stride": 32, "multi_grid": None}
  assert set(variables) == {"params", "batch_stats"}
  np.testing.assert_array_equal(variables["params"]["layer2_0"]["downsample_conv"]["kernel"],
                                state["layer2.0.downsample.0.weight"].numpy().transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(variables["batch_stats"]["layer3_1"]["bn2"]["var"], state["layer3.1.bn2.running_var"].numpy())
  np.testing.assert_array_equal(variables["params"]["bn1"]["scale"], state["bn1.weight"].numpy())
  assert resnet_torch_key(("layer4_1", "downsample_bn", "mean")) == "layer4.1.downsample.1.running_mean"
  # A copy, not a view of torch's buffers (a torch train step must not change converted variables).
  state["bn1.running_mean"].add_(1.0)
  assert not np.allclose(variables["batch_stats"]["bn1"]["mean"], state["bn1.running_mean"].numpy())
  state["bn1.running_mean"].sub_(1.0)


@requires_torch
def test_missing_key_is_named_with_shape(resnet18):
  state = dict(resnet18.state_dict())
  del state["layer1.0.conv1.weight"]
  with pytest.raises(ValueError, match=r"missing keys: \['layer1.0.conv1.weight \(expected shape \(64, 64, 3, 3\)\)'\]"):
    convert("resnet18", state)


@requires_torch
def test_unexpected_key_is_named_with_shape(resnet18):
  state = {**resnet18.state_dict(), "layer5.0.conv1.weight": torch.zeros(3, 4)}
  with pytest.raises(ValueError, match=r"unexpected keys: \['layer5.0.conv1.weight \(shape \(3, 4\)\)'\]"):
    convert("resnet18", state)


@requires_torch
def test_misshaped_key_is_named_with_both_shapes(resnet18):
  state = {**resnet18.state_dict(), "conv1.weight": torch.zeros(32, 3, 7, 7)}
  with pytest.raises(ValueError, match=r"conv1.weight: got shape \(32, 3, 7, 7\), expected \(64, 3, 7, 7\)"):
    convert("resnet18", state)
  # Every problem at once: a resnet18 state dict is not a resnet34 one.
  with pytest.raises(ValueError, match=r"missing keys: .*layer3.5.conv1.weight"):
    convert("resnet34", resnet18.state_dict())


@requires_torch
def test_prefix_frozen_norm_and_keys_outside_prefix(resnet18):
  """A detection-style dict: trunk under backbone.body. (no fc), other heads beside it."""
  state = {f"backbone.body.{k}": v for k, v in resnet18.state_dict().items()
           if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
  state["rpn.head.conv.0.0.weight"] = torch.zeros(256, 256, 3, 3)
  config, variables = convert_resnet_backbone(state, "backbone.body.", depth=18, norm="frozen", output_stride=16)
  assert (config.norm, config.output_stride) == ("frozen", 16)
  _, plain = convert("resnet18", resnet18.state_dict())
  # FrozenBatchNorm holds all four tensors as constants; params keep only the conv kernels.
  assert set(variables["params"]["layer1_0"]) == {"conv1", "conv2"}
  assert set(variables["batch_stats"]["layer1_0"]["bn1"]) == {"scale", "bias", "mean", "var"}
  np.testing.assert_array_equal(variables["batch_stats"]["layer1_0"]["bn1"]["scale"], plain["params"]["layer1_0"]["bn1"]["scale"])
  np.testing.assert_array_equal(variables["params"]["layer1_0"]["conv1"]["kernel"], plain["params"]["layer1_0"]["conv1"]["kernel"])
  state["backbone.body.extra.weight"] = torch.zeros(1)
  with pytest.raises(ValueError, match=r"unexpected keys: \['backbone.body.extra.weight"):
    convert_resnet_backbone(state, "backbone.body.", depth=18, norm="frozen")


def load_cli():
  spec = importlib.util.spec_from_file_location("convert_weights", CLI)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@requires_torch
def test_cli_round_trip(resnet18, tmp_path, capsys):
  cli = load_cli()
  torch.save(resnet18.state_dict(), tmp_path / "resnet18.pth")
  out = tmp_path / "converted"
  cli.main(["--name", "resnet18", "--input", str(tmp_path / "resnet18.pth"), "--output", str(out)])
  assert "11,176,512 parameters" in capsys.readouterr().out  # torchvision resnet18 minus fc

  config = json.loads((out / "config.json").read_text())
  assert config == {"backbone": "resnet", "depth": 18, "width": 64, "norm": "batch", "output_stride": 32, "multi_grid": None}
  restored = ocp.StandardCheckpointer().restore(out / "variables")
  _, expected = convert("resnet18", resnet18.state_dict())
  assert jax.tree.structure(restored) == jax.tree.structure(expected)
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(a, b)

  x = np.random.RandomState(0).randn(1, 32, 32, 3).astype(np.float32)
  ours = ResNet(**{k: v for k, v in config.items() if k != "backbone"}).apply(restored, x, train=False)["C5"]
  body = torchvision.models._utils.IntermediateLayerGetter(resnet18, {"layer4": "C5"})
  with torch.no_grad():
    ref = body(torch.from_numpy(x.transpose(0, 3, 1, 2)))["C5"].numpy().transpose(0, 2, 3, 1)
  assert np.abs(np.asarray(ours) - ref).max() <= 1e-4 * np.abs(ref).max()

  with pytest.raises(SystemExit):
    cli.main(["--name", "resnet18", "--input", str(tmp_path / "resnet18.pth"), "--output", str(out)])
  assert "already holds a variables/ checkpoint" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    cli.main(["--name", "resnet19", "--input", str(tmp_path / "resnet18.pth"), "--output", str(tmp_path / "x")])
  assert "--name 'resnet19' is unknown" in capsys.readouterr().err
