"""Decoding one image record of a COCO-format folder into the arrays a TFDS example stores.

Semantic labels come from the semantic PNG if the split has one, else from the panoptic PNG and
segments_info, else from the instance masks painted in annotation order (uncovered pixels 255).
Instances come from the instances file, else from the thing segments of the panoptic PNG.
Every file is decoded here, so a broken one fails the build with its name, not training later.
"""
import io

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from segjax.constants import IGNORE_LABEL
from segjax.data import coco


def _open(path, image_id, what, height, width):
  """PIL image of `path`, decoded now; DatasetError if it does not decode or has another size."""
  try:
    with open(path, "rb") as f:
      data = f.read()
    image = Image.open(io.BytesIO(data))
    image.load()
  except (OSError, SyntaxError, ValueError) as e:
    raise coco.DatasetError(f"{path}: image id {image_id}: {what} fails to decode ({e})") from e
  if image.size != (width, height):
    raise coco.DatasetError(f"{path}: image id {image_id}: {what} is {image.size[1]}x{image.size[0]}, "
                            f"annotations say height x width = {height}x{width}")
  return data, image


def encode_png(array) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format="PNG")
  return buffer.getvalue()


def encode_rle(mask) -> bytes:
  """COCO's compressed RLE counts of a uint8 [H, W] mask (pycocotools); the pipeline decodes them in C, several
  times faster than a PNG of the same mask."""
  return mask_utils.encode(np.asfortranarray(mask, np.uint8))["counts"]


def read_image(record: coco.ImageRecord) -> bytes:
  """The image file's bytes when RGB JPEG/PNG, else the image converted to RGB as PNG."""
  data, image = _open(record.image_path, record.id, "image", record.height, record.width)
  if image.mode == "RGB" and image.format in ("JPEG", "PNG"):
    return data
  return encode_png(np.asarray(image.convert("RGB")))


def instance_mask(instance: coco.Instance, height, width, path, image_id) -> np.ndarray:
  """Mask uint8 [H, W] of polygons (union) or RLE (compressed str or uncompressed list counts)."""
  seg = instance.segmentation
  try:
    if isinstance(seg, list):
      rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
    elif isinstance(seg["counts"], list):
      rle = mask_utils.frPyObjects(seg, height, width)
    else:
      rle = {"size": seg["size"], "counts": seg["counts"].encode("ascii")}
    mask = mask_utils.decode(rle)
  except (TypeError, ValueError, UnicodeEncodeError) as e:
    raise coco.DatasetError(f"{path}: image id {image_id}: annotation id {instance.id}: field "
                            f"'segmentation' does not decode ({e})") from e
  return mask


def read_panoptic(record: coco.ImageRecord) -> tuple[bytes, np.ndarray]:
  """PNG bytes and segment ids int32 [H, W], id = R + 256 G + 256^2 B (COCO panoptic)."""
  data, image = _open(record.panoptic_path, record.id, "panoptic PNG", record.height, record.width)
  if image.mode != "RGB":
    raise coco.DatasetError(f"{record.panoptic_path}: image id {record.id}: panoptic PNG must be "
                            f"RGB, is mode {image.mode}")
  rgb = np.asarray(image).astype(np.int32)
  return data, rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def read_semantic(record: coco.ImageRecord, num_classes) -> np.ndarray:
  """Train ids uint8 [H, W] from a single-channel (L or P) PNG; values < num_classes or 255."""
  _, image = _open(record.semantic_path, record.id, "semantic PNG", record.height, record.width)
  if image.mode not in ("L", "P"):
    raise coco.DatasetError(f"{record.semantic_path}: image id {record.id}: semantic PNG must be "
                            f"single-channel (L or P), is mode {image.mode}")
  semantic = np.asarray(image)
  bad = sorted(set(np.unique(semantic).tolist()) - set(range(num_classes)) - {IGNORE_LABEL})
  if bad:
    raise coco.DatasetError(f"{record.semantic_path}: image id {record.id}: semantic values {bad[:5]} "
                            f"are not train ids 0..{num_classes - 1} or {IGNORE_LABEL}")
  return semantic


