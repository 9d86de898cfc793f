"""Deformable res5 (Dai et al. 2017, Sec. 2.1 and Table 1: the last three 3x3 layers of ResNet made deformable).

Reference: the plain ResNet. Its offset layers start at zero, so with a plain ResNet's weights loaded the way a run
loads converted torchvision weights (`segjax.train.pretrained.merge_pretrained` into the model's variables), the
deformable ResNet computes the plain one; training must still reach the offset layers.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from segjax.backbones.resnet import ResNet
from segjax.train.pretrained import merge_pretrained

X = np.random.RandomState(0).randn(2, 64, 64, 3).astype(np.float32)


def _models(output_stride):
  plain = ResNet(depth=50, width=16, output_stride=output_stride)
  deformable = ResNet(depth=50, width=16, output_stride=output_stride, deformable_stages=(5,))
  saved = plain.init(jax.random.key(0), X, train=False)
  variables = merge_pretrained(deformable.init(jax.random.key(1), X, train=False), saved)
  return plain, deformable, saved, variables


@pytest.mark.parametrize("output_stride", [32, 16])
def test_deformable_res5_with_zero_offsets_is_the_plain_resnet(output_stride):
  plain, deformable, saved, variables = _models(output_stride)
  flat = traverse_util.flatten_dict(variables["params"])
  new = sorted("/".join(k) for k in flat if k not in traverse_util.flatten_dict(saved["params"]))
  assert new == [f"layer4_{b}/conv2_offset/{v}" for b in range(3) for v in ("bias", "kernel")]
  assert all(flat[(f"layer4_{b}", "conv2_offset", "kernel")].shape == (3, 3, 128, 18) for b in range(3))
  ref = plain.apply(saved, X, train=False)
  ours = deformable.apply(variables, X, train=False)
  for name in ("C4", "C5"):
    scale = float(np.abs(ref[name]).max())
    assert scale > 0
    np.testing.assert_allclose(np.asarray(ours[name]), np.asarray(ref[name]), rtol=0, atol=1e-5 * scale)


def test_deformable_res5_offset_layers_get_gradients():
  _, deformable, _, variables = _models(16)
  target = jax.random.normal(jax.random.key(2), (2, 4, 4, 512))
  c4 = deformable.apply(variables, X, train=False, stop="C4")["C4"]

  def loss(params):  # res5 only (its variables are the full model's), on the C4 features
    return jnp.sum(deformable.apply({**variables, "params": params}, c4, train=False, start="C5")["C5"] * target)

  grads = jax.grad(loss)(variables["params"])
  for b in range(3):
    g = grads[f"layer4_{b}"]["conv2_offset"]
    assert float(jnp.abs(g["kernel"]).max()) > 0 and float(jnp.abs(g["bias"]).max()) > 0, b
    assert float(jnp.abs(grads[f"layer4_{b}"]["conv2"]["kernel"]).max()) > 0


def test_deformable_stages_bad_arguments():
  with pytest.raises(ValueError, match="deformable_stages must be among"):
    ResNet(deformable_stages=(6,))
  with pytest.raises(ValueError, match="depth 50"):
    ResNet(depth=18, deformable_stages=(5,))


# Every ResNet model (Deformable ConvNets, Sec. 2: "selectable in any network"); the detectors' abstract inits are
# slower to trace, so most of them run in make test-slow.
_DEFORMABLE_MODELS = ["deeplab_v3", "deeplab_v2", "fcn", "mask_rcnn", "solov2"] + [
    pytest.param(name, marks=pytest.mark.slow)
    for name in ("pspnet", "faster_rcnn", "pointrend", "iterative_instance", "panoptic_fcn", "fcis")]


@pytest.mark.parametrize("name", _DEFORMABLE_MODELS)
def test_config_key_makes_res5_deformable(name):
  """config.model.deformable_stages reaches the models' ResNet: each res5 block gains one zero-initialised 3x3
  offset conv of 2 * 9 outputs over its 3x3 conv's input (planes = 16 * 8 channels at width 16), nothing else."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from segjax.models import get_model  # pylint: disable=g-import-not-at-top
  from segjax.weights.torchvision import abstract_variables  # pylint: disable=g-import-not-at-top
  info = ml_collections.ConfigDict({"num_semantic_classes": 3, "num_thing_classes": 2,
                                    "categories": [ml_collections.ConfigDict({"isthing": t}) for t in (1, 1, 0)]})
  model = get_model(name)
  params = {}
  for stages in ((), (5,)):
    config = ml_collections.ConfigDict({"name": name, "depth": 50, "width": 16, "deformable_stages": stages})
    params[stages] = traverse_util.flatten_dict(abstract_variables(model.build(config, info))["params"])
  added = {k: v.shape for k, v in params[(5,)].items() if k not in params[()]}
  res5 = [k[:-2] for k in added]
  assert len(set(res5)) == 3 and all(k[-1] == "layer4_" + str(b) for k, b in zip(sorted(set(res5)), range(3)))
  assert {k[-2:]: v for k, v in added.items()} == {("conv2_offset", v): shape
                                                   for v, shape in (("kernel", (3, 3, 128, 18)), ("bias", (18,)))}
  assert all(params[(5,)][k].shape == v.shape for k, v in params[()].items())
