"""FPN against torchvision.ops.FeaturePyramidNetwork with LastLevelMaxPool (values, shapes, init range)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segjax.layers.fpn import FPN, nearest_resize
from references import optional, requires_torch, torch

tv_fpn = optional("torchvision.ops.feature_pyramid_network")

CHANNELS = (8, 16, 24, 32)
# Odd sizes: the top-down path then resizes 3 -> 5, 5 -> 9, 9 -> 17 (not a plain 2x), as with 513-px inputs.
SIZES = ((17, 21), (9, 11), (5, 6), (3, 3))


def _torch_fpn():
  torch.manual_seed(0)
  model = tv_fpn.FeaturePyramidNetwork(list(CHANNELS), 12, extra_blocks=tv_fpn.LastLevelMaxPool()).eval()
  with torch.no_grad():
    for p in model.parameters():
      p.copy_(torch.randn_like(p) * 0.1)
  return model


def _convert(model):
  params = {}
  for kind, blocks in (("inner", model.inner_blocks), ("layer", model.layer_blocks)):
    for i, block in enumerate(blocks):
      conv = block[0]
      params[f"{kind}_{i}"] = {"kernel": conv.weight.detach().numpy().transpose(2, 3, 1, 0),
                               "bias": conv.bias.detach().numpy()}
  return {"params": params}


@requires_torch
def test_fpn_matches_torchvision():
  model = _torch_fpn()
  rng = np.random.default_rng(0)
  feats = {f"C{i + 2}": rng.normal(size=(2, *s, c)).astype(np.float32)
           for i, (s, c) in enumerate(zip(SIZES, CHANNELS))}
  with torch.no_grad():
    expected = model({k: torch.from_numpy(v.transpose(0, 3, 1, 2)) for k, v in feats.items()})
  got = jax.jit(FPN(12).apply)(_convert(model), feats)
  assert list(got) == ["P2", "P3", "P4", "P5", "P6"]
  for name, ref in zip(got, expected.values()):
    ref = ref.numpy().transpose(0, 2, 3, 1)
    assert got[name].shape == ref.shape
    np.testing.assert_allclose(got[name], ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_fpn_init_is_kaiming_uniform_a1():
  feats = {f"C{i + 2}": jnp.zeros((1, *s, c)) for i, (s, c) in enumerate(zip(SIZES, CHANNELS))}
  params = FPN(12).init(jax.random.key(0), feats)["params"]
  kernel = np.asarray(params["inner_3"]["kernel"])  # fan_in 32: bound sqrt(3 / 32)
  assert np.abs(kernel).max() <= np.sqrt(3 / 32) and np.abs(kernel).max() > 0.8 * np.sqrt(3 / 32)
  assert not np.any(params["layer_0"]["bias"])


@requires_torch
def test_nearest_resize_matches_torch():
  x = np.arange(2 * 5 * 7 * 3, dtype=np.float32).reshape(2, 5, 7, 3)
  ref = torch.nn.functional.interpolate(torch.from_numpy(x.transpose(0, 3, 1, 2)), size=(9, 13), mode="nearest")
  np.testing.assert_array_equal(nearest_resize(x, (9, 13)), ref.numpy().transpose(0, 2, 3, 1))


def test_fpn_needs_c_levels():
  with pytest.raises(ValueError, match="C2"):
    FPN(4).init(jax.random.key(0), {"res2": jnp.zeros((1, 4, 4, 2))})
