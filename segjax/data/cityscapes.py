"""Cityscapes fine annotations (Cordts et al. 2016), the 19 evaluated classes.

config.dataset.root holds, for each split (train, val, test) and city:
  leftImg8bit/SPLIT/CITY/NAME_leftImg8bit.png
  gtFine/SPLIT/CITY/NAME_gtFine_labelIds.png     uint8 label ids 0..33
Label ids map to train ids by cityscapesScripts' helpers/labels.py (LABELS below); ids with train id 255 are
ignored. 'license plate' (id -1) is never drawn into labelIds images (json2labelImg skips negative ids).
"""
import glob
import os

from segjax.constants import IGNORE_LABEL
from segjax.data import semantic

# (name, id, trainId) of cityscapesScripts' labels.py.
LABELS = (
    ("unlabeled", 0, 255), ("ego vehicle", 1, 255), ("rectification border", 2, 255), ("out of roi", 3, 255),
    ("static", 4, 255), ("dynamic", 5, 255), ("ground", 6, 255), ("road", 7, 0), ("sidewalk", 8, 1),
    ("parking", 9, 255), ("rail track", 10, 255), ("building", 11, 2), ("wall", 12, 3), ("fence", 13, 4),
    ("guard rail", 14, 255), ("bridge", 15, 255), ("tunnel", 16, 255), ("pole", 17, 5), ("polegroup", 18, 255),
    ("traffic light", 19, 6), ("traffic sign", 20, 7), ("vegetation", 21, 8), ("terrain", 22, 9), ("sky", 23, 10),
    ("person", 24, 11), ("rider", 25, 12), ("car", 26, 13), ("truck", 27, 14), ("bus", 28, 15),
    ("caravan", 29, 255), ("trailer", 30, 255), ("train", 31, 16), ("motorcycle", 32, 17), ("bicycle", 33, 18),
    ("license plate", -1, -1),
)
_EVALUATED = tuple((name, label_id) for name, label_id, train_id in LABELS if 0 <= train_id < IGNORE_LABEL)

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"


def examples(dataset_config, split) -> list[semantic.Example]:
  root = os.path.expanduser(dataset_config.root)
  images = semantic.require(os.path.join(root, "leftImg8bit", split), "Cityscapes image folder")
  labels = semantic.require(os.path.join(root, "gtFine", split), "Cityscapes gtFine folder")
  found = []
  for path in sorted(glob.glob(os.path.join(images, "*", "*" + IMAGE_SUFFIX))):
    city = os.path.basename(os.path.dirname(path))
    name = os.path.basename(path)[:-len(IMAGE_SUFFIX)]
    found.append(semantic.Example(name, path, os.path.join(labels, city, name + LABEL_SUFFIX)))
  return found


READER = semantic.Reader(
    name="cityscapes", class_names=tuple(name for name, _ in _EVALUATED),
    category_ids=tuple(label_id for _, label_id in _EVALUATED),
    train_ids=semantic.table({label_id: train_id for _, label_id, train_id in LABELS if label_id >= 0}),
    examples=examples, read_label=semantic.read_png_label)
