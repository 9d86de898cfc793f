"""A semantic model with DenseCRF post-processing (Krähenbühl & Koltun 2011), as DeepLab v1 and v2 evaluate it
(Chen et al. 2015, Sec. 4; 2017, Sec. 3.2): training is the base model's alone; at test time its logits at the input
size are the unaries of 10 mean-field iterations with fixed kernel parameters (segjax.ops.crf.dense_crf), and the
labels are the argmax of the marginals.

config.model: base (the unary model's config, with its name), crf (dense_crf's keyword arguments). The CRF sees the
input image in 0..255. Outputs: the base's, plus crf_probabilities [N,H,W,L] at test time.
"""
import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from segjax.models import get_model
from segjax.models.crf_rnn import build_base
from segjax.models.validation import validated
from segjax.ops.crf import dense_crf, dense_crf_defaults

TASK = "semantic"
BATCH_KEYS = ("image", "semantic")
INFERENCE_KEYS = frozenset({"crf"})  # the CRF runs at test time only and has no variables


class DenseCRFPostprocessed(nn.Module):
  base: nn.Module
  crf: dict

  @nn.compact
  def __call__(self, images, train: bool = False):
    outputs = dict(self.base(images, train=train))
    if not train:
      if outputs["logits"].shape[1:3] != images.shape[1:3]:
        raise ValueError(f"config.model.base: its logits {outputs['logits'].shape} must have the input's size "
                         f"{images.shape}")
      outputs["crf_probabilities"] = dense_crf(outputs["logits"], 255.0 * images, **self.crf)
    return outputs


def model_config() -> ml_collections.ConfigDict:
  """`crf`: dense_crf's keyword arguments and their defaults; `base`, the unary model's config with its name, is
  checked by that model's build."""
  crf = dense_crf_defaults()
  return ml_collections.ConfigDict({"name": "dense_crf", "base": {}, "crf": crf})


def build(config, info):
  config = validated(config, model_config())
  return DenseCRFPostprocessed(base=build_base(config, info), crf=config.crf.to_dict())


def loss(outputs, batch, model_config):
  """The base model's loss: the CRF is not trained."""
  return get_model(model_config.base.name).loss(outputs, batch, model_config.base)


def predict(outputs, model_config):
  """The argmax of the CRF's marginals (not of the base's unaries)."""
  del model_config
  return {"labels": jnp.argmax(outputs["crf_probabilities"], axis=-1).astype(jnp.int32)}
