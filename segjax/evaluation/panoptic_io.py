"""COCO panoptic format I/O: RGB-encoded segment-id PNGs and the predictions JSON.

A COCO panoptic PNG stores segment id = R + 256 * G + 256**2 * B per pixel (panopticapi's rgb2id);
id 0 is VOID. The JSON holds, per image, `segments_info` [{id, category_id, ...}] for the ids of its
PNG (https://cocodataset.org/#format-data, "Panoptic Segmentation").
"""
import json
import os

import numpy as np
from PIL import Image

MAX_SEGMENT_ID = 256**3 - 1  # the largest id three 8-bit channels can hold


def rgb_to_id(rgb):
  """Segment ids [H, W] int32 from an RGB image [H, W, 3] (extra channels, e.g. alpha, ignored)."""
  rgb = np.asarray(rgb)
  if rgb.ndim != 3 or rgb.shape[-1] < 3:
    raise ValueError(f"rgb must have shape [H, W, 3], got {rgb.shape}")
  rgb = rgb[..., :3].astype(np.int32)
  return rgb[..., 0] + (rgb[..., 1] << 8) + (rgb[..., 2] << 16)


def id_to_rgb(id_map):
  """RGB uint8 [H, W, 3] encoding of segment ids [H, W] in [0, 256**3)."""
  id_map = np.asarray(id_map)
  if not np.issubdtype(id_map.dtype, np.integer):
    raise ValueError(f"id_map must be integer, got dtype {id_map.dtype}")
  if id_map.size and (id_map.min() < 0 or id_map.max() > MAX_SEGMENT_ID):
    raise ValueError(f"id_map values must lie in [0, {MAX_SEGMENT_ID}], got range "
                     f"[{id_map.min()}, {id_map.max()}]")
  id_map = id_map.astype(np.int64)
  return np.stack([id_map & 255, (id_map >> 8) & 255, (id_map >> 16) & 255], -1).astype(np.uint8)


def write_panoptic_png(path, id_map):
  """Writes segment ids [H, W] as a lossless RGB PNG (the path must end in .png)."""
  if not str(path).lower().endswith(".png"):
    raise ValueError(f"path must end in .png (a lossy format would corrupt the ids), got {path!r}")
  id_map = np.asarray(id_map)
  if id_map.ndim != 2:
    raise ValueError(f"id_map must have shape [H, W], got {id_map.shape}")
  Image.fromarray(id_to_rgb(id_map), mode="RGB").save(path)


def read_panoptic_png(path):
  """Segment ids [H, W] int32 of an RGB(A) panoptic PNG."""
  with Image.open(path) as image:
    if image.mode not in ("RGB", "RGBA"):
      raise ValueError(f"{path}: a panoptic PNG must be RGB or RGBA, got mode {image.mode!r}")
    return rgb_to_id(np.asarray(image))


def save_panoptic_predictions(out_dir, json_name, predictions, categories):
  """Writes predictions in the COCO panoptic format that `pq_compute` and panopticapi read.

  Args:
    out_dir: directory to write into (created if missing).
    json_name: file name of the JSON, e.g. "panoptic_pred.json"; the PNGs go to the folder of the
      same name without ".json" (panopticapi's default folder).
    predictions: iterable of (image_id, file_name, id_map [H, W] int, segments_info), where
      file_name is the PNG name (e.g. "000000000139.png") and segments_info is a list of
      {"id": int, "category_id": int} for the non-zero ids of id_map.
    categories: the "categories" list of the ground-truth JSON, copied into the output.

  Returns:
    (json_path, folder).
  """
  if not json_name.endswith(".json"):
    raise ValueError(f"json_name must end in .json, got {json_name!r}")
  json_path = os.path.join(out_dir, json_name)
  folder = json_path[:-len(".json")]
  os.makedirs(folder, exist_ok=True)
  annotations = []
  for image_id, file_name, id_map, segments_info in predictions:
    write_panoptic_png(os.path.join(folder, file_name), id_map)
    annotations.append({
        "image_id": int(image_id),
        "file_name": file_name,
        "segments_info": [{"id": int(s["id"]), "category_id": int(s["category_id"])}
                          for s in segments_info],
    })
  with open(json_path, "w") as f:
    json.dump({"annotations": annotations, "categories": list(categories)}, f)
  return json_path, folder
