"""Instance sets read from their own layout are written once as a COCO-format folder (CVPPP, Cityscapes instances),
which the COCO reader (tfds_coco) then builds like any COCO folder."""
import hashlib
import json
import os
import shutil

import numpy as np
from pycocotools import mask as mask_utils


def mask_annotation(mask, annotation_id, image_id, category_id, iscrowd=False) -> dict:
  """A COCO instance annotation of a binary mask [H, W]: compressed RLE, its bbox and area."""
  rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
  x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
  rle["counts"] = rle["counts"].decode("ascii")
  return {"id": annotation_id, "image_id": image_id, "category_id": category_id, "iscrowd": int(iscrowd),
          "bbox": [x, y, w, h], "area": float(mask.sum()), "segmentation": rle}


def folder(dataset_config, prefix) -> str:
  """Where config.dataset's splits are (or will be) written: under data_dir, named by `prefix` and the root."""
  root = os.path.abspath(os.path.expanduser(dataset_config.root))
  digest = hashlib.sha1(root.encode()).hexdigest()[:12]
  return os.path.join(os.path.expanduser(dataset_config.data_dir), f"{prefix}_{digest}")


def write_once(out, marker, source, splits, write_split) -> str:
  """Writes `out` (out/SPLIT/ images, out/annotations/instances_SPLIT.json) unless it was written from the same
  `source` (a JSON-able description of the files read, kept in out/MARKER); returns out.

  write_split(split, split_folder) puts the split's images into split_folder and returns its COCO dict (images,
  annotations, categories). The folder is built aside and renamed into place, so an interrupted conversion leaves
  no half-written set behind.
  """
  key = json.dumps(source, sort_keys=True)
  marker_path = os.path.join(out, marker)
  if os.path.exists(marker_path):
    with open(marker_path) as f:
      if f.read() == key:
        return out
  partial = f"{out}.partial-{os.getpid()}"
  shutil.rmtree(partial, ignore_errors=True)
  try:
    os.makedirs(os.path.join(partial, "annotations"))
    for split in splits:
      os.makedirs(os.path.join(partial, split))
      with open(os.path.join(partial, "annotations", f"instances_{split}.json"), "w") as f:
        json.dump(write_split(split, os.path.join(partial, split)), f)
    with open(os.path.join(partial, marker), "w") as f:
      f.write(key)
    shutil.rmtree(out, ignore_errors=True)
    os.rename(partial, out)
  finally:
    shutil.rmtree(partial, ignore_errors=True)
  return out
