"""The ISBI cell tracking challenge layout (Ulman et al. 2017), as U-Net's PhC-U373 and DIC-HeLa rows use it
(Ronneberger et al. 2015, Table 2), read as cell / background segmentation.

config.dataset.root is one data set's folder (e.g. PhC-C2DH-U373 or DIC-C2DH-HeLa):
  SS/tNNN.tif                  the frames of sequence SS ("01", "02"), 8- or 16-bit grey
  SS_GT/SEG/man_segNNN.tif     the annotated frames' instance labels (0 background, k > 0 cell k)
Only annotated frames are examples. A split is a sequence ("01", "02") or "train" (every sequence in the folder);
the challenge's test sequences have no public ground truth. Labels: 1 cell (any instance id), 0 background; the
instance ids are stored too ("instance_ids"), for U-Net's weight map (config.dataset.unet_weight_map).
"""
import os
import re

import numpy as np

from segjax.data import coco
from segjax.data import semantic

CLASS_NAMES = ("background", "cell")
_SEG = re.compile(r"^man_seg(\d+)\.tif$")


def examples(dataset_config, split) -> list[semantic.Example]:
  root = os.path.expanduser(dataset_config.root)
  found = []
  if split == "train":
    sequences = sorted(d for d in os.listdir(semantic.require(root, "ISBI data set folder"))
                       if re.fullmatch(r"\d\d", d))
  elif re.fullmatch(r"\d\d", split):
    sequences = [split]
  else:
    raise coco.DatasetError(f"config.dataset split {split!r}: an ISBI split is a sequence ('01', '02') or 'train'")
  for sequence in sequences:
    frames = semantic.require(os.path.join(root, sequence), "ISBI sequence folder")
    annotations = semantic.require(os.path.join(root, f"{sequence}_GT", "SEG"), "ISBI SEG ground-truth folder")
    for name in sorted(os.listdir(annotations)):
      match = _SEG.match(name)
      if match:
        image = os.path.join(frames, f"t{match.group(1)}.tif")
        found.append(semantic.Example(f"{sequence}_{match.group(1)}", semantic.require(image, "ISBI frame"),
                                      os.path.join(annotations, name)))
  return found


def read_instance_ids(path) -> np.ndarray:
  """Instance ids int64 [H, W] of a man_seg TIFF (0 background)."""
  _, image = semantic._open(path, "ISBI segmentation TIFF")  # pylint: disable=protected-access
  values = np.asarray(image)
  if values.ndim != 2:
    raise coco.DatasetError(f"{path}: ISBI segmentation TIFF must be single-channel; has shape {values.shape}")
  return values.astype(np.int64)


def read_instance_label(path) -> np.ndarray:
  """Cell (1) / background (0) uint8 [H, W] of a man_seg TIFF of instance ids."""
  return (read_instance_ids(path) > 0).astype(np.uint8)


READER = semantic.Reader(
    name="isbi_cells", class_names=CLASS_NAMES, category_ids=(0, 1), train_ids=semantic.table({0: 0, 1: 1}),
    examples=examples, read_label=read_instance_label, read_instances=read_instance_ids)
