"""Pictures for people: input | ground truth | prediction, labels blended over the image."""
import numpy as np
from PIL import Image

from segjax import paths
from segjax.constants import IGNORE_LABEL


def palette(num_colors: int = 256) -> np.ndarray:
  """The PASCAL VOC colour map: [num_colors, 3] uint8, label 255 drawn white by convention of the devkit."""
  colors = np.zeros((num_colors, 3), np.uint8)
  for label in range(num_colors):
    value, r, g, b = label, 0, 0, 0
    for shift in range(7, -1, -1):
      r |= ((value >> 0) & 1) << shift
      g |= ((value >> 1) & 1) << shift
      b |= ((value >> 2) & 1) << shift
      value >>= 3
    colors[label] = (r, g, b)
  return colors


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.6) -> np.ndarray:
  """image float [H,W,3] in [0,1], labels int [H,W] (255 = ignore, drawn white) -> uint8 [H,W,3]."""
  colors = palette()[np.clip(labels, 0, 255)].astype(np.float32) / 255.0
  blended = (1 - alpha) * np.clip(image, 0, 1) + alpha * colors
  return (255 * blended).round().astype(np.uint8)


def semantic_panel(image, ground_truth, prediction) -> np.ndarray:
  """One row: the input, the ground truth overlay and the prediction overlay, 2 px apart."""
  gap = np.full((image.shape[0], 2, 3), 255, np.uint8)
  return np.concatenate([(255 * np.clip(image, 0, 1)).round().astype(np.uint8), gap,
                         overlay(image, ground_truth), gap, overlay(image, prediction)], axis=1)


def instance_labels(masks, keep) -> np.ndarray:
  """masks [K, H, W] (binary or probabilities), keep [K] -> [H, W]: instance k drawn as colour k + 1, later
  instances over earlier ones, 0 where none."""
  labels = np.zeros(masks.shape[1:], np.int32)
  for k in np.flatnonzero(keep):
    labels[masks[k] > 0.5] = k + 1
  return labels


def segments_panel(image, truth, predicted) -> np.ndarray:
  """input | truth | prediction for segment ids [H, W]: each segment its own colour, 0 (none, VOID) the image."""
  colour = lambda ids: np.where(ids > 0, (ids - 1) % 254 + 1, 0)  # palette colours 1..254 (255 is white)
  panel = semantic_panel(image, colour(truth), colour(predicted))
  plain, width = panel[:, :image.shape[1]], image.shape[1] + 2
  for column, labels in ((1, truth), (2, predicted)):
    part = panel[:, column * width:column * width + image.shape[1]]
    part[labels == 0] = plain[labels == 0]
  return panel


def _save_rows(path, rows) -> str:
  gap = np.full((2, rows[0].shape[1], 3), 255, np.uint8)
  picture = np.concatenate([x for row in rows for x in (row, gap)][:-1], axis=0)
  path = paths.resolve(path)  # a local path or a URL (the workdir's pictures/)
  path.parent.mkdir(parents=True, exist_ok=True)
  with path.open("wb") as f:
    Image.fromarray(picture).save(f, format="PNG")
  return str(path)


def save_semantic_pictures(path: str, images, ground_truths, predictions) -> str:
  """Stacks one panel (input | ground truth | prediction) per image into a PNG at `path`; returns the path."""
  return _save_rows(path, [semantic_panel(i, g, p) for i, g, p in zip(images, ground_truths, predictions)])


def save_instance_pictures(path: str, images, gt_masks, gt_valid, masks, scores, valid,
                           score_threshold: float = 0.5) -> str:
  """One panel per image: input | ground-truth instances | detections scoring >= `score_threshold`."""
  return _save_rows(path, [segments_panel(i, instance_labels(gm, gv), instance_labels(m, v & (s >= score_threshold)))
                           for i, gm, gv, m, s, v in zip(images, gt_masks, gt_valid, masks, scores, valid)])


def ground_truth_segments(semantic, masks, valid) -> np.ndarray:
  """A batch row's ground truth as segment ids [H, W]: valid instance k is k + 1, on top; elsewhere each semantic
  class c is one segment M + 1 + c (M instance slots); 0 where the label is ignored."""
  ids = np.where(semantic == IGNORE_LABEL, 0, len(masks) + 1 + semantic.astype(np.int32))
  instances = instance_labels(masks, valid)
  return np.where(instances > 0, instances, ids)


def save_panoptic_pictures(path: str, images, semantic, gt_masks, gt_valid, panoptic) -> str:
  """One panel per image: input | ground-truth segments | predicted segments (`panoptic` ids at input size)."""
  return _save_rows(path, [segments_panel(image, ground_truth_segments(sem, gm, gv), predicted)
                           for image, sem, gm, gv, predicted in zip(images, semantic, gt_masks, gt_valid, panoptic)])


