"""PASCAL VOC detection annotations in the devkit's layout (VOC2007 and VOC2012).

config.dataset.root is VOCdevkit:
  VOC2007/Annotations/NAME.xml            <size><width/><height/></size>, per <object>: <name> (one of the 20
                                          classes), <difficult>, <truncated> (0/1, absent = 0), <bndbox> with
                                          <xmin> <ymin> <xmax> <ymax> (1-based, inclusive pixel indices)
  VOC2007/ImageSets/Main/{train,val,trainval,test}.txt
  VOC2007/JPEGImages/NAME.jpg
  VOC2012/...                             the same
Split names are "{year}_{set}": year 2007, 2012, or 0712 (both years' lists, in that order, e.g. "0712_trainval",
the 16,551 images of the "07+12" protocol), set one of the list files. Boxes are returned as pixel edges
(x1, y1, x2, y2) = (xmin - 1, ymin - 1, xmax, ymax), so an IoU without "+1" equals the devkit's.
"""
import dataclasses
import os
import xml.etree.ElementTree as ElementTree

import numpy as np

from segjax.data import coco
from segjax.data import semantic

CLASS_NAMES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
               "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")
YEARS = {"2007": ("VOC2007",), "2012": ("VOC2012",), "0712": ("VOC2007", "VOC2012")}


@dataclasses.dataclass(frozen=True)
class Annotation:
  """One image's objects: labels 1..20 in CLASS_NAMES order."""
  size: tuple[int, int]  # (H, W) from <size>
  boxes: np.ndarray  # float32 [N, 4] pixel edges
  labels: np.ndarray  # int32 [N]
  difficult: np.ndarray  # bool [N]
  truncated: np.ndarray  # bool [N]


@dataclasses.dataclass(frozen=True)
class Example:
  name: str  # "VOC2007/000005", unique over the years
  image_path: str
  annotation_path: str


def examples(root, split) -> list[Example]:
  """The images of split "{year}_{set}" under VOCdevkit `root`, in list-file order."""
  year, _, image_set = split.partition("_")
  if year not in YEARS or not image_set:
    raise ValueError(f"VOC detection split {split!r}: expected '{{year}}_{{set}}' with year one of "
                     f"{sorted(YEARS)} (e.g. '2007_test', '0712_trainval')")
  result = []
  for folder in YEARS[year]:
    base = os.path.join(os.path.expanduser(root), folder)
    for name in semantic.read_list(os.path.join(base, "ImageSets", "Main", image_set + ".txt")):
      result.append(Example(f"{folder}/{name}", os.path.join(base, "JPEGImages", name + ".jpg"),
                            os.path.join(base, "Annotations", name + ".xml")))
  return result


def _text(path, element, field, required=True, where=""):
  node = element.find(field)
  if node is None or node.text is None or not node.text.strip():
    if required:
      raise coco.DatasetError(f"{path}: field <{field}>{where} is missing or empty")
    return None
  return node.text.strip()


def _number(path, element, field, kind=float, where=""):
  text = _text(path, element, field, where=where)
  try:
    return kind(float(text)) if kind is int else kind(text)
  except ValueError:
    raise coco.DatasetError(f"{path}: field <{field}>{where} is {text!r}, not a number") from None


def _flag(path, element, field, where):
  text = _text(path, element, field, required=False, where=where)
  if text is None:
    return False
  if text not in ("0", "1"):
    raise coco.DatasetError(f"{path}: field <{field}>{where} is {text!r}, expected 0 or 1")
  return text == "1"


def read_annotation(path) -> Annotation:
  """Parses one Annotations/NAME.xml; a malformed file raises DatasetError naming the file and the field."""
  semantic.require(path, "VOC annotation")
  try:
    tree = ElementTree.parse(path).getroot()
  except ElementTree.ParseError as e:
    raise coco.DatasetError(f"{path}: not well-formed XML ({e})") from e
  size = tree.find("size")
  if size is None:
    raise coco.DatasetError(f"{path}: field <size> is missing")
  height, width = (_number(path, size, f, int, " of <size>") for f in ("height", "width"))
  boxes, labels, difficult, truncated = [], [], [], []
  for k, obj in enumerate(tree.findall("object")):
    where = f" of object {k}"
    name = _text(path, obj, "name", where=where)
    if name not in CLASS_NAMES:
      raise coco.DatasetError(f"{path}: field <name>{where} is {name!r}, not a VOC class")
    bndbox = obj.find("bndbox")
    if bndbox is None:
      raise coco.DatasetError(f"{path}: field <bndbox>{where} is missing")
    xmin, ymin, xmax, ymax = (_number(path, bndbox, f, float, where) for f in ("xmin", "ymin", "xmax", "ymax"))
    if not (1 <= xmin <= xmax and 1 <= ymin <= ymax):
      raise coco.DatasetError(f"{path}: field <bndbox>{where} is ({xmin}, {ymin}, {xmax}, {ymax}); expected "
                              "1 <= xmin <= xmax and 1 <= ymin <= ymax")
    boxes.append((xmin - 1, ymin - 1, xmax, ymax))
    labels.append(CLASS_NAMES.index(name) + 1)
    difficult.append(_flag(path, obj, "difficult", where))
    truncated.append(_flag(path, obj, "truncated", where))
  return Annotation((height, width), np.array(boxes, np.float32).reshape(-1, 4), np.array(labels, np.int32),
                    np.array(difficult, bool), np.array(truncated, bool))
