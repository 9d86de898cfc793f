"""DeepLab v3 going deeper (Chen et al. 2017, Sec. 3.2): the atrous rates of block4..block7 against a table written
from the paper, the rates the built model's 3x3 convs take, output strides 8..256, the parameters of an added block
counted by hand, the paper configs."""
import importlib
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from segjax.backbones import resnet_cascade
from segjax.models import deeplab
from segjax.weights import torchvision as tv_weights

# Fig. 3b and Sec. 3.2: block4..block7 at output stride 16 take rates 2, 4, 8, 16; at output stride 8 (block3 at
# rate 2) the rates double: 4, 8, 16, 32. A unit's rate is its multi-grid unit rate times its block's rate; the paper's
# own example: output stride 16, Multi_Grid (1, 2, 4) -> block4 rates (2, 4, 8).
PAPER_RATES = {
    (16, (1, 1, 1)): {4: (2, 2, 2), 5: (4, 4, 4), 6: (8, 8, 8), 7: (16, 16, 16)},
    (16, (1, 2, 4)): {4: (2, 4, 8), 5: (4, 8, 16), 6: (8, 16, 32), 7: (16, 32, 64)},
    (16, (1, 2, 1)): {4: (2, 4, 2), 5: (4, 8, 4), 6: (8, 16, 8), 7: (16, 32, 16)},
    (8, (1, 1, 1)): {4: (4, 4, 4), 5: (8, 8, 8), 6: (16, 16, 16), 7: (32, 32, 32)},
    (8, (1, 2, 1)): {4: (4, 8, 4), 5: (8, 16, 8), 6: (16, 32, 16), 7: (32, 64, 32)},
}
INFO = ml_collections.ConfigDict({"num_semantic_classes": 3})


def _config(**overrides):
  return ml_collections.ConfigDict({"name": "deeplab_v3", "depth": 50, "width": 8, "output_stride": 16,
                                    "multi_grid": (1, 2, 1), "head": "cascade", "cascade_blocks": 3, "aux": False,
                                    **overrides})


def _pair(value):
  return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _convs_3x3(module, size):
  """{"/"-joined path of each 3x3 conv: (strides, kernel_dilation)} as the model calls them."""
  seen = {}

  def record(next_fun, args, kwargs, context):
    m = context.module
    if isinstance(m, nn.Conv) and context.method_name == "__call__" and tuple(m.kernel_size) == (3, 3):
      seen["/".join(m.scope.path)] = (_pair(m.strides or 1), _pair(m.kernel_dilation or 1))
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    jax.eval_shape(lambda x: module.init(jax.random.key(0), x), jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32))
  return seen


@pytest.mark.parametrize("output_stride,grid", list(PAPER_RATES))
def test_block_rates_equal_the_papers(output_stride, grid):
  for block, rates in PAPER_RATES[(output_stride, grid)].items():
    assert resnet_cascade.block_rates(block, output_stride, grid) == (1, rates)


@pytest.mark.parametrize("output_stride,grid", [(16, (1, 2, 1)), (8, (1, 2, 1)), (16, (1, 2, 4))])
def test_built_model_convs_take_the_papers_rates(output_stride, grid):
  """The 3x3 convs of block4 (the backbone's layer4) and the cascaded block5..block7, unit by unit, all at stride 1."""
  table = PAPER_RATES[(output_stride, grid)]
  module = deeplab.build(_config(output_stride=output_stride, multi_grid=grid), INFO)
  convs = _convs_3x3(module, 64)
  for block, rates in table.items():
    prefix = "backbone/layer4_" if block == 4 else f"classifier/blocks/block{block}_"
    for unit, rate in enumerate(rates):
      assert convs[f"{prefix}{unit}/conv2"] == ((1, 1), (rate, rate)), (block, unit)
  if output_stride == 8:  # block3 at rate 2 in every unit (the TF layout's rates), block2 plain
    assert {convs[f"backbone/layer3_{u}/conv2"][1] for u in range(6)} == {(2, 2)}
    assert convs["backbone/layer2_0/conv2"] == ((2, 2), (1, 1))


