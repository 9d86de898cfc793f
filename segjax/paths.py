"""Workdir I/O through one path type, etils.epath: a `gs://` (or `s3://`) URL works like a local folder.

Every read and write under a workdir (checkpoints, metrics.jsonl, config.json, pictures, TensorBoard events, the
evaluators' exchange files) and `config.init_from` go through `resolve`, so on a pod every host reaches the same
bucket instead of writing to its own disk.
"""
import os

from etils import epath


def is_url(path) -> bool:
  """True for `scheme://...` (a cloud bucket), False for a local path."""
  return "://" in os.fspath(path)


def resolve(path) -> epath.Path:
  """`path` as an epath.Path: a URL as it is, a local path user-expanded and absolute (orbax wants absolute local
  paths; a URL must never go through os.path.abspath, which would make `gs://B/D` a local `./gs:/B/D`)."""
  if isinstance(path, epath.Path) or is_url(path):
    return epath.Path(path)
  return epath.Path(os.path.abspath(os.path.expanduser(os.fspath(path))))
