"""CRF-as-RNN (Zheng et al. 2015): a semantic model's logits (FCN-8s in the paper) are the unaries of a CRFasRNN
layer (segjax/layers/crf_rnn.py), and the whole network is trained end to end with the per-pixel cross entropy of
the CRF's output (Sec. 5).

config.model: base (the unary model's config, with its name), crf (CRFasRNN's fields). The CRF sees the input
image in 0..255 (the pipeline's [0, 1] images times 255). Its outputs: logits (the CRF's) and unary_logits.
"""
import flax.linen as nn
import jax.numpy as jnp

from segjax.layers.crf_rnn import CRFasRNN
from segjax.models import get_model, per_pixel

TASK = "semantic"
BATCH_KEYS = ("image", "semantic")


def build_base(model_config, info):
  """The unary model of config.model.base: a semantic model whose logits have the input's size."""
  base = get_model(model_config.base.name)
  if base.TASK != "semantic":
    raise ValueError(f"config.model.base.name: {model_config.base.name!r} is not a semantic model")
  return base.build(model_config.base, info)


class CRFRNN(nn.Module):
  base: nn.Module
  crf: CRFasRNN

  @nn.compact
  def __call__(self, images, train: bool = False):
    unary = self.base(images, train=train)["logits"]
    if unary.shape[1:3] != images.shape[1:3]:
      raise ValueError(f"config.model.base: its logits {unary.shape} must have the input's size {images.shape}")
    return {"logits": self.crf(unary, 255.0 * images, train=train), "unary_logits": unary}


def build(model_config, info):
  return CRFRNN(base=build_base(model_config, info), crf=CRFasRNN(**model_config.crf.to_dict()))


def loss(outputs, batch, model_config):
  """Per-pixel softmax cross entropy of the CRF's logits over the pixels not labelled 255; crf_overflow is the
  fraction of images whose lattice overflowed (NaN logits: raise config.model.crf.lattice_capacity)."""
  overflow = jnp.isnan(outputs["logits"]).any((1, 2, 3)).mean()
  value, metrics = per_pixel.loss({"logits": outputs["logits"]}, batch, model_config)
  return value, {**metrics, "crf_overflow": overflow}


predict = per_pixel.predict  # the argmax of the CRF's logits
