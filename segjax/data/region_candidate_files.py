"""SDS's region candidates from MCG's candidate files: one .mat per image, named after the image (its file name's
stem + ".mat"), as MCG's script that computes them for a data set writes them (jponttuset/mcg,
pre-trained/scripts/im2mcg_all.m at commit 1c7aef0266b24e4e114c82cf888af6af462987f6, its parsave: `save(res_file,
'scores', 'bboxes', 'superpixels', 'labels')` of pre-trained/im2mcg.m's output):

  superpixels  [H, W] superpixel labels 1..S of the image's pixels
  labels       K x 1 cell: candidate k is the union of the superpixels labels{k} lists
  scores       [K, 1] the candidates' scores (MCG's ranking; im2mcg sorts them descending)
  bboxes       (not read)

SDS reads the same fields from a struct `candidates` (bharath272/sds_eccv2014, preprocess_mcg_candidates.m at
commit db7514565051259965ca9f4a87004400e53daf6a: `tmp.candidates.superpixels`, `.labels`); such files are read too.
scripts/region_candidates.py writes this layout (segjax/data/hierarchical_grouping.py's selective search regions).

The candidates come in descending score order (stable: equal scores keep the file's order); an image's first `count`
are its masks, padded with invalid empty ones where it has fewer. The superpixel map must have the image's size.
In the pipeline the map follows the image through the augmentation (nearest resize, flip, crop, padding with label
0, the gather the instance masks get: augment.finish_labels), and the masks are built from the moved map.
"""
import os

import numpy as np

from segjax.data.coco import DatasetError

FIELDS = ("superpixels", "labels", "scores")
_BAND = 64  # image rows packed at a time


def _fields(path):
  from scipy import io  # pylint: disable=g-import-not-at-top
  try:
    data = io.loadmat(path)
  except NotImplementedError as e:  # scipy reads MATLAB files up to v7; v7.3 is HDF5
    raise DatasetError(f"{path}: a MATLAB v7.3 (HDF5) file; save it with -v7 ({e})") from e
  except (ValueError, OSError) as e:
    raise DatasetError(f"{path}: not a readable MATLAB file ({e})") from e
  if "superpixels" not in data and "candidates" in data:  # SDS's struct `candidates`
    struct = data["candidates"]
    names = struct.dtype.names or ()
    data = {name: struct[name].ravel()[0] for name in names}
  for field in FIELDS:
    if field not in data:
      raise DatasetError(f"{path}: no field '{field}' (MCG's candidate layout: superpixels [H, W] labels 1..S, "
                         "labels a K x 1 cell of superpixel ids, scores [K, 1])")
  return data


def read(path, image_hw=None):
  """One MCG candidate file -> (superpixels int32 [H, W] 1..S, candidates: [K] int64 arrays of superpixel ids,
  scores float64 [K]), in descending score order. With image_hw (H, W), the superpixel map must have that size."""
  path = os.path.expanduser(os.fspath(path))
  if not os.path.exists(path):
    raise DatasetError(f"region candidate file {path} does not exist")
  data = _fields(path)
  superpixels = np.asarray(data["superpixels"])
  if superpixels.ndim != 2 or not superpixels.size or not np.issubdtype(superpixels.dtype, np.number):
    raise DatasetError(f"{path}: field 'superpixels' must be a 2-D label map; got shape {superpixels.shape}, "
                       f"dtype {superpixels.dtype}")
  if image_hw is not None and tuple(superpixels.shape) != tuple(int(v) for v in image_hw):
    raise DatasetError(f"{path}: field 'superpixels' is {superpixels.shape[0]} x {superpixels.shape[1]}; the image "
                       f"is {int(image_hw[0])} x {int(image_hw[1])}")
  count = int(superpixels.max())
  if superpixels.min() < 1 or np.any(superpixels != np.round(superpixels)):
    raise DatasetError(f"{path}: field 'superpixels' must hold integer labels 1..S; found "
                       f"{superpixels.min()} .. {superpixels.max()}")
  cells = np.asarray(data["labels"], object).ravel() if np.asarray(data["labels"]).dtype == object else None
  if cells is None:
    raise DatasetError(f"{path}: field 'labels' must be a cell of superpixel id vectors; got "
                       f"{np.asarray(data['labels']).dtype} {np.shape(data['labels'])}")
  candidates = []
  for k, cell in enumerate(cells):
    ids = np.asarray(cell).ravel()
    if ids.size and (not np.issubdtype(ids.dtype, np.number) or ids.min() < 1 or ids.max() > count or
                     np.any(ids != np.round(ids))):
      bad = ids[(ids < 1) | (ids > count) | (ids != np.round(ids))] if np.issubdtype(ids.dtype, np.number) else ids
      bad = [f"{v:g}" if np.issubdtype(ids.dtype, np.number) else repr(v) for v in bad[:1]]
      raise DatasetError(f"{path}: field 'labels', candidate {k + 1}: superpixel id {bad[0]} is outside 1..{count}, "
                         "the labels of field 'superpixels'")
    candidates.append(ids.astype(np.int64))
  scores = np.asarray(data["scores"], np.float64).ravel()
  if len(scores) != len(candidates):
    raise DatasetError(f"{path}: field 'scores' holds {len(scores)} values; field 'labels' {len(candidates)} "
                       "candidates")
  order = np.argsort(-scores, kind="stable")
  return superpixels.astype(np.int32), [candidates[i] for i in order], scores[order]