def annotate(picture: np.ndarray, texts) -> np.ndarray:
  """picture uint8 [H, W, 3] with each (x, y, text) of `texts` written at (x, y) in PIL's default font, white on a
  black box so that it reads on any colour; returns a new array."""
  from PIL import ImageDraw  # pylint: disable=g-import-not-at-top
  canvas = Image.fromarray(picture)
  draw = ImageDraw.Draw(canvas)
  for x, y, text in texts:
    left, top, right, bottom = draw.textbbox((x, y), text)
    draw.rectangle((left - 1, top - 1, right + 1, bottom + 1), fill=(0, 0, 0))
    draw.text((x, y), text, fill=(255, 255, 255))
  return np.asarray(canvas)


def _name(names, index, offset=0):
  """names[index - offset] where it exists, else the index as text."""
  position = int(index) - offset
  return names[position] if names is not None and 0 <= position < len(names) else str(int(index))


def semantic_picture(image, labels, names=None) -> np.ndarray:
  """A label map [H, W] over image float [H, W, 3], each class present named at its pixels' median position."""
  texts = []
  for label in np.unique(labels):
    if label == IGNORE_LABEL:
      continue
    ys, xs = np.nonzero(labels == label)
    texts.append((int(np.median(xs)), int(np.median(ys)), _name(names, label)))
  return annotate(overlay(image, labels), texts)


def instance_picture(image, boxes, labels, scores, masks, names=None, score_threshold=0.5) -> np.ndarray:
  """Detections scoring >= score_threshold over image float [H, W, 3]: masks [K, H, W] coloured, "name score" at the
  top left of each box (names by thing label 1..K at index label - 1)."""
  keep = np.asarray(scores) >= score_threshold
  picture = overlay(image, instance_labels(masks, keep))
  picture = np.where((instance_labels(masks, keep) > 0)[..., None], picture,
                     (255 * np.clip(image, 0, 1)).round().astype(np.uint8))
  texts = [(int(b[0]), int(b[1]), f"{_name(names, l, 1)} {s:.2f}")
           for b, l, s in zip(np.asarray(boxes)[keep], np.asarray(labels)[keep], np.asarray(scores)[keep])]
  return annotate(picture, texts)


def panoptic_picture(image, panoptic, segments_info, names_by_category=None) -> np.ndarray:
  """Segment ids [H, W] over image float [H, W, 3], each segment its own colour (VOID: the image) and named at its
  pixels' median position ("name score" for things); names_by_category maps category id -> name."""
  colours = np.where(panoptic > 0, (panoptic - 1) % 254 + 1, 0)
  picture = np.where((panoptic > 0)[..., None], overlay(image, colours),
                     (255 * np.clip(image, 0, 1)).round().astype(np.uint8))
  texts = []
  for segment in segments_info:
    ys, xs = np.nonzero(panoptic == segment["id"])
    if not len(ys):
      continue
    name = (names_by_category or {}).get(segment["category_id"], str(segment["category_id"]))
    text = f"{name} {segment['score']:.2f}" if segment.get("isthing") else name
    texts.append((int(np.median(xs)), int(np.median(ys)), text))
  return annotate(picture, texts)


def draw_boxes(image, boxes, labels, keep) -> np.ndarray:
  """image float [H, W, 3] in [0, 1] -> uint8 with the kept boxes (x1, y1, x2, y2 pixels) outlined 1 px wide in
  their class's palette colour."""
  picture = (255 * np.clip(image, 0, 1)).round().astype(np.uint8)
  height, width = picture.shape[:2]
  colours = palette()
  for box, label in zip(np.asarray(boxes)[keep], np.asarray(labels)[keep]):
    x1, y1 = (int(np.clip(np.floor(v), 0, n - 1)) for v, n in zip(box[:2], (width, height)))
    x2, y2 = (int(np.clip(np.ceil(v) - 1, 0, n - 1)) for v, n in zip(box[2:], (width, height)))
    colour = colours[int(label) % 255]
    picture[y1:y2 + 1, [x1, x2]] = colour
    picture[[y1, y2], x1:x2 + 1] = colour
  return picture


def save_detection_pictures(path: str, images, gt_boxes, gt_labels, gt_valid, boxes, labels, scores, valid,
                            score_threshold: float = 0.3) -> str:
  """One panel per image: input | ground-truth boxes | detections scoring >= `score_threshold`."""
  rows = []
  for i in range(len(images)):
    gap = np.full((images[i].shape[0], 2, 3), 255, np.uint8)
    rows.append(np.concatenate([
        draw_boxes(images[i], [], [], np.zeros(0, bool)), gap, draw_boxes(images[i], gt_boxes[i], gt_labels[i],
                                                                           gt_valid[i]),
        gap, draw_boxes(images[i], boxes[i], labels[i], valid[i] & (scores[i] >= score_threshold))], axis=1))
  return _save_rows(path, rows)
