"""The paper configs of DeconvNet, PSPNet ResNet-101 and DeepLab attention to scale: each builds its model (shapes
only, jax.eval_shape), names its command, paper rows and the data it needs, and has the parameters its paper or its
layers give."""
import importlib
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from segjax.models import get_model
from segjax.weights.torchvision import abstract_variables
from train_util import REPO


def _experiment(name):
  sys.path.insert(0, REPO)
  return importlib.import_module(f"experiments.{name}")


def _count(tree):
  return sum(np.size(p) for p in jax.tree.leaves(tree))


def _check_doc(name, *fields):
  doc = _experiment(name).__doc__
  for field in (f"python -m segjax.main --config=experiments/{name}.py", "Needs", *fields):
    assert field in doc, (name, field)


def _build(config, classes, size):
  module = get_model(config.model.name).build(config.model, ml_collections.ConfigDict({"num_semantic_classes":
                                                                                        classes}))
  variables = abstract_variables(module, size)
  outputs = jax.eval_shape(lambda v, x: module.apply(v, x, train=False), variables,
                           jax.ShapeDtypeStruct((1, *size, 3), jnp.float32))
  return variables, outputs


def test_deconvnet_config_is_deconvnet_under_the_dense_crf():
  """DeconvNet + CRF (70.5 on VOC 2012 test; DeconvNet 69.6, EDeconvNet + CRF 72.5): 252M parameters in the base
  (the count of tests/test_models_segnet.py's prototxt layers), none in the CRF; CRF marginals at the input size."""
  _check_doc("deconvnet_voc", "69.6", "70.5", "71.7", "72.5", "Schedule", "Differences")
  config = _experiment("deconvnet_voc").get_config()
  assert (config.model.name, config.model.base.name) == ("dense_crf", "deconvnet")
  variables, outputs = _build(config, 21, (224, 224))
  assert _count(variables["params"]) == 251_805_653
  assert outputs["crf_probabilities"].shape == outputs["logits"].shape == (1, 224, 224, 21)


@pytest.mark.parametrize("name,classes,rows", [("pspnet_r101_voc", 21, ("82.6", "85.4", "85.41")),
                                               ("pspnet_r101_cityscapes", 19, ("78.4", "80.2", "79.70"))])
def test_pspnet_r101_configs(name, classes, rows):
  """ResNet-101 at output stride 8 with bins (1, 2, 3, 6) and the 0.4 auxiliary loss; the model built on the
  config has ResNet-101's 101-layer trunk (23 blocks in layer3) and the classes of its data set."""
  _check_doc(name, "Table", *rows, "Schedule", "Differences")
  config = _experiment(name).get_config()
  assert (config.model.depth, config.model.output_stride, tuple(config.model.bins)) == (101, 8, (1, 2, 3, 6))
  assert config.model.aux and config.model.aux_weight == 0.4 and config.optimizer.schedule == "poly"
  variables, outputs = _build(config, classes, (97, 97))
  assert {k for k in variables["params"]["backbone"] if k.startswith("layer3_")} == {f"layer3_{i}" for i in range(23)}
  assert outputs["logits"].shape == (1, 97, 97, classes)


def test_attention_to_scale_config():
  """DeepLab-LargeFOV on scales (1, 0.75, 0.5) with the attention model: LargeFOV's 20,505,429 parameters (DeepLab
  v1 Table 2's 20.5M, tests/test_models_deeplab_v1v2.py) plus the attention model's, counted by hand: a 3x3 conv
  from the three scales' 1024-channel fc7 features to 512, and a 1x1 conv to the 3 scale logits, with biases."""
  _check_doc("deeplab_attention_largefov_voc", "Table 4", "62.28", "69.08", "Schedule", "Differences")
  config = _experiment("deeplab_attention_largefov_voc").get_config()
  assert (tuple(config.model.scales), config.model.scale_fusion) == ((1.0, 0.75, 0.5), "attention")
  variables, outputs = _build(config, 21, (65, 65))
  attention = 3 * 3 * (3 * 1024) * 512 + 512 + 512 * 3 + 3
  assert _count(variables["params"]["attention"]) == attention
  assert _count(variables["params"]) == 20_505_429 + attention
  assert outputs["logits"].shape == (1, 65, 65, 21) and len(outputs["scale_logits"]) == 3
  assert outputs["scale_weights"].shape[-1] == 3
