"""Parsing and validation of a COCO-format folder (instances and/or panoptic JSON).

A split needs `instances` or `panoptic_json` (paths from a layout of templates, COCO 2017 by
default, see `config.COCO_LAYOUT`). Malformed input raises `DatasetError` naming the file, the image
id and the field; degenerate instances (polygons with < 3 points, boxes of zero area) and images
with no annotations are skipped, counted, and logged once per kind and file.
"""
import dataclasses
import json
import os

from absl import logging

from segjax.data import config as config_lib


class DatasetError(ValueError):
  """A dataset file or record that cannot be used; the message names file, image id and field."""


@dataclasses.dataclass(frozen=True)
class SplitPaths:
  images: str
  instances: str
  panoptic_json: str
  panoptic_dir: str
  semantic_dir: str


@dataclasses.dataclass(frozen=True)
class Category:
  id: int
  name: str
  supercategory: str
  isthing: bool


@dataclasses.dataclass(frozen=True)
class Instance:
  """One instance annotation; `segmentation` is a list of flat polygons or an RLE dict."""
  id: int
  category_id: int
  iscrowd: bool
  bbox: tuple[float, float, float, float]  # x, y, w, h
  segmentation: list | dict


@dataclasses.dataclass(frozen=True)
class Segment:
  """One panoptic segment of segments_info."""
  id: int
  category_id: int
  iscrowd: bool


@dataclasses.dataclass(frozen=True)
class ImageRecord:
  id: int
  file_name: str
  height: int
  width: int
  image_path: str
  instances: tuple[Instance, ...]  # empty when the split has no instances file
  segments: tuple[Segment, ...]
  panoptic_path: str | None  # None when the split has no panoptic annotations
  semantic_path: str | None  # None when the split has no semantic folder
  depth_path: str | None = None  # read only with load_split(..., depth=True): config.DEPTH_DIR's PNG of the image


@dataclasses.dataclass(frozen=True)
class CocoSplit:
  name: str
  paths: SplitPaths
  categories: tuple[Category, ...]  # sorted by id; from the panoptic file if any, else instances
  images: tuple[ImageRecord, ...]  # sorted by id, images without annotations left out
  has_instances: bool
  has_panoptic: bool


def split_paths(root, split, layout=None) -> SplitPaths:
  """Paths of one split: each layout template with `{split}` filled in, under `root`."""
  layout = dict(config_lib.COCO_LAYOUT, **(layout or {}))
  root = os.path.expanduser(os.fspath(root))
  return SplitPaths(**{f.name: os.path.join(root, layout[f.name].format(split=split))
                       for f in dataclasses.fields(SplitPaths)})


def _fail(path, message, image_id=None):
  where = f"{path}" if image_id is None else f"{path}: image id {image_id}"
  raise DatasetError(f"{where}: {message}")


def _load_json(path, keys):
  try:
    with open(path) as f:
      content = json.load(f)
  except OSError as e:
    _fail(path, f"cannot read annotation file ({e.strerror})")
  except ValueError as e:
    _fail(path, f"malformed JSON ({e})")
  if not isinstance(content, dict):
    _fail(path, f"expected a JSON object, got {type(content).__name__}")
  for key in keys:
    if not isinstance(content.get(key), list):
      _fail(path, f"field '{key}' missing or not a list")
  return content


def _int(path, record, field, image_id=None, positive=False):
  value = record.get(field) if isinstance(record, dict) else None
  if isinstance(value, bool) or not isinstance(value, int) or (positive and value <= 0):
    kind = "a positive integer" if positive else "an integer"
    _fail(path, f"field '{field}' must be {kind}, got {value!r}", image_id)
  return value


def _categories(path, content, default_isthing):
  categories = {}
  for record in content["categories"]:
    cid = _int(path, record, "id")
    if cid in categories:
      _fail(path, f"field 'categories': duplicate category id {cid}")
    name = record.get("name")
    if not isinstance(name, str):
      _fail(path, f"field 'categories': category id {cid} has no 'name'")
    categories[cid] = Category(cid, name, str(record.get("supercategory", "")),
                               bool(record.get("isthing", default_isthing)))
  return categories


