"""PASCAL VOC 2012 segmentation, with SBD (Hariharan et al. 2011) for the "train_aug" split.

config.dataset.root is VOCdevkit:
  VOC2012/JPEGImages/NAME.jpg
  VOC2012/SegmentationClass/NAME.png             palette PNG, index = class 0..20, 255 = void (object boundaries)
  VOC2012/ImageSets/Segmentation/{train,val,trainval}.txt
config.dataset.sbd_root is SBD's benchmark_RELEASE (only "train_aug" reads it):
  dataset/img/NAME.jpg
  dataset/cls/NAME.mat                           struct GTcls, field Segmentation: uint8 [H, W] classes 0..20
  dataset/{train,val}.txt
Splits: VOC's list files, and "train_aug" = (VOC train | SBD train | SBD val) - VOC val, the 10,582 images
DeepLab trains on. An image with a VOC label keeps it, as DeepLab's SegmentationClassAug does (its recipe,
martinkersner/train-DeepLab, copies VOC's trainval labels over SBD's converted ones); the others take SBD's image
and label.
"""
import os

import numpy as np
import scipy.io

from segjax.constants import IGNORE_LABEL
from segjax.data import coco
from segjax.data import semantic

CLASS_NAMES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
               "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")


def _voc_example(voc, name):
  return semantic.Example(name, os.path.join(voc, "JPEGImages", name + ".jpg"),
                          os.path.join(voc, "SegmentationClass", name + ".png"))


def examples(dataset_config, split) -> list[semantic.Example]:
  voc = os.path.join(os.path.expanduser(dataset_config.root), "VOC2012")
  lists = os.path.join(voc, "ImageSets", "Segmentation")
  if split != "train_aug":
    return [_voc_example(voc, name) for name in sorted(set(semantic.read_list(os.path.join(lists, split + ".txt"))))]
  voc_train = set(semantic.read_list(os.path.join(lists, "train.txt")))
  voc_val = set(semantic.read_list(os.path.join(lists, "val.txt")))
  sbd = os.path.join(semantic.require(os.path.expanduser(dataset_config.sbd_root), "config.dataset.sbd_root"),
                     "dataset")
  sbd_names = set(semantic.read_list(os.path.join(sbd, "train.txt")))
  sbd_names |= set(semantic.read_list(os.path.join(sbd, "val.txt")))
  return [_voc_example(voc, name) if name in voc_train else
          semantic.Example(name, os.path.join(sbd, "img", name + ".jpg"), os.path.join(sbd, "cls", name + ".mat"))
          for name in sorted((voc_train | sbd_names) - voc_val)]


def read_label(path) -> np.ndarray:
  """Classes int [H, W] of a VOC palette PNG or an SBD cls .mat."""
  if not path.endswith(".mat"):
    return semantic.read_png_label(path)
  semantic.require(path, "SBD label")
  try:
    gt = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)["GTcls"]
    segmentation = np.asarray(gt.Segmentation)
  except (KeyError, AttributeError) as e:
    raise coco.DatasetError(f"{path}: no struct GTcls with field Segmentation ({e!r})") from e
  except (OSError, ValueError, NotImplementedError) as e:
    raise coco.DatasetError(f"{path}: SBD label fails to load ({e})") from e
  if segmentation.ndim != 2 or segmentation.dtype.kind not in "ui":
    raise coco.DatasetError(f"{path}: GTcls.Segmentation must be integer classes [H, W], is "
                            f"{segmentation.dtype} {segmentation.shape}")
  return segmentation


READER = semantic.Reader(
    name="voc", class_names=CLASS_NAMES, category_ids=tuple(range(21)),
    train_ids=semantic.table({**{c: c for c in range(21)}, IGNORE_LABEL: IGNORE_LABEL}),
    examples=examples, read_label=read_label)
