"""A TFDS builder for semantic-only data sets read from their official local layouts (no download, ever).

A `Reader` (voc.py, cityscapes.py, ade20k.py) lists a split's (image, label) file pairs and gives the table from
the label files' values to train ids. Features of one example, as tfds_coco stores them for the semantic task:
  image     uint8 [H, W, 3] (the JPEG/PNG file's bytes)
  image_id  int64, the example's position in its split's list (sorted by name)
  semantic  uint8 [H, W, 1], train ids 0..L-1, 255 ignore
  instance_ids  uint16 [H, W] (a zlib-compressed tensor), 0 background, k > 0 instance k (a reader with `read_instances` only: ISBI's cells,
            whose U-Net weight map needs the instances, segjax/data/unet_weights.py)
Every file is decoded when the data set is built, so a missing or broken file, or a label value outside the
table, fails the build with the file's name. Stored as ArrayRecord, built once into `data_dir`; a split whose
file list changes gives a new build.
"""
import dataclasses
import hashlib
import io
import json
import os
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from segjax.data import coco
from segjax.data.coco_example import encode_png
from segjax.data.tf_env import OneLineBuildNotice

NOT_IN_TABLE = -1


@dataclasses.dataclass(frozen=True)
class Example:
  name: str  # unique within its split
  image_path: str
  label_path: str


@dataclasses.dataclass(frozen=True, eq=False)
class Reader:
  """One data set's layout and label table."""
  name: str
  class_names: tuple[str, ...]  # [L], by train id
  category_ids: tuple[int, ...]  # [L], by train id: the value of that class in the label files, increasing
  train_ids: np.ndarray  # int [256]: label file value -> train id, IGNORE_LABEL, or NOT_IN_TABLE
  examples: Callable[..., list[Example]]  # (config.dataset, split) -> the split's examples, sorted by name
  read_label: Callable[[str], np.ndarray]  # path -> int [H, W] values of the label file
  read_instances: Callable[[str], np.ndarray] | None = None  # label path -> instance ids int [H, W] (0 none)

  def __post_init__(self):
    assert list(self.category_ids) == sorted(set(self.category_ids)), "info.make_info orders classes by id"
    assert [self.train_ids[c] for c in self.category_ids] == list(range(len(self.class_names)))

  def categories(self) -> tuple[coco.Category, ...]:
    return tuple(coco.Category(cid, name, "", False) for cid, name in zip(self.category_ids, self.class_names))


def table(value_to_train_id: dict[int, int]) -> np.ndarray:
  """Label value -> train id [256]; values not in the dict are NOT_IN_TABLE."""
  train_ids = np.full(256, NOT_IN_TABLE, np.int32)
  for value, train_id in value_to_train_id.items():
    train_ids[value] = train_id
  return train_ids


def require(path, what):
  """`path` when it exists, else DatasetError naming it."""
  if not os.path.exists(path):
    raise coco.DatasetError(f"{path}: {what} does not exist")
  return path


def read_list(path) -> list[str]:
  """The names of a split list file, one a line (e.g. VOC's ImageSets/Segmentation/train.txt)."""
  with open(require(path, "split list file")) as f:
    return [line.strip() for line in f if line.strip()]


def _open(path, what):
  try:
    with open(require(path, what), "rb") as f:
      data = f.read()
    image = Image.open(io.BytesIO(data))
    image.load()
  except (OSError, SyntaxError, ValueError) as e:
    raise coco.DatasetError(f"{path}: {what} fails to decode ({e})") from e
  return data, image


def read_png_label(path) -> np.ndarray:
  """Values uint8 [H, W] of a single-channel label PNG: the palette indices of a palette ('P') PNG."""
  _, image = _open(path, "label PNG")
  if image.mode not in ("L", "P"):
    raise coco.DatasetError(f"{path}: label PNG must be single-channel (L or P), is mode {image.mode}")
  return np.asarray(image)


def read_image(path) -> tuple[bytes, tuple[int, int]]:
  """The file's bytes when RGB JPEG/PNG, else the image converted to RGB as PNG; and its (H, W)."""
  data, image = _open(path, "image")
  if not (image.mode == "RGB" and image.format in ("JPEG", "PNG")):
    data = encode_png(np.asarray(image.convert("RGB")))
  return data, (image.height, image.width)


