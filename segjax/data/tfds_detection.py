"""A TFDS builder of box-only detection sets (no download, ever), built once into `data_dir`.

Sources: "voc", the VOC devkit's XML annotations (voc_detection.py), or "coco", a COCO-format folder's
instances JSON read as a VOC-style set: each instance's box and thing label, `iscrowd` as VOC's `difficult`
(neither counts for nor against AP), so the synthetic set trains every detection model.
Features of one example:
  image     uint8 [H, W, 3] (the file's bytes)
  image_id  int64, the COCO image id ("coco"), the position in the split's list files ("voc")
  objects   sequence of {bbox float32 [4] (x1, y1, x2, y2) pixel edges, label int32 1..K, difficult bool,
            truncated bool}
Metadata: categories (thing categories, in label order). Stored as ArrayRecord, read by index.
"""
import dataclasses
import hashlib
import json
import os

import numpy as np
import tensorflow_datasets as tfds

from segjax.data import coco
from segjax.data import config as config_lib
from segjax.data import info as info_lib
from segjax.data import semantic
from segjax.data import voc_detection

SOURCES = ("voc", "coco")


def features() -> tfds.features.FeaturesDict:
  return tfds.features.FeaturesDict({
      "image": tfds.features.Image(shape=(None, None, 3)),
      "image_id": tfds.features.Scalar(np.int64),
      "objects": tfds.features.Sequence({
          "bbox": tfds.features.Tensor(shape=(4,), dtype=np.float32),
          "label": tfds.features.Scalar(np.int32),
          "difficult": tfds.features.Scalar(np.bool_),
          "truncated": tfds.features.Scalar(np.bool_)}),
  })


@dataclasses.dataclass(eq=False)
class DetectionFolderConfig(tfds.core.BuilderConfig):
  source: str = "voc"
  root: str = ""
  splits: tuple[str, ...] = ()
  layout: tuple[tuple[str, str], ...] = ()


def _objects(boxes, labels, difficult, truncated):
  return {"bbox": np.asarray(boxes, np.float32).reshape(-1, 4), "label": np.asarray(labels, np.int32),
          "difficult": np.asarray(difficult, bool), "truncated": np.asarray(truncated, bool)}


class DetectionFolder(tfds.core.GeneratorBasedBuilder):
  """Detection annotations -> TFDS; one builder config per source, root, splits and list files."""

  VERSION = tfds.core.Version("1.0.0")

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):
    return None  # as tfds_coco.CocoFolder: no checksums file, nothing is downloaded

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(description="Boxes and classes of a local detection data set.",
                                          features=features(), metadata=tfds.core.MetadataDict())

  def _split_generators(self, dl_manager):
    del dl_manager
    config = self.builder_config
    generators = {}
    if config.source == "voc":
      categories = [coco.Category(k + 1, name, "voc", True) for k, name in enumerate(voc_detection.CLASS_NAMES)]
      for split in config.splits:
        generators[split] = self._generate_examples(self._voc_examples(voc_detection.examples(config.root, split)))
    else:
      categories = None
      for split in config.splits:
        parsed = coco.load_split(config.root, split, dict(config.layout))
        if not parsed.has_instances:
          raise coco.DatasetError(f"split '{split}' of {config.root}: no instances JSON "
                                  f"({parsed.paths.instances}), so no boxes")
        things = [c for c in parsed.categories if c.isthing]
        if categories is not None and things != categories:
          raise coco.DatasetError(f"split '{split}' of {config.root}: its categories differ from "
                                  f"split '{config.splits[0]}'")
        categories = things
        generators[split] = self._generate_examples(self._coco_examples(parsed))
    self.info.metadata["categories"] = [dataclasses.asdict(c) for c in categories]
    return generators

  def _generate_examples(self, keyed_examples):
    yield from keyed_examples

  def _voc_examples(self, examples):
    if not examples:
      raise coco.DatasetError(f"{self.builder_config.root}: a VOC split lists no images")
    for image_id, example in enumerate(examples):
      annotation = voc_detection.read_annotation(example.annotation_path)
      image, size = semantic.read_image(example.image_path)
      if size != annotation.size:
        raise coco.DatasetError(f"{example.annotation_path}: field <size> is {annotation.size[0]}x"
                                f"{annotation.size[1]} (HxW), its image {example.image_path} is {size[0]}x{size[1]}")
      yield example.name, {"image": image, "image_id": image_id, "objects": _objects(
          annotation.boxes, annotation.labels, annotation.difficult, annotation.truncated)}

  def _coco_examples(self, parsed: coco.CocoSplit):
    to_label = info_lib.category_to_thing_label(parsed.categories)
    for record in parsed.images:
      instances = [i for i in record.instances if i.category_id in to_label]
      boxes = [(x, y, x + w, y + h) for x, y, w, h in (i.bbox for i in instances)]
      image, _ = semantic.read_image(record.image_path)
      yield record.id, {"image": image, "image_id": record.id, "objects": _objects(
          boxes, [to_label[i.category_id] for i in instances], [i.iscrowd for i in instances],
          [False] * len(instances))}


def _stamps(source, root, splits, layout):
  paths = []
  for split in splits:
    if source == "voc":
      year, _, image_set = split.partition("_")
      paths += [os.path.join(root, folder, "ImageSets", "Main", image_set + ".txt")
                for folder in voc_detection.YEARS.get(year, ())]
    else:
      paths.append(coco.split_paths(root, split, layout).instances)
  return [[p, os.stat(p).st_size, os.stat(p).st_mtime_ns] if os.path.exists(p) else [p] for p in paths]


def builder(source, root, splits, data_dir, layout=None) -> DetectionFolder:
  if source not in SOURCES:
    raise ValueError(f"detection source must be one of {SOURCES}; got {source!r}")
  root = os.path.abspath(os.path.expanduser(os.fspath(root)))
  layout = dict(config_lib.COCO_LAYOUT, **(layout or {}))
  splits = tuple(dict.fromkeys(splits))
  key = json.dumps([source, root, list(splits), sorted(layout.items()), _stamps(source, root, splits, layout)])
  config = DetectionFolderConfig(name=f"{source}_detection_{hashlib.sha1(key.encode()).hexdigest()[:12]}",
                                 source=source, root=root, splits=splits, layout=tuple(sorted(layout.items())))
  return DetectionFolder(config=config, data_dir=os.path.abspath(os.path.expanduser(os.fspath(data_dir))),
                         file_format="array_record")


_PREPARED = {}


def prepare(source, root, splits, data_dir, layout=None) -> DetectionFolder:
  """`builder(...)`, built unless it was built before (by any process; then only read)."""
  result = builder(source, root, splits, data_dir, layout)
  key = (result.data_dir, result.builder_config.name)
  if key not in _PREPARED:
    result.download_and_prepare()
    _PREPARED[key] = result
  return _PREPARED[key]
