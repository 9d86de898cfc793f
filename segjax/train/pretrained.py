"""`config.init_from`: start a run from converted weights (scripts/convert_weights.py writes DIR/variables).

A checkpoint of a whole model (e.g. "deeplabv3_resnet50") fits the model's variables at the top; one of a
backbone (e.g. "resnet50") fits the model's `backbone` submodule; either may also fit a wrapped model's `base`
(crf_rnn and dense_crf: CRF-as-RNN fine-tunes a trained FCN-8s). Every saved array must land on a variable
of the same shape; the model's other variables (new heads) keep their initialisation. Norm scale and bias saved as
params go to batch_stats where the model's norm is frozen (a torchvision ImageNet ResNet into a "frozen"-norm model).
"""
import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from flax import traverse_util

from segjax import paths


def _flat(tree):
  return traverse_util.flatten_dict(tree) if tree else {}


def load_variables(path) -> dict:
  """The {"params", "batch_stats"} tree of a convert_weights.py output directory (or its variables/), a local path
  or a URL."""
  path = paths.resolve(path)
  if (path / "variables").is_dir():
    path = path / "variables"
  if not path.is_dir():
    raise ValueError(f"config.init_from: {path} is not a directory written by scripts/convert_weights.py")
  return ocp.StandardCheckpointer().restore(path)


def merge_pretrained(variables: dict, saved: dict, source: str = "config.init_from") -> dict:
  """`variables` with the arrays of `saved` written in, at the top level or under "backbone", "base" or
  "base/backbone"."""
  model = {c: _flat(variables.get(c)) for c in ("params", "batch_stats")}
  loaded = {c: _flat(saved.get(c)) for c in ("params", "batch_stats")}
  prefixes = ((), ("backbone",), ("base",), ("base", "backbone"))
  # A frozen norm (segjax.layers.norms.FrozenBatchNorm) keeps the saved norm's scale and bias as batch_stats.
  for k in [k for k in loaded["params"] if k[-1] in ("scale", "bias")]:
    if (not any(p + k in model["params"] for p in prefixes)
        and any(p + k in model["batch_stats"] for p in prefixes)):
      loaded["batch_stats"][k] = loaded["params"].pop(k)
  for prefix in prefixes:
    if all(prefix + k in model[c] for c in loaded for k in loaded[c]):
      break
  else:
    missing = sorted("/".join(k) for c in loaded for k in loaded[c] if k not in model[c])[:8]
    raise ValueError(f"{source}: the saved variables fit neither the model nor its backbone or base; e.g. no model "
                     f"variable {missing}")
  wrong = [f"{'/'.join(prefix + k)}: saved {np.shape(v)}, model {model[c][prefix + k].shape}"
           for c in loaded for k, v in loaded[c].items() if np.shape(v) != model[c][prefix + k].shape]
  if wrong:
    raise ValueError(f"{source}: shapes differ: {wrong[:8]}")
  merged = dict(variables)
  for c in loaded:
    flat = dict(model[c])
    flat.update({prefix + k: jax.numpy.asarray(v, flat[prefix + k].dtype) for k, v in loaded[c].items()})
    if flat:
      merged[c] = traverse_util.unflatten_dict(flat)
  count = sum(len(v) for v in loaded.values())
  logging.info("%s: loaded %d arrays into %s", source, count, "/".join(prefix) or "the model")
  return merged