@pytest.mark.parametrize("output_stride,blocks", [(8, 3), (16, 3), (32, 3), (64, 1), (128, 2), (256, 3), (16, 0)])
def test_score_map_has_the_output_stride(output_stride, blocks):
  """Table 1's output strides: the classifier's scores at input / output_stride; beyond 32 the cascaded blocks
  stride in their first unit (rate 1 times the unit rates), below it none does; logits at the input size."""
  size = 256
  module = deeplab.build(_config(output_stride=output_stride, cascade_blocks=blocks), INFO)
  variables = tv_weights.abstract_variables(module, (size, size))
  x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  outputs, state = jax.eval_shape(
      lambda v, x: module.apply(v, x, train=False, capture_intermediates=True, mutable=["intermediates"]),
      variables, x)
  scores = state["intermediates"]["classifier"]["logits"]["__call__"][0]
  assert scores.shape == (1, size // output_stride, size // output_stride, 3)
  assert outputs["logits"].shape == (1, size, size, 3)
  convs = _convs_3x3(module, size)
  for block in range(5, 5 + blocks):
    stride = 2 if resnet_cascade.natural_stride(block) <= output_stride else 1
    assert convs[f"classifier/blocks/block{block}_0/conv2"][0] == (stride, stride)


def test_one_added_block_has_three_bottlenecks_parameters():
  """A stride-1 copy of block4 (width w: 8w channels in, 2w planes, 8w out) holds three bottlenecks with identity
  shortcuts: 1x1 8w->2w, 3x3 2w->2w, 1x1 2w->8w, no biases, and BN scale and offset after each conv."""
  width = 8
  planes, channels = width * 8, width * 8 * 4  # layer4 of a bottleneck ResNet: planes 8w, out 4 * 8w
  bottleneck = channels * planes + 9 * planes * planes + planes * channels + 2 * (planes + planes + channels)

  def count(blocks, output_stride=16):
    module = deeplab.build(_config(width=width, cascade_blocks=blocks, output_stride=output_stride), INFO)
    params = tv_weights.abstract_variables(module, (64, 64))["params"]
    return params, sum(np.size(p) for p in jax.tree.leaves(params))

  params, total1 = count(1)
  assert set(params["classifier"]["blocks"]) == {f"block5_{u}" for u in range(3)}
  assert sum(np.size(p) for p in jax.tree.leaves(params["classifier"]["blocks"])) == 3 * bottleneck
  _, total0 = count(0)
  _, total3 = count(3)
  assert total1 - total0 == 3 * bottleneck and total3 - total0 == 3 * 3 * bottleneck
  # A strided block (output stride 64) adds the projection shortcut of its first unit: 1x1 conv and BN.
  _, strided = count(1, output_stride=64)
  assert strided - total1 == channels * channels + 2 * channels


def test_cascade_errors_name_the_key():
  with pytest.raises(ValueError, match="config.model.cascade_blocks needs head 'cascade'"):
    deeplab.build(_config(head="aspp"), INFO).init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  with pytest.raises(ValueError, match="config.model.output_stride"):
    deeplab.build(_config(output_stride=128, cascade_blocks=1), INFO).init(jax.random.key(0),
                                                                           jnp.zeros((1, 32, 32, 3)))
  with pytest.raises(ValueError, match="config.model.cascade_blocks must be 0..3"):
    deeplab.build(_config(cascade_blocks=4), INFO).init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))


@pytest.mark.parametrize("name,depth,grid,row", [("deeplab_v3_cascade_r50_voc", 50, None, "73.88"),
                                                  ("deeplab_v3_cascade_r101_voc", 101, (1, 2, 1), "76.66")])
def test_paper_configs_build_block7(name, depth, grid, row):
  """The going-deeper configs: ResNet-50 / -101 with block5..block7 at output stride 16 and a 21-class 1x1
  classifier; block7 holds three bottlenecks of 2048 channels (512 planes), 3 x 4,462,592 parameters."""
  from train_util import REPO  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, REPO)
  config_module = importlib.import_module(f"experiments.{name}")
  for field in (f"python -m segjax.main --config=experiments/{name}.py", row, "Needs"):
    assert field in config_module.__doc__
  config = config_module.get_config()
  assert (config.model.head, config.model.cascade_blocks, config.model.output_stride) == ("cascade", 3, 16)
  assert config.model.depth == depth and (tuple(config.model.multi_grid) if config.model.multi_grid else None) == grid
  module = deeplab.build(config.model, ml_collections.ConfigDict({"num_semantic_classes": 21}))
  params = tv_weights.abstract_variables(module, (65, 65))["params"]
  bottleneck = 2048 * 512 + 9 * 512 * 512 + 512 * 2048 + 2 * (512 + 512 + 2048)
  assert bottleneck == 4_462_592
  block7 = {k: v for k, v in params["classifier"]["blocks"].items() if k.startswith("block7_")}
  assert sum(np.size(p) for p in jax.tree.leaves(block7)) == 3 * bottleneck
  assert params["classifier"]["logits"]["kernel"].shape == (1, 1, 2048, 21)
