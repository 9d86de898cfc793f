"""The CVPPP leaf segmentation challenge (Minervini et al. 2016; LSC 2017 training set), subset A1 (Arabidopsis).

config.dataset.root holds the challenge's folders, e.g. CVPPP2017_LSC_training/training:
  A1/plantNNN_rgb.png     the RGB(A) image
  A1/plantNNN_label.png   a single-channel (palette or grey) PNG, 0 background and one value per leaf
A split is a subset folder name ("A1": every plant in it, sorted) or the name of a list file root/SPLIT.txt with one
"A1/plantNNN" a line (the challenge has no validation split; the test labels are withheld).

The leaves become a COCO-format folder (`to_coco`: RGB PNGs and an instances JSON with RLE masks, one category
"leaf") written once under config.dataset.data_dir, which the COCO reader (tfds_coco) then builds like any COCO folder:
the pipeline, augmentation and class-agnostic mask AP are the COCO ones. Every file is decoded while converting, so
a missing or broken file fails with its name.
"""
import glob
import os

import numpy as np
from PIL import Image

from segjax.data import coco
from segjax.data import coco_writer

IMAGE_SUFFIX, LABEL_SUFFIX = "_rgb.png", "_label.png"
CATEGORY = {"id": 1, "name": "leaf", "supercategory": "plant", "isthing": 1}
MARKER = "cvppp_source.json"


def plants(root, split) -> list[str]:
  """The split's plants as "SUBSET/plantNNN", sorted."""
  root = os.path.expanduser(os.fspath(root))
  folder = os.path.join(root, split)
  if os.path.isdir(folder):
    names = sorted(os.path.basename(p)[:-len(IMAGE_SUFFIX)] for p in glob.glob(os.path.join(folder,
                                                                                            "*" + IMAGE_SUFFIX)))
    if not names:
      raise coco.DatasetError(f"{folder}: no *{IMAGE_SUFFIX} images")
    return [f"{split}/{n}" for n in names]
  listed = os.path.join(root, f"{split}.txt")
  if not os.path.exists(listed):
    raise coco.DatasetError(f"config.dataset.root={root}: split {split!r} is neither a subset folder {folder} nor "
                            f"a list file {listed}")
  with open(listed) as f:
    names = [line.strip() for line in f if line.strip()]
  if not names:
    raise coco.DatasetError(f"{listed}: empty split list")
  return sorted(names)


def _open(path, what):
  if not os.path.exists(path):
    raise coco.DatasetError(f"{path}: {what} does not exist")
  try:
    image = Image.open(path)
    image.load()
  except (OSError, SyntaxError, ValueError) as e:
    raise coco.DatasetError(f"{path}: {what} fails to decode ({e})") from e
  return image


def read_label(path) -> np.ndarray:
  """Leaf ids int [H, W] (0 background) of a label PNG: palette indices or grey values."""
  image = _open(path, "label PNG")
  if image.mode not in ("P", "L", "I", "I;16"):
    raise coco.DatasetError(f"{path}: label PNG must be single-channel (palette or grey), is mode {image.mode}")
  return np.asarray(image).astype(np.int64)


def read_plant(root, plant):
  """(RGB uint8 [H, W, 3], leaf ids [H, W]) of "SUBSET/plantNNN"."""
  base = os.path.join(os.path.expanduser(os.fspath(root)), plant)
  image = np.asarray(_open(base + IMAGE_SUFFIX, "image").convert("RGB"))
  labels = read_label(base + LABEL_SUFFIX)
  if labels.shape != image.shape[:2]:
    raise coco.DatasetError(f"{base + LABEL_SUFFIX}: label is {labels.shape[0]}x{labels.shape[1]}, its image "
                            f"{base + IMAGE_SUFFIX} is {image.shape[0]}x{image.shape[1]}")
  return image, labels


def _instances(labels, image_id, first_id):
  leaves = [v for v in np.unique(labels) if v > 0]
  return [coco_writer.mask_annotation(labels == leaf, first_id + k, image_id, CATEGORY["id"])
          for k, leaf in enumerate(leaves)]


def to_coco(root, splits, out) -> str:
  """Writes the splits as a COCO folder `out` (out/SPLIT/*.png, out/annotations/instances_SPLIT.json) unless it
  holds them already (from the same file list); returns out."""
  root = os.path.expanduser(os.fspath(root))
  listed = {split: plants(root, split) for split in dict.fromkeys(splits)}

  def write_split(split, split_folder):
    images, annotations = [], []
    for image_id, plant in enumerate(listed[split], start=1):
      image, labels = read_plant(root, plant)
      file_name = plant.replace("/", "_") + ".png"
      Image.fromarray(image).save(os.path.join(split_folder, file_name))
      images.append({"id": image_id, "file_name": file_name, "height": image.shape[0], "width": image.shape[1]})
      annotations += _instances(labels, image_id, len(annotations) + 1)
    return {"images": images, "annotations": annotations, "categories": [CATEGORY]}

  return coco_writer.write_once(out, MARKER, {"root": os.path.abspath(root), "splits": listed}, listed, write_split)


def coco_folder(dataset_config) -> str:
  """Where config.dataset's CVPPP splits are (or will be) written as a COCO folder: under data_dir, named by root."""
  return coco_writer.folder(dataset_config, "cvppp_coco")
