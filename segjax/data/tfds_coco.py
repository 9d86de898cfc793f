"""A TFDS builder that reads a COCO-format folder (no download, ever), built once into `data_dir`.

Features of one example:
  image              uint8 [H, W, 3] (the JPEG/PNG file's bytes)
  image_id           int64
  semantic           uint8 [H, W, 1], train ids, 255 ignore (see coco_example for its source)
  panoptic           uint8 [H, W, 3], COCO panoptic RGB id PNG (all 0 = VOID when the folder has none)
  panoptic_segments  sequence of {id, category_id, is_crowd}
  instances          sequence of {bbox float32 [4] (x1, y1, x2, y2) pixels, label int32 1..K,
                     is_crowd bool, mask: COCO compressed RLE counts of the [H, W] 0/1 mask}
  depth              uint16 [H, W, 1] millimetres, 0 = none (builders with depth=True only: config.DEPTH_DIR)
Metadata (restored with the built data): categories, and per split has_instances / has_panoptic.
Stored as ArrayRecord, so the pipeline reads any example by index (exact resume, per-host shards).
"""
import dataclasses
import hashlib
import json
import os
import re

import numpy as np
import tensorflow_datasets as tfds

from segjax.data import coco
from segjax.data import config as config_lib
from segjax.data import coco_example
from segjax.data import info as info_lib
from segjax.data.tf_env import OneLineBuildNotice
from segjax.data.tf_env import tf


def features(depth=False) -> tfds.features.FeaturesDict:
  extra = {"depth": tfds.features.Image(shape=(None, None, 1), dtype=np.uint16)} if depth else {}
  return tfds.features.FeaturesDict({
      **extra,
      "image": tfds.features.Image(shape=(None, None, 3)),
      "image_id": tfds.features.Scalar(np.int64),
      "semantic": tfds.features.Image(shape=(None, None, 1)),
      "panoptic": tfds.features.Image(shape=(None, None, 3)),
      "panoptic_segments": tfds.features.Sequence({
          "id": tfds.features.Scalar(np.int32),
          "category_id": tfds.features.Scalar(np.int32),
          "is_crowd": tfds.features.Scalar(np.bool_)}),
      "instances": tfds.features.Sequence({
          "bbox": tfds.features.Tensor(shape=(4,), dtype=np.float32),
          "label": tfds.features.Scalar(np.int32),
          "is_crowd": tfds.features.Scalar(np.bool_),
          "mask": tfds.features.Tensor(shape=(), dtype=tf.string)}),
  })


@dataclasses.dataclass(eq=False)
class CocoFolderConfig(tfds.core.BuilderConfig):
  """One COCO-format folder: its root, the splits to build and the layout of its files."""
  root: str = ""
  splits: tuple[str, ...] = ()
  layout: tuple[tuple[str, str], ...] = ()
  depth: bool = False


class CocoFolder(OneLineBuildNotice, tfds.core.GeneratorBasedBuilder):
  """COCO-format folder -> TFDS; one builder config per folder, made by `builder()`."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {"1.0.0": "Instance masks as PNG.", "1.1.0": "Instance masks as COCO compressed RLE counts."}

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):
    # Only locates a checksums file, and nothing is downloaded here; TFDS 4.9.10's own lookup
    # imports the `importlib_resources` backport, which it does not install on Python >= 3.9.
    return None

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description="A COCO-format folder (instances and/or panoptic annotations).",
        features=features(self.builder_config.depth), metadata=tfds.core.MetadataDict())

  def _split_generators(self, dl_manager):
    del dl_manager  # the folder is local; nothing is downloaded
    config = self.builder_config
    generators, categories = {}, None
    for split in config.splits:
      parsed = coco.load_split(config.root, split, dict(config.layout), config.depth)
      if categories is not None and parsed.categories != categories:
        raise coco.DatasetError(f"split '{split}' of {config.root}: its categories differ from "
                                f"split '{config.splits[0]}'")
      categories = parsed.categories
      self.info.metadata[split] = {"has_instances": parsed.has_instances,
                                   "has_panoptic": parsed.has_panoptic}
      generators[split] = self._generate_examples(parsed)
    self.info.metadata["categories"] = [dataclasses.asdict(c) for c in categories]
    return generators

  def _generate_examples(self, parsed: coco.CocoSplit):
    to_semantic = info_lib.category_to_semantic(parsed.categories)
    to_thing_label = info_lib.category_to_thing_label(parsed.categories)
    skips = coco.Skips()
    for record in parsed.images:
      yield record.id, coco_example.decode_record(record, to_semantic, to_thing_label, skips)
    skips.log()


def _config_name(root, splits, layout, depth=False):
  """'<folder name>_<hash>' of the root, splits, layout, whether depth is read, and the annotation files' size and
  mtime."""
  stamps = []
  for split in splits:
    paths = coco.split_paths(root, split, layout)
    for path in (paths.instances, paths.panoptic_json):
      stat = os.stat(path) if os.path.exists(path) else None
      stamps.append([path, stat.st_size, stat.st_mtime_ns] if stat else [path])
  key = json.dumps([root, list(splits), sorted(layout.items()), stamps] + (["depth"] if depth else []))
  slug = re.sub(r"[^a-z0-9]+", "_", os.path.basename(root.rstrip("/")).lower()).strip("_") or "coco"
  return f"{slug}_{hashlib.sha1(key.encode()).hexdigest()[:12]}"


def _builder_config(root, splits, layout, depth=False) -> CocoFolderConfig:
  root = os.path.abspath(os.path.expanduser(os.fspath(root)))
  layout = dict(config_lib.COCO_LAYOUT, **(layout or {}))
  splits = tuple(dict.fromkeys(splits))
  return CocoFolderConfig(name=_config_name(root, splits, layout, depth), root=root, splits=splits,
                          layout=tuple(sorted(layout.items())), depth=bool(depth))


def builder(root, splits, data_dir, layout=None, depth=False) -> CocoFolder:
  """The builder of `root`'s `splits` in `data_dir` (with their depth maps if `depth`); a changed annotation file
  gives a new one."""
  return CocoFolder(config=_builder_config(root, splits, layout, depth),
                    data_dir=os.path.abspath(os.path.expanduser(os.fspath(data_dir))),
                    file_format="array_record")


_PREPARED = {}  # (data_dir, builder config name) -> builder prepared by this process


def prepare(root, splits, data_dir, layout=None, depth=False) -> CocoFolder:
  """`builder(...)`, built unless it was built before (by any process; then only read)."""
  key = (os.path.abspath(os.path.expanduser(os.fspath(data_dir))),
         _builder_config(root, splits, layout, depth).name)
  if key not in _PREPARED:
    result = builder(root, splits, data_dir, layout, depth)
    result.download_and_prepare()
    _PREPARED[key] = result
  return _PREPARED[key]
