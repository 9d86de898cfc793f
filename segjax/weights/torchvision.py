"""torchvision state dicts -> segjax (config, variables).

`convert(name, state_dict)` looks `name` up in `CONVERTERS`; model files register more names
("fcn_resnet50", ...) with `@register(name)` and reuse `convert_resnet_backbone` /
`fill_variables` for their parts. A state dict maps torchvision's `model.state_dict()` keys to
arrays (torch CPU tensors or NumPy). Layouts: conv weight OIHW -> kernel HWIO; Linear [O, I*h*w]
-> conv kernel [h, w, I, O] (FCN's "convolutionalisation", torch flattens C, H, W); norm weight,
bias -> scale, bias; running_mean, running_var -> batch_stats mean, var. `num_batches_tracked` is
dropped (a counter), and so is ResNet's ImageNet classifier `fc.*` and VGG's `classifier.6.*`.
"""
import functools
import re
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util

from segjax.backbones.resnet import ResNet
from segjax.backbones.vgg import STAGES, VGG16

Converter = Callable[[Mapping[str, Any]], tuple[ml_collections.ConfigDict, dict]]
CONVERTERS: dict[str, Converter] = {}
TORCH_LEAF = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}


def register(name: str, converter: Converter | None = None):
  """Adds `converter(state_dict) -> (config, variables)` to `CONVERTERS` under `name`; without `converter`, a
  decorator that does. A project outside segjax registers its converters this way."""
  def add(fn: Converter) -> Converter:
    if name in CONVERTERS:
      raise ValueError(f"converter {name!r} is already registered")
    CONVERTERS[name] = fn
    return fn
  return add if converter is None else add(converter)


def convert(name: str, state_dict: Mapping[str, Any]) -> tuple[ml_collections.ConfigDict, dict]:
  """Converts a torchvision state dict of model `name`; returns (config, {"params", "batch_stats"})."""
  if name not in CONVERTERS:
    raise ValueError(f"unknown model name {name!r}; known: {sorted(CONVERTERS)}")
  return CONVERTERS[name](state_dict)


def abstract_variables(module: nn.Module, input_hw: tuple[int, int] = (64, 64)) -> dict:
  """Shapes of `module.init` for a [1, H, W, 3] input (no compute): {collection: {... ShapeDtypeStruct}}."""
  x = jax.ShapeDtypeStruct((1, *input_hw, 3), jnp.float32)
  return jax.eval_shape(lambda x: module.init(jax.random.key(0), x, train=False), x)


