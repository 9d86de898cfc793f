"""Region proposals from files, for the detectors that read external proposals (Fast R-CNN, SPP-net, R-CNN).

config.dataset.proposal_files maps a split name to its proposal files, read in order and concatenated, one entry per
image in the split's list order (the order of image ids, `voc_detection.examples`), e.g. for "0712_trainval"
(voc_2007_trainval.mat, voc_2012_trainval.mat). Two formats:

  .mat  Fast R-CNN's selective_search_data (rbgirshick/fast-rcnn, data/scripts/fetch_selective_search_data.sh):
        field "boxes", a 1 x N cell of [K_i, 4] arrays (y1, x1, y2, x2), 1-based inclusive pixel indices, in the
        image set's list order; field "images" (optional), the N image names, checked against the split's list.
  .npz  written by scripts/selective_search.py: "names" [N] strings and "boxes_{i}" [K_i, 4] (x1, y1, x2, y2) pixel
        edges for image i.

Boxes come back as pixel edges (x1, y1, x2, y2), the annotations' convention: (x1 - 1, y1 - 1, x2, y2) of the
1-based inclusive ones, so a proposal equal to a ground-truth box has IoU 1 with it. A split's first `count` boxes
per image are used (selective search's order), padded with invalid ones where an image has fewer.
"""
import os

import numpy as np

from segjax.data.coco import DatasetError


def _read_mat(path):
  from scipy import io  # pylint: disable=g-import-not-at-top
  data = io.loadmat(path)
  if "boxes" not in data:
    raise DatasetError(f"{path}: no field 'boxes' (Fast R-CNN's selective search layout: a 1 x N cell of "
                       "[K, 4] (y1, x1, y2, x2) arrays)")
  cells = data["boxes"].ravel()
  boxes = []
  for i, cell in enumerate(cells):
    cell = np.asarray(cell, np.float64).reshape(-1, 4) if np.size(cell) else np.zeros((0, 4))
    if np.size(cell) and np.asarray(cells[i]).shape[-1] != 4:
      raise DatasetError(f"{path}: field 'boxes', image {i}: expected [K, 4] (y1, x1, y2, x2); got shape "
                         f"{np.shape(cells[i])}")
    y1, x1, y2, x2 = cell.T
    boxes.append(np.stack([x1 - 1, y1 - 1, x2, y2], 1).astype(np.float32))
  names = None
  if "images" in data:
    names = [str(np.asarray(n).ravel()[0]) if np.size(n) else "" for n in data["images"].ravel()]
    if len(names) != len(boxes):
      raise DatasetError(f"{path}: field 'images' names {len(names)} images, field 'boxes' holds {len(boxes)}")
  return names, boxes


def _read_npz(path):
  with np.load(path) as data:
    if "names" not in data:
      raise DatasetError(f"{path}: no field 'names' (scripts/selective_search.py's layout)")
    names = [str(n) for n in data["names"]]
    boxes = []
    for i in range(len(names)):
      key = f"boxes_{i}"
      if key not in data or data[key].ndim != 2 or data[key].shape[1] != 4:
        raise DatasetError(f"{path}: field '{key}' must be [K, 4] (x1, y1, x2, y2) for image {names[i]!r}")
      boxes.append(data[key].astype(np.float32))
  return names, boxes


def read(path):
  """(image names or None, [boxes [K_i, 4] float32 pixel edges per image]) of one proposal file."""
  path = os.path.expanduser(str(path))
  if not os.path.exists(path):
    raise DatasetError(f"proposal file {path} does not exist")
  readers = {".mat": _read_mat, ".npz": _read_npz}
  extension = os.path.splitext(path)[1]
  if extension not in readers:
    raise DatasetError(f"proposal file {path}: unknown format {extension!r}; expected one of {sorted(readers)}")
  return readers[extension](path)


def write_npz(path, names, boxes):
  """Writes the .npz layout: names [N], boxes_{i} [K_i, 4] (x1, y1, x2, y2) pixel edges."""
  arrays = {f"boxes_{i}": np.asarray(b, np.float32).reshape(-1, 4) for i, b in enumerate(boxes)}
  np.savez_compressed(path, names=np.asarray(names), **arrays)


class SplitProposals:
  """The proposals of one split: `count` per image, indexed by image id (the position in the split's list)."""

  def __init__(self, files, count, names):
    """files: the split's proposal files, in order; names: the split's image names in list order (a proposal file
    that names its images must name these: e.g. "000005" for "VOC2007/000005")."""
    self.count = int(count)
    boxes, offset = [], 0
    for path in files:
      file_names, file_boxes = read(path)
      if file_names is not None:
        expected = [n.rsplit("/", 1)[-1] for n in names[offset:offset + len(file_boxes)]]
        found = [n.rsplit("/", 1)[-1] for n in file_names]
        if found != expected:
          mismatch = next((i for i, (a, b) in enumerate(zip(found, expected)) if a != b), min(len(found),
                                                                                               len(expected)))
          raise DatasetError(f"{path}: field 'images' does not follow the split's list: entry {mismatch} is "
                             f"{found[mismatch] if mismatch < len(found) else None!r}, the list has "
                             f"{expected[mismatch] if mismatch < len(expected) else None!r}")
      boxes += file_boxes
      offset += len(file_boxes)
    if len(boxes) != len(names):
      raise DatasetError(f"proposal files {list(files)} hold {len(boxes)} images; the split lists {len(names)}")
    self.boxes = np.zeros((len(boxes), self.count, 4), np.float32)
    self.valid = np.zeros((len(boxes), self.count), bool)
    for i, b in enumerate(boxes):
      k = min(len(b), self.count)
      self.boxes[i, :k], self.valid[i, :k] = b[:k], True

  def for_image(self, image_id, transform, image_size):
    """(proposals [count, 4], proposal_valid [count]) of image `image_id`, moved by the row's augmentation:
    transform = (scale, offset x, offset y, flipped) as augment_detection.preprocess applies it to the boxes, then
    clipped to the image_size (H, W) batch row; degenerate boxes become invalid. A padding row (id -1) gets none."""
    if image_id < 0:
      return np.zeros_like(self.boxes[0]), np.zeros_like(self.valid[0])
    scale, dx, dy, flipped = (float(t) for t in transform)
    boxes = self.boxes[image_id] * scale + np.array([dx, dy, dx, dy], np.float32)
    h, w = image_size
    if flipped:
      boxes = np.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1)
    boxes = np.clip(boxes, 0, np.array([w, h, w, h], np.float32))
    valid = self.valid[image_id] & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return np.where(valid[:, None], boxes, 0).astype(np.float32), valid