def read_depth(record: coco.ImageRecord) -> np.ndarray:
  """Depth uint16 [H, W, 1] (millimetres, 0 = none) from a 16-bit single-channel PNG."""
  _, image = _open(record.depth_path, record.id, "depth PNG", record.height, record.width)
  if image.mode not in ("I;16", "I;16B", "I"):
    raise coco.DatasetError(f"{record.depth_path}: image id {record.id}: depth PNG must be 16-bit single-channel, "
                            f"is mode {image.mode}")
  depth = np.asarray(image)
  if depth.min() < 0 or depth.max() > 65535:
    raise coco.DatasetError(f"{record.depth_path}: image id {record.id}: depth values {depth.min()}..{depth.max()} "
                            f"are not uint16 millimetres")
  return depth.astype(np.uint16)[..., None]


def _segment_index(ids, record):
  """Index into record.segments per pixel (-1 for VOID), int [H, W]."""
  values, inverse = np.unique(ids, return_inverse=True)
  position = {s.id: k for k, s in enumerate(record.segments)}
  unknown = [int(v) for v in values if v and v not in position]
  if unknown:
    raise coco.DatasetError(f"{record.panoptic_path}: image id {record.id}: segment ids {unknown[:5]} "
                            f"in the PNG are not in 'segments_info'")
  lut = np.array([position.get(int(v), -1) for v in values])
  return lut[inverse.reshape(ids.shape)]


def _mask_box(mask):
  """Tight box (x1, y1, x2, y2) in pixel edges of a non-empty mask [H, W]."""
  rows, cols = np.nonzero(mask)
  return (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1) if rows.size else (0, 0, 0, 0)


def decode_record(record: coco.ImageRecord, to_semantic, to_thing_label, skips) -> dict:
  """The TFDS example of one image (see tfds_coco.features()); empty instance masks are skipped. With the record's
  depth_path, also its depth (read_depth)."""
  height, width = record.height, record.width
  panoptic_png, segment_index = encode_png(np.zeros((height, width, 3), np.uint8)), None
  if record.panoptic_path:
    panoptic_png, ids = read_panoptic(record)
    segment_index = _segment_index(ids, record)
  instances = []  # (bbox xyxy, category id, is_crowd, mask)
  if record.instances:
    for inst in record.instances:
      mask = instance_mask(inst, height, width, record.image_path, record.id)
      x, y, w, h = inst.bbox
      instances.append(((x, y, x + w, y + h), inst.category_id, inst.iscrowd, mask))
  elif segment_index is not None:
    for k, seg in enumerate(record.segments):
      if seg.category_id in to_thing_label:
        mask = (segment_index == k).astype(np.uint8)
        instances.append((_mask_box(mask), seg.category_id, seg.iscrowd, mask))
  kept = [inst for inst in instances if inst[3].any()]
  for _ in range(len(instances) - len(kept)):
    skips.add("instances with an empty mask", record.image_path, record.id)
  if record.semantic_path:
    semantic = read_semantic(record, len(to_semantic))
  elif segment_index is not None:
    lut = np.array([to_semantic[s.category_id] for s in record.segments] + [IGNORE_LABEL], np.uint8)
    semantic = lut[segment_index]  # index -1 (VOID) picks the trailing IGNORE_LABEL
  else:
    semantic = np.full((height, width), IGNORE_LABEL, np.uint8)
    for _, category_id, _, mask in kept:
      semantic[mask > 0] = to_semantic[category_id]
  depth = {"depth": read_depth(record)} if record.depth_path else {}
  return {
      "image": read_image(record),
      **depth,
      "image_id": record.id,
      "semantic": encode_png(semantic),
      "panoptic": panoptic_png,
      "panoptic_segments": {
          "id": np.array([s.id for s in record.segments], np.int32),
          "category_id": np.array([s.category_id for s in record.segments], np.int32),
          "is_crowd": np.array([s.iscrowd for s in record.segments], bool)},
      "instances": {
          "bbox": np.array([i[0] for i in kept], np.float32).reshape(-1, 4),
          "label": np.array([to_thing_label[i[1]] for i in kept], np.int32),
          "is_crowd": np.array([i[2] for i in kept], bool),
          "mask": np.array([encode_rle(i[3]) for i in kept], object)},
  }