def _to_flax(value: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
  """torch tensor -> array of `shape` (HWIO kernels from OIHW conv or [O, I*h*w] Linear); None if impossible."""
  if len(shape) == 4:
    h, w, i, o = shape
    if value.size != o * i * h * w or value.ndim not in (2, 4) or value.shape[0] != o:
      return None
    if value.ndim == 4 and value.shape != (o, i, h, w):
      return None
    return value.reshape(o, i, h, w).transpose(2, 3, 1, 0)
  return value if value.shape == shape else None


def _torch_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
  return (shape[3], shape[2], shape[0], shape[1]) if len(shape) == 4 else shape


def fill_variables(
    abstract: dict, state_dict: Mapping[str, Any], torch_key: Callable[[tuple[str, ...]], str], prefix: str = ""
) -> tuple[dict, set[str]]:
  """Fills every leaf of `abstract` from `state_dict[prefix + torch_key(path)]`.

  `path` is a leaf's module path plus its variable name (collection left out), e.g.
  ("layer1_0", "conv1", "kernel"). Returns (variables of float32 NumPy arrays, keys used).
  Raises ValueError listing every missing key and every tensor whose shape does not fit.
  """
  flat, used, missing, misshaped = {}, set(), [], []
  for path, leaf in traverse_util.flatten_dict(abstract).items():
    key = prefix + torch_key(path[1:])
    if key not in state_dict:
      missing.append(f"{key} (expected shape {_torch_shape(leaf.shape)})")
      continue
    value = np.array(state_dict[key], dtype=np.float32)  # a copy: never alias the caller's tensors
    converted = _to_flax(value, tuple(leaf.shape))
    if converted is None:
      misshaped.append(f"{key}: got shape {value.shape}, expected {_torch_shape(leaf.shape)} for {'/'.join(path)}")
      continue
    flat[path] = np.ascontiguousarray(converted)
    used.add(key)
  problems = [f"missing keys: {missing}"] * bool(missing) + [f"misshaped keys: {misshaped}"] * bool(misshaped)
  if problems:
    raise ValueError("state dict does not fit: " + "; ".join(problems))
  return traverse_util.unflatten_dict(flat), used


def check_unexpected(state_dict: Mapping[str, Any], used: set[str], prefix: str = "", dropped: tuple[str, ...] = ()) -> None:
  """Raises ValueError naming keys under `prefix` that were neither used nor deliberately dropped.

  `dropped` are key prefixes (relative to `prefix`) converted to nothing; `num_batches_tracked` always is.
  """
  unexpected = sorted(
      k for k in state_dict
      if k.startswith(prefix) and k not in used and not k.endswith("num_batches_tracked")
      and not k[len(prefix):].startswith(dropped)
  )
  if unexpected:
    raise ValueError(f"unexpected keys: {[f'{k} (shape {tuple(np.shape(state_dict[k]))})' for k in unexpected]}")


def resnet_torch_key(path: tuple[str, ...]) -> str:
  """("layer1_0", "downsample_bn", "mean") -> "layer1.0.downsample.1.running_mean"."""
  names = {"downsample_conv": "downsample.0", "downsample_bn": "downsample.1"}
  parts = [names.get(p, re.sub(r"^(layer\d)_(\d+)$", r"\1.\2", p)) for p in path[:-1]]
  return ".".join(parts + [TORCH_LEAF[path[-1]]])


def convert_resnet_backbone(
    state_dict: Mapping[str, Any], prefix: str = "", **resnet_kwargs: Any
) -> tuple[ml_collections.ConfigDict, dict]:
  """torchvision ResNet trunk under `prefix` (e.g. "backbone.body.") -> (config, variables) of `ResNet(**resnet_kwargs)`.

  The config holds the ResNet attributes (`backbone="resnet"` plus depth, width, norm,
  output_stride, multi_grid); `ResNet(**{k: v for k, v in config.items() if k != "backbone"})`
  rebuilds the module. Keys `prefix + "fc.*"` (the ImageNet classifier) are dropped.
  """
  module = ResNet(**resnet_kwargs)
  fields = ("depth", "width", "norm", "output_stride", "multi_grid")
  config = ml_collections.ConfigDict({"backbone": "resnet", **{f: getattr(module, f) for f in fields}})
  variables, used = fill_variables(abstract_variables(module), state_dict, resnet_torch_key, prefix)
  check_unexpected(state_dict, used, prefix, dropped=("fc.",))
  return config, variables


def vgg16_torch_key(path: tuple[str, ...]) -> str:
  """("conv3_2", "kernel") -> "features.12.weight"; fc6, fc7 -> classifier.0, classifier.3."""
  index, names = 0, {"fc6": "classifier.0", "fc7": "classifier.3"}
  for s, widths in enumerate(STAGES, start=1):
    for i in range(1, len(widths) + 1):
      names[f"conv{s}_{i}"] = f"features.{index}"
      index += 2  # conv, relu
    index += 1  # max pool
  return f"{names[path[0]]}.{TORCH_LEAF[path[-1]]}"


def convert_vgg16_fcn(state_dict: Mapping[str, Any], prefix: str = "") -> tuple[ml_collections.ConfigDict, dict]:
  """torchvision vgg16 -> `VGG16(variant="fcn")`; classifier.6 (ImageNet's 1000 classes) is dropped."""
  module = VGG16(variant="fcn")
  variables, used = fill_variables(abstract_variables(module), state_dict, vgg16_torch_key, prefix)
  check_unexpected(state_dict, used, prefix, dropped=("classifier.6.",))
  return ml_collections.ConfigDict({"backbone": "vgg16", "variant": "fcn"}), variables


def convert_vgg16_deeplab(state_dict: Mapping[str, Any], prefix: str = "", variant: str = "deeplab"
                          ) -> tuple[ml_collections.ConfigDict, dict]:
  """torchvision vgg16 -> `VGG16(variant)` of DeepLab v1, whose fc6 is the ImageNet fc6 subsampled by decimation
  (Chen et al. 2015, Sec. 3.2): 7x7 -> 4x4 (taps 0, 2, 4, 6) for "deeplab"; 7x7 -> 3x3 (taps 0, 3, 6) for
  "deeplab_largefov", which also keeps every 4th of the 4096 channels of fc6 and fc7 (1024; the paper does not say
  how it chose them)."""
  _, variables = convert_vgg16_fcn(state_dict, prefix)
  params = dict(variables["params"])
  fc6, fc7 = params["fc6"], params["fc7"]
  if variant == "deeplab":
    params["fc6"] = {"kernel": fc6["kernel"][::2, ::2], "bias": fc6["bias"]}
  else:
    params["fc6"] = {"kernel": fc6["kernel"][::3, ::3, :, ::4], "bias": fc6["bias"][::4]}
    params["fc7"] = {"kernel": fc7["kernel"][:, :, ::4, ::4], "bias": fc7["bias"][::4]}
  params = {k: {n: np.ascontiguousarray(a) for n, a in v.items()} for k, v in params.items()}
  return ml_collections.ConfigDict({"backbone": "vgg16", "variant": variant}), {"params": params}


for _depth in (18, 34, 50, 101, 152):
  register(f"resnet{_depth}")(functools.partial(convert_resnet_backbone, depth=_depth))
register("vgg16")(convert_vgg16_fcn)
register("vgg16_deeplab")(functools.partial(convert_vgg16_deeplab, variant="deeplab"))
register("vgg16_deeplab_largefov")(functools.partial(convert_vgg16_deeplab, variant="deeplab_largefov"))
