"""A gs:// bucket kept in a local folder, so a run with `--workdir=gs://BUCKET/DIR` is tested offline.

The fake sits where the real bucket is reached, below segjax: etils.epath's backend for `gs://` (every file
operation segjax and orbax do through epath.Path) and orbax's two Google Cloud calls (TensorStore's kvstore for
the arrays, the bucket's hierarchical-namespace query). Code that wrote under the workdir with open() /
os.makedirs / os.path.abspath would instead create a local `gs:` folder in the current directory, which the tests
check is absent.
"""
import os

from etils.epath import backend as epath_backend
from etils.epath import gpath
from orbax.checkpoint._src.path import gcs_utils

_SCHEME = "gs://"


class FolderBucketBackend(epath_backend._OsPathBackend):  # pylint: disable=protected-access
  """epath's local backend with gs://BUCKET/KEY read as ROOT/BUCKET/KEY (and listed back as gs:// URLs)."""

  def __init__(self, root):
    self.root = os.fspath(root)

  def local(self, path):
    path = os.fspath(path)
    if not path.startswith(_SCHEME):
      raise AssertionError(f"the fake gs:// backend was handed a non-gs path {path!r}")
    return os.path.join(self.root, path[len(_SCHEME):])

  def url(self, path):
    return _SCHEME + os.path.relpath(path, self.root)

  def open(self, path, mode):
    return super().open(self.local(path), mode)

  def exists(self, path):
    return super().exists(self.local(path))

  def isdir(self, path):
    return super().isdir(self.local(path))

  def listdir(self, path):
    return super().listdir(self.local(path))

  def glob(self, path):
    return [self.url(p) for p in super().glob(self.local(path))]

  def walk(self, top, *, top_down=True, on_error=None):
    for root, dirs, files in super().walk(self.local(top), top_down=top_down, on_error=on_error):
      yield self.url(root), dirs, files

  def makedirs(self, path, *, exist_ok=False, mode=None):
    return super().makedirs(self.local(path), exist_ok=exist_ok, mode=mode)

  def mkdir(self, path, *, exist_ok=False, mode=None):
    return super().mkdir(self.local(path), exist_ok=exist_ok, mode=mode)

  def rmtree(self, path):
    return super().rmtree(self.local(path))

  def remove(self, path):
    return super().remove(self.local(path))

  def rename(self, path, dst):
    return super().rename(self.local(path), self.local(dst))

  def replace(self, path, dst):
    return super().replace(self.local(path), self.local(dst))

  def copy(self, path, dst, overwrite):
    return super().copy(self.local(path), self.local(dst), overwrite=overwrite)

  def stat(self, path):
    return super().stat(self.local(path))


def install(monkeypatch, root):
  """Routes gs:// to folders under `root` for the rest of the test; returns the backend."""
  backend = FolderBucketBackend(root)
  monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)  # else epath sends gs:// to tf.io.gfile
  monkeypatch.setitem(gpath._PREFIX_TO_BACKEND, "gs", backend)  # pylint: disable=protected-access
  monkeypatch.setattr(gcs_utils, "is_hierarchical_namespace_enabled", lambda path: False)
  monkeypatch.setattr(gcs_utils, "get_kvstore_for_gcs",
                      lambda path: {"driver": "file", "path": backend.local(path)})
  return backend
