"""Cityscapes fine instance annotations (Cordts et al. 2016): the 8 thing classes of the instance-level benchmark.

config.dataset.root holds, for each split (train, val, test) and city:
  leftImg8bit/SPLIT/CITY/NAME_leftImg8bit.png
  gtFine/SPLIT/CITY/NAME_gtFine_instanceIds.png   int32 (mode I) or uint16 ids
An instanceIds pixel >= 1000 is label_id * 1000 + k, instance k of a class with instances; a pixel < 1000 is a plain
label id (cityscapesScripts' json2instanceImg.py). The benchmark's classes are the labels with instances that are
evaluated (helpers/labels.py: hasInstances and not ignoreInEval): person 24, rider 25, car 26, truck 27, bus 28,
train 31, motorcycle 32, bicycle 33. A pixel holding one of these label ids below 1000 belongs to a group region
("cargroup", ...): it becomes one crowd annotation per class and image, as the official evaluation ignores it.
Caravan and trailer instances (29xxx, 30xxx) are not evaluated and are left out.

The splits become a COCO-format folder (`to_coco`) under config.dataset.data_dir, which the COCO reader (tfds_coco)
then builds like any COCO folder: categories keep the Cityscapes label ids as COCO category ids; each image record
carries `instance_ids_file`, the absolute path of its instanceIds PNG, from which the official instance AP is
computed (segjax.evaluation.cityscapes_instances). Images are linked, not copied; every file is decoded while
converting, so a missing or broken file fails with its name.
"""
import glob
import os

import numpy as np
from PIL import Image

from segjax.data import coco
from segjax.data import coco_writer

IMAGE_SUFFIX, INSTANCE_SUFFIX = "_leftImg8bit.png", "_gtFine_instanceIds.png"
# (name, label id) of the 8 evaluated classes with instances, in cityscapesScripts' labels.py order.
THING_CLASSES = (("person", 24), ("rider", 25), ("car", 26), ("truck", 27), ("bus", 28), ("train", 31),
                 ("motorcycle", 32), ("bicycle", 33))
CATEGORIES = tuple({"id": label_id, "name": name, "supercategory": "human" if label_id < 26 else "vehicle",
                    "isthing": 1} for name, label_id in THING_CLASSES)
MARKER = "cityscapes_instances_source.json"


def examples(root, split) -> list[tuple[str, str, str]]:
  """(NAME, image path, instanceIds path) of every image of the split, sorted by city and name."""
  root = os.path.expanduser(os.fspath(root))
  images = os.path.join(root, "leftImg8bit", split)
  if not os.path.isdir(images):
    raise coco.DatasetError(f"{images}: Cityscapes image folder of split {split!r} does not exist "
                            "(config.dataset.root, train_split / eval_split)")
  found = []
  for path in sorted(glob.glob(os.path.join(images, "*", "*" + IMAGE_SUFFIX))):
    city = os.path.basename(os.path.dirname(path))
    name = os.path.basename(path)[:-len(IMAGE_SUFFIX)]
    found.append((name, path, os.path.join(root, "gtFine", split, city, name + INSTANCE_SUFFIX)))
  if not found:
    raise coco.DatasetError(f"{images}: no CITY/*{IMAGE_SUFFIX} images")
  return found


def _open(path, what):
  if not os.path.exists(path):
    raise coco.DatasetError(f"{path}: {what} does not exist")
  try:
    image = Image.open(path)
    image.load()
  except (OSError, SyntaxError, ValueError) as e:
    raise coco.DatasetError(f"{path}: {what} fails to decode ({e})") from e
  return image


def read_instance_ids(path) -> np.ndarray:
  """The instance ids int64 [H, W] of an instanceIds PNG (single channel, 16 or 32 bit, or 8 bit without instances)."""
  image = _open(path, "instanceIds PNG")
  if image.mode not in ("I", "I;16", "L"):
    raise coco.DatasetError(f"{path}: instanceIds PNG must be single-channel 16/32-bit, is mode {image.mode}")
  ids = np.asarray(image).astype(np.int64)
  bad = (ids >= 1000) & ((ids // 1000 > 33) | (ids < 0))
  if (ids < 0).any() or bad.any():
    raise coco.DatasetError(f"{path}: instance id {int(ids[bad | (ids < 0)][0])} is neither a label id (< 1000) nor "
                            "label_id * 1000 + k of a Cityscapes label")
  return ids


def instances(ids) -> list[tuple[int, int, bool, np.ndarray]]:
  """(instance id, label id, is_crowd, mask) of the thing instances of an instanceIds array: one per id >= 1000 of
  the 8 classes, and one crowd region per class whose plain label id (a group) is drawn."""
  thing_ids = {label_id for _, label_id in THING_CLASSES}
  out = []
  for value in np.unique(ids):
    label_id = int(value) // 1000 if value >= 1000 else int(value)
    if label_id in thing_ids:
      out.append((int(value), label_id, bool(value < 1000), ids == value))
  return out


def _annotations(ids, image_id, first_id):
  return [coco_writer.mask_annotation(mask, first_id + k, image_id, label_id, crowd)
          for k, (_, label_id, crowd, mask) in enumerate(instances(ids))]


def to_coco(root, splits, out) -> str:
  """Writes the splits as a COCO folder `out` (out/SPLIT/*.png links, out/annotations/instances_SPLIT.json) unless it
  holds them already (from the same file list); returns out."""
  root = os.path.expanduser(os.fspath(root))
  listed = {split: examples(root, split) for split in dict.fromkeys(splits)}

  def write_split(split, split_folder):
    images, annotations = [], []
    for image_id, (name, image_path, ids_path) in enumerate(listed[split], start=1):
      image = _open(image_path, "image")
      ids = read_instance_ids(ids_path)
      if ids.shape != (image.height, image.width):
        raise coco.DatasetError(f"{ids_path}: instanceIds is {ids.shape[0]}x{ids.shape[1]}, its image {image_path} "
                                f"is {image.height}x{image.width}")
      file_name = name + IMAGE_SUFFIX
      os.symlink(os.path.abspath(image_path), os.path.join(split_folder, file_name))
      images.append({"id": image_id, "file_name": file_name, "height": image.height, "width": image.width,
                     "instance_ids_file": os.path.abspath(ids_path)})
      annotations += _annotations(ids, image_id, len(annotations) + 1)
    return {"images": images, "annotations": annotations, "categories": list(CATEGORIES)}

  return coco_writer.write_once(out, MARKER, {"root": os.path.abspath(root), "splits": listed}, listed, write_split)


def coco_folder(dataset_config) -> str:
  """Where config.dataset's splits are (or will be) written as a COCO folder: under data_dir, named by root."""
  return coco_writer.folder(dataset_config, "cityscapes_instances_coco")
