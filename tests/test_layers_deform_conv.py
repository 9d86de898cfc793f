"""ModulatedDeformConv against torchvision: its offset/mask conv in torch, then torchvision.ops.deform_conv2d with
detectron2's ModulatedDeformConvWithOff split (offsets = the first 2 k^2 channels, mask = sigmoid of the rest)."""
import jax
import numpy as np
import pytest

from segjax.layers.deform_conv import ModulatedDeformConv
from references import requires_torch, torch, torchvision



@requires_torch
@pytest.mark.parametrize("use_bias", [False, True])
def test_modulated_deform_conv_matches_torchvision(use_bias):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 7, 9, 6)).astype(np.float32)
  layer = ModulatedDeformConv(5, 3, use_bias=use_bias)
  variables = layer.init(jax.random.key(0), x)
  params = jax.tree.map(np.array, variables["params"])
  params["offset_mask_conv"]["kernel"] *= 40  # offsets of a few pixels, so that the sampling is exercised
  params["offset_mask_conv"]["bias"] = rng.normal(0, 0.5, 27).astype(np.float32)
  if use_bias:
    params["bias"] = rng.normal(size=5).astype(np.float32)
  ours = np.asarray(layer.apply({"params": params}, x))
  assert ours.shape == (2, 7, 9, 5)
  with torch.no_grad():
    tx = torch.from_numpy(x).permute(0, 3, 1, 2)
    conv = params["offset_mask_conv"]
    offset_mask = torch.nn.functional.conv2d(tx, torch.from_numpy(conv["kernel"]).permute(3, 2, 0, 1),
                                             torch.from_numpy(conv["bias"]), padding=1)
    assert offset_mask[:, :18].abs().max() > 1.5
    expected = torchvision.ops.deform_conv2d(
        tx, offset_mask[:, :18], torch.from_numpy(params["kernel"]).permute(3, 2, 0, 1),
        torch.from_numpy(params["bias"]) if use_bias else None, padding=1, mask=offset_mask[:, 18:].sigmoid())
  np.testing.assert_allclose(ours, expected.permute(0, 2, 3, 1).numpy(), rtol=1e-4, atol=1e-4)