def _images(path, content):
  images = {}
  for record in content["images"]:
    image_id = _int(path, record, "id")
    if image_id in images:
      _fail(path, "field 'id': duplicate image id", image_id)
    if not isinstance(record.get("file_name"), str):
      _fail(path, "field 'file_name' missing", image_id)
    images[image_id] = (record["file_name"], _int(path, record, "height", image_id, True),
                        _int(path, record, "width", image_id, True))
  return images


def image_file_names(root, split, layout=None):
  """{image id: file name} of a split, from its instances JSON (else its panoptic JSON)."""
  paths = split_paths(root, split, layout)
  path = paths.instances if os.path.exists(paths.instances) else paths.panoptic_json
  return {i: name for i, (name, _, _) in _images(path, _load_json(path, ("images",))).items()}


class Skips:
  """Counts skipped records per (kind, file) and logs each count once."""

  def __init__(self):
    self.counts = {}

  def add(self, kind, path, image_id):
    self.counts.setdefault((kind, path), []).append(image_id)

  def log(self):
    for (kind, path), ids in self.counts.items():
      shown = ", ".join(str(i) for i in sorted(set(ids))[:10]) + (" ..." if len(set(ids)) > 10 else "")
      logging.warning("skipped %d %s in %s (image ids %s)", len(ids), kind, path, shown)


def _segmentation(path, ann, image_id, size, skips):
  """Validated segmentation: polygons (those with >= 3 points kept) or an RLE dict; None to skip."""
  seg = ann.get("segmentation")
  if isinstance(seg, dict):
    counts = seg.get("counts")
    if not isinstance(counts, (str, list)):
      _fail(path, f"annotation id {ann.get('id')}: field 'segmentation.counts' must be a str or list", image_id)
    if list(seg.get("size", [])) != list(size):
      _fail(path, f"annotation id {ann.get('id')}: field 'segmentation.size' is {seg.get('size')}, "
            f"image is {list(size)} (height, width)", image_id)
    return seg
  if not isinstance(seg, list) or not all(isinstance(p, list) for p in seg):
    _fail(path, f"annotation id {ann.get('id')}: field 'segmentation' must be polygons or RLE", image_id)
  polygons = []
  for polygon in seg:
    if len(polygon) % 2 or not all(isinstance(v, (int, float)) for v in polygon):
      _fail(path, f"annotation id {ann.get('id')}: field 'segmentation' has a polygon that is not "
            f"an even list of numbers (length {len(polygon)})", image_id)
    if len(polygon) < 6:
      skips.add("polygons with < 3 points", path, image_id)
    else:
      polygons.append([float(v) for v in polygon])
  if not polygons:
    skips.add("instances with no valid polygon", path, image_id)
    return None
  return polygons


def _instances(path, content, images, skips):
  """Instances per image id, degenerate ones skipped."""
  categories = _categories(path, content, default_isthing=True)
  per_image = {i: [] for i in images}
  for ann in content["annotations"]:
    image_id = _int(path, ann, "image_id")
    if image_id not in images:
      _fail(path, f"annotation id {ann.get('id')}: field 'image_id' is not in 'images'", image_id)
    category_id = _int(path, ann, "category_id", image_id)
    if category_id not in categories:
      _fail(path, f"annotation id {ann.get('id')}: field 'category_id' {category_id} is not in "
            f"'categories'", image_id)
    bbox = ann.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4
            and all(isinstance(v, (int, float)) for v in bbox)):
      _fail(path, f"annotation id {ann.get('id')}: field 'bbox' must be 4 numbers [x, y, w, h], "
            f"got {bbox!r}", image_id)
    if bbox[2] <= 0 or bbox[3] <= 0:
      skips.add("instances with a box of zero area", path, image_id)
      continue
    _, height, width = images[image_id]
    segmentation = _segmentation(path, ann, image_id, (height, width), skips)
    if segmentation is None:
      continue
    per_image[image_id].append(Instance(int(ann.get("id", 0)), category_id,
                                        bool(ann.get("iscrowd", 0)), tuple(map(float, bbox)),
                                        segmentation))
  return categories, per_image