def decode(reader: Reader, example: Example, image_id: int) -> dict:
  """The TFDS example of one (image, label) pair, labels mapped to train ids."""
  image, size = read_image(example.image_path)
  values = reader.read_label(example.label_path)
  if values.shape != size:
    raise coco.DatasetError(f"{example.label_path}: label is {values.shape[0]}x{values.shape[1]}, its image "
                            f"{example.image_path} is {size[0]}x{size[1]}")
  train_ids = np.where((values >= 0) & (values < 256), reader.train_ids[np.clip(values, 0, 255)], NOT_IN_TABLE)
  if (train_ids == NOT_IN_TABLE).any():
    bad = np.unique(values[train_ids == NOT_IN_TABLE]).tolist()
    raise coco.DatasetError(f"{example.label_path}: label values {bad[:5]} are not in the {reader.name} table")
  decoded = {"image": image, "image_id": image_id, "semantic": encode_png(train_ids.astype(np.uint8))}
  if reader.read_instances is not None:
    ids = np.asarray(reader.read_instances(example.label_path))
    if ids.min(initial=0) < 0 or ids.max(initial=0) > np.iinfo(np.uint16).max:
      raise coco.DatasetError(f"{example.label_path}: instance ids must be in 0..65535")
    decoded["instance_ids"] = ids.astype(np.uint16)
  return decoded


def features(instances: bool = False) -> tfds.features.FeaturesDict:
  """The stored features; `instances` adds the instance id map."""
  extra = {"instance_ids": tfds.features.Tensor(shape=(None, None), dtype=np.uint16,
                                                encoding=tfds.features.Encoding.ZLIB)} if instances else {}
  return tfds.features.FeaturesDict({
      "image": tfds.features.Image(shape=(None, None, 3)),
      "image_id": tfds.features.Scalar(np.int64),
      "semantic": tfds.features.Image(shape=(None, None, 1)),
      **extra,
  })


@dataclasses.dataclass(eq=False, repr=False)  # repr of BuilderConfig's fields only, not thousands of examples
class SemanticFolderConfig(tfds.core.BuilderConfig):
  """One data set's splits: its reader and each split's examples."""
  reader: Reader | None = None
  splits: tuple[tuple[str, tuple[Example, ...]], ...] = ()


class SemanticFolder(OneLineBuildNotice, tfds.core.GeneratorBasedBuilder):
  """(image, label) pairs -> TFDS; one builder config per data set and file list, made by `prepare()`."""

  VERSION = tfds.core.Version("1.0.0")

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):
    return None  # as in tfds_coco.CocoFolder: no checksums file, nothing is downloaded

  def _info(self) -> tfds.core.DatasetInfo:
    instances = self.builder_config.reader.read_instances is not None
    return self.dataset_info_from_configs(description="Images and semantic labels of a local data set.",
                                          features=features(instances))

  def _split_generators(self, dl_manager):
    del dl_manager  # the files are local; nothing is downloaded
    return {split: self._generate_examples(examples) for split, examples in self.builder_config.splits}

  def _generate_examples(self, examples: Sequence[Example]):
    for image_id, example in enumerate(examples):
      yield example.name, decode(self.builder_config.reader, example, image_id)


def _builder_config(reader: Reader, dataset_config, splits) -> SemanticFolderConfig:
  listed = tuple((split, tuple(reader.examples(dataset_config, split))) for split in dict.fromkeys(splits))
  for split, examples in listed:
    if not examples:
      raise coco.DatasetError(f"config.dataset.root={dataset_config.root}: split '{split}' of {reader.name} "
                              f"has no examples")
  stored = ["instance_ids"] if reader.read_instances is not None else []  # a build with other features: a new name
  key = json.dumps([reader.name, *stored, [[s, [dataclasses.astuple(e) for e in ex]] for s, ex in listed]])
  return SemanticFolderConfig(name=f"{reader.name}_{hashlib.sha1(key.encode()).hexdigest()[:12]}",
                              reader=reader, splits=listed)


_PREPARED = {}  # (data_dir, builder config name) -> builder prepared by this process


def prepare(reader: Reader, dataset_config) -> SemanticFolder:
  """The builder of config.dataset's train and eval splits, built unless it was built before (by any process)."""
  config = _builder_config(reader, dataset_config, (dataset_config.train_split, dataset_config.eval_split))
  data_dir = os.path.abspath(os.path.expanduser(dataset_config.data_dir))
  if (data_dir, config.name) not in _PREPARED:
    builder = SemanticFolder(config=config, data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare()
    _PREPARED[data_dir, config.name] = builder
  return _PREPARED[data_dir, config.name]
