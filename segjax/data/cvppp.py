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
import hashlib
import json
import os
import shutil

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from segjax.data import coco

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
  out = []
  for k, leaf in enumerate(v for v in np.unique(labels) if v > 0):
    mask = np.asfortranarray((labels == leaf).astype(np.uint8))
    rle = mask_utils.encode(mask)
    x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
    rle["counts"] = rle["counts"].decode("ascii")
    out.append({"id": first_id + k, "image_id": image_id, "category_id": CATEGORY["id"], "iscrowd": 0,
                "bbox": [x, y, w, h], "area": float(mask.sum()), "segmentation": rle})
  return out


def to_coco(root, splits, out) -> str:
  """Writes the splits as a COCO folder `out` (out/SPLIT/*.png, out/annotations/instances_SPLIT.json) unless it
  holds them already (from the same file list); returns out."""
  root = os.path.expanduser(os.fspath(root))
  listed = {split: plants(root, split) for split in dict.fromkeys(splits)}
  key = json.dumps({"root": os.path.abspath(root), "splits": listed}, sort_keys=True)
  marker = os.path.join(out, MARKER)
  if os.path.exists(marker):
    with open(marker) as f:
      if f.read() == key:
        return out
  partial = f"{out}.partial-{os.getpid()}"
  shutil.rmtree(partial, ignore_errors=True)
  try:
    os.makedirs(os.path.join(partial, "annotations"))
    for split, names in listed.items():
      os.makedirs(os.path.join(partial, split))
      images, annotations = [], []
      for image_id, plant in enumerate(names, start=1):
        image, labels = read_plant(root, plant)
        file_name = plant.replace("/", "_") + ".png"
        Image.fromarray(image).save(os.path.join(partial, split, file_name))
        images.append({"id": image_id, "file_name": file_name, "height": image.shape[0], "width": image.shape[1]})
        annotations += _instances(labels, image_id, len(annotations) + 1)
      with open(os.path.join(partial, "annotations", f"instances_{split}.json"), "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": [CATEGORY]}, f)
    with open(os.path.join(partial, MARKER), "w") as f:
      f.write(key)
    shutil.rmtree(out, ignore_errors=True)
    os.rename(partial, out)
  finally:
    shutil.rmtree(partial, ignore_errors=True)
  return out


def coco_folder(dataset_config) -> str:
  """Where config.dataset's CVPPP splits are (or will be) written as a COCO folder: under data_dir, named by root."""
  root = os.path.abspath(os.path.expanduser(dataset_config.root))
  digest = hashlib.sha1(root.encode()).hexdigest()[:12]
  return os.path.join(os.path.expanduser(dataset_config.data_dir), f"cvppp_coco_{digest}")