def _panoptic(path, content, images, categories):
  """(file_name, segments) per image id."""
  per_image = {}
  for ann in content["annotations"]:
    image_id = _int(path, ann, "image_id")
    if image_id not in images:
      _fail(path, "field 'image_id' is not in 'images'", image_id)
    if not isinstance(ann.get("file_name"), str) or not isinstance(ann.get("segments_info"), list):
      _fail(path, "field 'file_name' or 'segments_info' missing", image_id)
    segments = []
    for seg in ann["segments_info"]:
      segment_id = _int(path, seg, "id", image_id, positive=True)
      category_id = _int(path, seg, "category_id", image_id)
      if category_id not in categories:
        _fail(path, f"segment id {segment_id}: field 'category_id' {category_id} is not in "
              f"'categories'", image_id)
      segments.append(Segment(segment_id, category_id, bool(seg.get("iscrowd", 0))))
    per_image[image_id] = (ann["file_name"], tuple(segments))
  missing = sorted(set(images) - set(per_image))
  if missing:
    _fail(path, f"field 'annotations': no panoptic annotation for image ids {missing[:10]}")
  return per_image


def load_split(root, split, layout=None, depth=False) -> CocoSplit:
  """Parses and validates one split of a COCO-format folder; with `depth`, every record names its depth PNG
  (config.DEPTH_DIR, the image's stem + .png; read and checked by coco_example.read_depth)."""
  paths = split_paths(root, split, layout)
  has_instances = os.path.exists(paths.instances)
  has_panoptic = os.path.exists(paths.panoptic_json)
  if not (has_instances or has_panoptic):
    raise DatasetError(f"split '{split}': no annotation file: expected {paths.instances} "
                       f"or {paths.panoptic_json}")
  skips = Skips()
  instances, panoptic = {}, {}
  if has_instances:
    content = _load_json(paths.instances, ("images", "annotations", "categories"))
    images = _images(paths.instances, content)
    instance_categories, instances = _instances(paths.instances, content, images, skips)
    categories = instance_categories
  if has_panoptic:
    content = _load_json(paths.panoptic_json, ("images", "annotations", "categories"))
    if not has_instances:
      images = _images(paths.panoptic_json, content)
    categories = _categories(paths.panoptic_json, content, default_isthing=False)
    panoptic = _panoptic(paths.panoptic_json, content, images, categories)
    for cid, category in (instance_categories.items() if has_instances else ()):
      if cid not in categories or not categories[cid].isthing:
        _fail(paths.panoptic_json, f"field 'categories': instance category id {cid} "
              f"({category.name}) is not a thing category here")
  has_semantic = os.path.isdir(paths.semantic_dir)
  depth_dir = os.path.join(os.path.expanduser(os.fspath(root)), config_lib.DEPTH_DIR.format(split=split))
  records = []
  for image_id in sorted(images):
    file_name, height, width = images[image_id]
    pan_name, segments = panoptic.get(image_id, (None, ()))
    image_instances = tuple(instances.get(image_id, ()))
    if not (image_instances or segments or has_semantic):
      skips.add("images with no annotations", paths.instances if has_instances else
                paths.panoptic_json, image_id)
      continue
    stem = os.path.splitext(file_name)[0]
    records.append(ImageRecord(
        image_id, file_name, height, width, os.path.join(paths.images, file_name),
        image_instances, segments,
        os.path.join(paths.panoptic_dir, pan_name) if pan_name else None,
        os.path.join(paths.semantic_dir, stem + ".png") if has_semantic else None,
        os.path.join(depth_dir, stem + ".png") if depth else None))
  skips.log()
  return CocoSplit(split, paths, tuple(categories[c] for c in sorted(categories)), tuple(records),
                   has_instances, has_panoptic)