def write_mat(path, superpixels, candidates, scores):
  """Writes MCG's layout (im2mcg_all.m's fields; no bboxes): superpixels [H, W] 1..S, labels a K x 1 cell of the
  candidates' superpixel ids (a column each), scores [K, 1]."""
  superpixels = np.asarray(superpixels)
  dtype = np.uint16 if superpixels.max() < 2 ** 16 else np.uint32
  labels = np.empty((len(candidates), 1), object)
  for k, ids in enumerate(candidates):
    labels[k, 0] = np.asarray(ids, dtype).reshape(-1, 1)
  from scipy import io  # pylint: disable=g-import-not-at-top
  io.savemat(path, {"superpixels": superpixels.astype(dtype), "labels": labels,
                    "scores": np.asarray(scores, np.float64).reshape(-1, 1)}, do_compression=True)


def membership(candidates, count, num_superpixels):
  """bool [count, S + 1]: row k marks candidate k's superpixels (column 0, the padding label, never); rows past the
  candidates are empty."""
  table = np.zeros((count, num_superpixels + 1), bool)
  for k, ids in enumerate(candidates[:count]):
    table[k, ids] = True
  return table


def masks(superpixels, candidates, count):
  """(masks uint8 [count, H, W], valid bool [count]) of the first `count` candidates on the label map
  superpixels [H, W] (label 0: padding, in no candidate; the ids are read's, at most superpixels.max())."""
  out = membership(candidates, count, int(superpixels.max()))[:, superpixels].astype(np.uint8)
  return out, out.reshape(count, -1).any(1)


class SplitCandidates:
  """The candidate files of one split: `count` per image, image id -> directory/<file stem>.mat."""

  def __init__(self, directory, count, file_names):
    """file_names: {image id: the image's file name} of the split (its annotation file's)."""
    self.directory = os.path.expanduser(os.fspath(directory))
    if not os.path.isdir(self.directory):
      raise DatasetError(f"region candidate directory {self.directory} does not exist")
    self.count = int(count)
    self.stems = {int(i): os.path.splitext(os.path.basename(name))[0] for i, name in file_names.items()}

  def path(self, image_id):
    if image_id not in self.stems:
      raise DatasetError(f"image id {image_id} is not in the split's annotation file")
    return os.path.join(self.directory, self.stems[image_id] + ".mat")

  def for_example(self, example, rows, columns, width):
    """The row's candidates, bit-packed along W as the instance masks: {"region_masks_packed" uint8 [count, H,
    ceil(W / 8)], "region_valid" bool [count]}. rows int [H] / columns int [>= width] are the source row / column
    of each output pixel (augment.preprocess's mask_source_rows / mask_columns; one past the source for padding).
    A padding row (image id -1) gets none; a candidate the crop leaves empty is invalid."""
    image_id = int(example["image_id"])
    if image_id < 0 or not bool(example["valid_image"]):
      return {"region_masks_packed": np.zeros((self.count, len(rows), -(-width // 8)), np.uint8),
              "region_valid": np.zeros(self.count, bool)}
    superpixels, candidates, _ = read(self.path(image_id), example["orig_size"])
    moved = np.pad(superpixels, [(0, 1), (0, 1)])[np.asarray(rows)][:, np.asarray(columns)[:width]]
    packed = pack_masks(moved, membership(candidates, self.count, int(superpixels.max())))
    return {"region_masks_packed": packed, "region_valid": packed.reshape(self.count, -1).any(1)}


def pack_masks(superpixels, table):
  """np.packbits(table[:, superpixels], axis=-1) for superpixels int [H, W] and table bool [K, S + 1] (label 0:
  none), without the [K, H, W] array: bit b of byte j of row y of mask k is table[k, superpixels[y, 8 j + b]], so each
  bit plane gathers whole rows of table^T [S + 1, K] (a copy of K bytes per pixel instead of K single-byte gathers),
  a band of image rows at a time."""
  height, width = superpixels.shape
  bytes_per_row = -(-width // 8)
  labels = np.pad(superpixels, [(0, 0), (0, 8 * bytes_per_row - width)])  # label 0 pads the last byte
  columns = np.ascontiguousarray(table.T, np.uint8)
  out = np.empty((len(table), height, bytes_per_row), np.uint8)
  for top in range(0, height, _BAND):
    band = labels[top:top + _BAND]
    acc = np.zeros((len(band), bytes_per_row, len(table)), np.uint8)
    for bit in range(8):
      acc |= columns[band[:, bit::8]] << (7 - bit)
    out[:, top:top + len(band)] = acc.transpose(2, 0, 1)
  return out
