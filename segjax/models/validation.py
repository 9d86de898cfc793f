"""A model config checked against its model's defaults: what every registered model's `build` does first.

An unknown key, or a value of another kind than its default's, is an error naming the key (typos and wrong types
would otherwise be silently ignored or fail deep inside the model). Kinds: a bool default takes a bool, an int one
an int, a float one a number, a str one a string, a tuple one a tuple or list, a sub-config one a mapping (checked
the same way, key by key, where its default has keys); a None default takes anything (optional settings).
"""
import collections.abc
import numbers

import ml_collections

_KINDS = (
    (bool, lambda v: isinstance(v, bool), "True or False"),
    (numbers.Integral, lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool), "an integer"),
    (numbers.Real, lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool), "a number"),
    (str, lambda v: isinstance(v, str), "a string"),
    ((tuple, list), lambda v: isinstance(v, (tuple, list)), "a tuple or list"),
    (collections.abc.Mapping, lambda v: isinstance(v, (collections.abc.Mapping, ml_collections.ConfigDict)),
     "a sub-config (mapping)"),
)


def _kind(default):
  for types, accepts, description in _KINDS:
    if isinstance(default, types) or (types is collections.abc.Mapping
                                      and isinstance(default, ml_collections.ConfigDict)):
      return accepts, description
  return None


def _as_dict(config):
  return config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)


def check(config, defaults, where="config.model") -> dict:
  """`defaults` (a dict or ConfigDict) updated with `config`'s keys, as a plain dict; raises ValueError naming
  `where`.key for an unknown key or a value of the wrong kind."""
  config, defaults = _as_dict(config), _as_dict(defaults)
  unknown = sorted(set(config) - set(defaults))
  if unknown:
    name = f" for {config['name']}" if "name" in config else ""
    raise ValueError(f"{where}: unknown key(s) {[f'{where}.{k}' for k in unknown]}{name}; known: {sorted(defaults)}")
  merged = dict(defaults)
  for key, value in config.items():
    kind = _kind(defaults[key]) if defaults[key] is not None else None
    if kind and not kind[0](value):
      raise ValueError(f"{where}.{key}: must be {kind[1]} (as its default {defaults[key]!r}); got {value!r}")
    if isinstance(defaults[key], collections.abc.Mapping) and defaults[key]:
      value = check(value, defaults[key], f"{where}.{key}")
    merged[key] = value
  return merged


def validated(config, defaults, where="config.model") -> ml_collections.FrozenConfigDict:
  """`check`'s merged config, frozen (hashable: a Flax module attribute)."""
  return ml_collections.FrozenConfigDict(check(config, defaults, where))
