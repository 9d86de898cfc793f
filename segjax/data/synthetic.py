"""The embedded synthetic dataset: textured stuff and coloured shapes in a COCO-2017-layout folder.

Each image has a sky band over grass over road (wavy horizons; distinct colour + mild noise texture)
and 2..7 shape instances (each class its own colour family, random size, position and rotation):
later ones occlude earlier ones, some cross the border, some are tiny (a few pixels), some carry a
1-2 px VOID band around them (like VOC boundaries), and about a third of the images hold a crowd
(a cluster of small shapes of one class, `iscrowd=1`). Files (COCO 2017 layout, PNG everywhere so
pixels are exact):

  {train,val}2017/ID.png                       RGB images
  annotations/instances_{split}.json           COCO instances: polygons when the visible region is
                                               exactly the polygon, compressed RLE (str counts) for
                                               occluded instances and crowds
  annotations/panoptic_{split}.json + _{split}/ID.png   COCO panoptic, id = R + 256 G + 256^2 B, 0 = VOID
  semantic_{split}/ID.png                      uint8 train ids 0..6, 255 = VOID; crowds keep their class
  depth_{split}/ID.png                         with `depth=True` only: uint16 depth in millimetres (0: none)

Depth (`write_dataset(..., depth=True)`, for RGB-D models such as UCN's): a pinhole camera (`intrinsics`: focal length
the image width, principal point the image centre) over a ground plane: the grass and road at Z = f h / (v - v_h)
(camera height h = 1.5 m, horizon row v_h a quarter of the height above the image, so rows nearer the top are
farther), the sky at 10 m. Every shape (and crowd, and its VOID band) is a plane slightly tilted towards the camera,
placed at 55-85% of the nearest depth it covers, so it is nearer than everything it occludes (later shapes occlude
earlier ones and are therefore nearer where they overlap); mild Gaussian noise (0.2% of the depth) as a sensor's.
The VOID pixels (the bands of mixed colour, the remnants of occluded shapes) have no depth (0), as a depth sensor
returns none on the mixed pixels of an occlusion edge: where the labels leave a pixel out, the depth does not place
it on a shape either.
Depth draws from its own random stream: the other files are the same with or without it.

Unseen-object split (`write_dataset(..., train_shapes=..., val_shapes=...)`): each split draws its shapes (and its
crowds) only from the named classes, e.g. train on circles and squares and validate on triangles and stars, the
protocol of unseen object instance segmentation (train on some objects, segment others class-agnostically). The
categories stay all four; by default every split draws every class.

Categories (COCO-like ids) and their contiguous ids: train ids follow category-id order (as
detectron2 does for COCO panoptic); thing labels are 1..K with 0 = background (torchvision).

  id   name      isthing  train id  thing label
  1    circle    1        0         1
  2    square    1        1         2
  3    triangle  1        2         3
  4    star      1        3         4
  101  sky       0        4         -
  102  grass     0        5         -
  103  road      0        6         -
"""
import json
import os
import shutil

from absl import logging
import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from segjax.constants import IGNORE_LABEL
from segjax.data import config as config_lib

# (category id, name, colour family centre RGB)
THINGS = ((1, "circle", (220, 45, 45)), (2, "square", (235, 205, 35)),
          (3, "triangle", (185, 50, 210)), (4, "star", (245, 245, 245)))
STUFF = ((101, "sky", (95, 160, 235)), (102, "grass", (70, 150, 55)), (103, "road", (115, 115, 115)))
CATEGORIES = tuple(
    [{"id": i, "name": n, "supercategory": "shape", "isthing": 1} for i, n, _ in THINGS]
    + [{"id": i, "name": n, "supercategory": "outdoor", "isthing": 0} for i, n, _ in STUFF])
SPLITS = ("train2017", "val2017")
MARKER = ".segjax_synthetic.json"  # written last: its presence means the folder is complete
_VERSION = 1
DEPTH_VERSION = 2  # of the depth maps alone (2: none at VOID pixels); a set without depth keeps its files
_TRAIN_ID = np.full(1 + max(c["id"] for c in CATEGORIES), IGNORE_LABEL, np.uint8)
_TRAIN_ID[[c["id"] for c in CATEGORIES]] = np.arange(len(CATEGORIES))
_COLOUR = dict((i, c) for i, _, c in THINGS + STUFF)
_THING_IDS = frozenset(i for i, _, _ in THINGS)
_SHAPE_IDS = dict((n, i) for i, n, _ in THINGS)
_CROWD_SLOT = 999  # segment id = category_id * 1000 + slot; stuff slot 0, things 1.., crowd 999


def _wavy(rng, mean, height, width):
  """Horizon y(x) = mean + a sin(2 pi x / period + phase), [W]."""
  a = rng.uniform(1.0, 0.06 * height)
  period = rng.uniform(0.5, 1.5) * width
  return mean + a * np.sin(2 * np.pi * np.arange(width) / period + rng.uniform(0, 2 * np.pi))


def _polygon(rng, category_id, cx, cy, r, height, width):
  """Flat COCO polygon [x0, y0, x1, y1, ...] of one shape, clipped to the image, 2 decimals."""
  theta = rng.uniform(0, 2 * np.pi)
  if category_id == 1:  # circle
    k, radii = 24, np.full(24, r)
  elif category_id == 2:  # square: circumradius of half-side r
    k, radii = 4, np.full(4, r * np.sqrt(2))
  elif category_id == 3:  # triangle
    k, radii = 3, np.full(3, 1.4 * r)
  else:  # five-pointed star
    k, radii = 10, np.tile([1.3 * r, 0.55 * r], 5)
  angles = theta + 2 * np.pi * np.arange(k) / k
  xs = np.clip(cx + radii * np.cos(angles), 0, width)
  ys = np.clip(cy + radii * np.sin(angles), 0, height)
  return [round(float(v), 2) for v in np.stack([xs, ys], 1).ravel()]


def _rasterize(polygons, height, width):
  """pycocotools rasterization of a list of flat polygons -> bool [H, W]."""
  rles = mask_utils.frPyObjects(polygons, height, width)
  return mask_utils.decode(mask_utils.merge(rles)).astype(bool)


def _dilate(mask, n):
  """n steps of 4-neighbour binary dilation, bool [H, W]."""
  out = mask
  for _ in range(n):
    grown = out.copy()
    grown[1:] |= out[:-1]
    grown[:-1] |= out[1:]
    grown[:, 1:] |= out[:, :-1]
    grown[:, :-1] |= out[:, 1:]
    out = grown
  return out


class _Canvas:
  """Segment-id map, per-pixel colour and noise amplitude, painted in z order."""

  def __init__(self, height, width):
    self.ids = np.zeros((height, width), np.int32)
    self.colour = np.zeros((height, width, 3), np.float32)
    self.sigma = np.zeros((height, width), np.float32)
    self.polygons = {}  # segment id -> polygons it was rasterized from
    self.crowds = set()
    self.sky = np.zeros((height, width), bool)
    self.layers = []  # pixels of each shape / crowd (with its VOID band), in paint (z) order, for the depth

  def paint(self, segment_id, mask, colour, sigma):
    self.ids[mask] = segment_id
    self.colour[mask] = colour
    self.sigma[mask] = sigma


def _paint_stuff(rng, canvas, height, width):
  y = np.arange(height, dtype=np.float32)[:, None]
  sky_end = _wavy(rng, rng.uniform(0.15, 0.5) * height, height, width)
  road_start = _wavy(rng, rng.uniform(0.55, 1.15) * height, height, width)
  region = np.where(y < sky_end, 0, np.where(y < road_start, 1, 2))
  canvas.sky = region == 0
  ys, xs = np.mgrid[:height, :width].astype(np.float32)
  texture = (lambda y, x: 20 * y / height,  # sky: lighter towards the horizon
             lambda y, x: 8 * np.sin(0.9 * x + 0.4 * y),  # grass: stripes
             lambda y, x: 6 * np.sin(0.25 * x) * np.sin(0.25 * y))  # road: blotches
  for k, (category_id, _, base) in enumerate(STUFF):
    mask = region == k
    if mask.any():
      colour = np.asarray(base, np.float32) + rng.uniform(-15, 15, 3)
      canvas.paint(category_id * 1000, mask, colour, (4, 10, 7)[k])
      canvas.colour[mask] += texture[k](ys[mask], xs[mask])[:, None]


def _thing_colour(rng, category_id):
  return np.clip(np.asarray(_COLOUR[category_id], np.float32) + rng.uniform(-22, 22, 3), 0, 255)


def _paint_crowd(rng, canvas, height, width, things):
  category_id = int(rng.choice(things))
  cx, cy = rng.uniform(0.15, 0.85) * width, rng.uniform(0.3, 0.85) * height
  polygons = [_polygon(rng, category_id, cx + rng.normal(0, 0.08 * width),
                       cy + rng.normal(0, 0.06 * height), rng.uniform(2.5, 4.5), height, width)
              for _ in range(rng.integers(5, 10))]
  mask = _rasterize(polygons, height, width)
  segment_id = category_id * 1000 + _CROWD_SLOT
  canvas.paint(segment_id, mask, _thing_colour(rng, category_id), 6)
  canvas.crowds.add(segment_id)
  canvas.layers.append(mask)


def _paint_things(rng, canvas, height, width, things):
  slots = {}
  for _ in range(rng.integers(2, 8)):
    category_id = int(rng.choice(things))
    tiny = rng.random() < 0.15
    r = rng.uniform(1.5, 2.5) if tiny else rng.uniform(0.05, 0.2) * min(height, width)
    cx, cy = rng.uniform(-0.1, 1.1) * width, rng.uniform(-0.1, 1.1) * height
    polygon = _polygon(rng, category_id, cx, cy, r, height, width)
    mask = _rasterize([polygon], height, width)
    if mask.sum() < 3:
      continue
    slots[category_id] = slots.get(category_id, 0) + 1
    segment_id = category_id * 1000 + slots[category_id]
    colour = _thing_colour(rng, category_id)
    canvas.paint(segment_id, mask, colour, 6)
    canvas.polygons[segment_id] = [polygon]
    canvas.layers.append(mask)
    if not tiny and rng.random() < 0.35:  # VOID band: boundary pixels of mixed colour
      band = _dilate(mask, int(rng.integers(1, 3))) & ~mask
      canvas.paint(0, band, colour, 6)
      canvas.colour[band] = 0.5 * (canvas.colour[band] + colour)
      canvas.layers[-1] = mask | band


def shape_ids(names):
  """The category ids [sorted] of shape class names ("circle", "square", "triangle", "star"); all for None / ()."""
  if not names:
    return sorted(_THING_IDS)
  unknown = sorted(set(names) - set(_SHAPE_IDS))
  if unknown:
    raise ValueError(f"unknown shape class(es) {unknown}; the synthetic set has {sorted(_SHAPE_IDS)}")
  return sorted(_SHAPE_IDS[n] for n in set(names))


def intrinsics(height, width):
  """The synthetic camera's (fx, fy, cx, cy) in pixels: focal length the image width (a 53 degree horizontal field of
  view), principal point the image centre; pixel (u, v) sees the ray ((u - cx) / fx, (v - cy) / fy, 1), as the UCN
  authors' compute_xyz (pixel indices, offset W / 2, H / 2)."""
  return (float(width), float(width), width / 2, height / 2)


CAMERA_HEIGHT = 1.5  # metres above the ground plane
SKY_DEPTH = 10.0  # metres
DEPTH_NOISE = 0.002  # relative standard deviation


def render_depth(rng, canvas, height, width):
  """Depth in millimetres uint16 [H, W] of a painted canvas (module docstring): ground plane and sky, then every
  layer in paint order a tilted plane at 55-85% of the smallest depth under it; 0 (none) at VOID pixels."""
  fy = intrinsics(height, width)[1]
  v = np.arange(height, dtype=np.float64)[:, None] + np.zeros((1, width))
  horizon = -0.25 * height
  depth = np.where(canvas.sky, SKY_DEPTH, np.minimum(fy * CAMERA_HEIGHT / (v - horizon), SKY_DEPTH))
  ys, xs = np.mgrid[:height, :width].astype(np.float64)
  for mask in canvas.layers:
    z0 = rng.uniform(0.55, 0.85) * depth[mask].min()
    tilt = rng.uniform(-0.05, 0.05, 2)  # the plane varies by at most +-10% of z0 over the image
    my, mx = ys[mask].mean(), xs[mask].mean()
    depth[mask] = z0 * (1 + tilt[0] * (xs[mask] - mx) / width + tilt[1] * (ys[mask] - my) / height)
  depth *= 1 + DEPTH_NOISE * rng.standard_normal((height, width))
  millimetres = np.clip(np.rint(1000 * depth), 1, 65535).astype(np.uint16)
  return np.where(canvas.ids == 0, np.uint16(0), millimetres)  # VOID: no depth


def _render(rng, height, width, things=None):
  """(image uint8 [H, W, 3], painted canvas) of one scene."""
  things = sorted(_THING_IDS) if things is None else sorted(things)
  canvas = _Canvas(height, width)
  _paint_stuff(rng, canvas, height, width)
  if rng.random() < 0.35:
    _paint_crowd(rng, canvas, height, width, things)
  _paint_things(rng, canvas, height, width, things)
  noise = (rng.standard_normal((height, width, 1), np.float32)
           + 0.3 * rng.standard_normal((height, width, 3), np.float32))
  image = np.clip(np.rint(canvas.colour + canvas.sigma[..., None] * noise), 0, 255).astype(np.uint8)
  ids, areas = np.unique(canvas.ids, return_counts=True)
  for segment_id, area in zip(ids, areas):  # remnants of < 3 px of an occluded thing become VOID
    if segment_id // 1000 in _THING_IDS and area < 3:
      canvas.ids[canvas.ids == segment_id] = 0
  return image, canvas


def render_scene(rng, height, width, things=None):
  """One scene: image uint8 [H, W, 3], segment ids int32 [H, W] (0 VOID), polygons, crowd ids. Shapes and crowds
  are drawn from the category ids `things` (default: all)."""
  image, canvas = _render(rng, height, width, things)
  return image, canvas.ids, canvas.polygons, canvas.crowds


def _rle_and_bbox(mask):
  """Compressed RLE with str counts (as in COCO json) and the pycocotools box xywh."""
  rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
  bbox = [int(v) for v in mask_utils.toBbox(rle)]
  return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}, bbox


def _annotate(image_id, ids, polygons, crowds, next_annotation_id):
  """COCO instance annotations and panoptic segments_info of one scene."""
  height, width = ids.shape
  instances, segments = [], []
  for segment_id in sorted(set(np.unique(ids).tolist()) - {0}, key=lambda s: (s // 1000 not in _THING_IDS, s)):
    mask = ids == segment_id
    rle, bbox = _rle_and_bbox(mask)
    area = int(mask.sum())
    category_id, iscrowd = segment_id // 1000, int(segment_id in crowds)
    segments.append({"id": segment_id, "category_id": category_id, "iscrowd": iscrowd,
                     "bbox": bbox, "area": area})
    if category_id not in _THING_IDS:
      continue
    polygon = polygons.get(segment_id)
    exact = polygon is not None and np.array_equal(_rasterize(polygon, height, width), mask)
    instances.append({"id": next_annotation_id + len(instances), "image_id": image_id,
                      "category_id": category_id, "iscrowd": iscrowd,
                      "segmentation": polygon if exact else rle,
                      "area": float(area), "bbox": [float(v) for v in bbox]})
  return instances, segments


def _save_png(array, path):
  Image.fromarray(array).save(path, format="PNG", compress_level=1)


def _write_split(root, split, count, first_id, image_size, seed, things, depth=False):
  height, width = image_size
  paths = {k: os.path.join(root, v.format(split=split)) for k, v in config_lib.COCO_LAYOUT.items()}
  paths["depth_dir"] = os.path.join(root, config_lib.DEPTH_DIR.format(split=split))
  for key in ("images", "panoptic_dir", "semantic_dir") + (("depth_dir",) if depth else ()):
    os.makedirs(paths[key], exist_ok=True)
  images, instances, panoptic = [], [], []
  for index in range(count):
    image_id = first_id + index
    rng = np.random.default_rng([seed, SPLITS.index(split), index])
    image, canvas = _render(rng, height, width, things)
    ids, polygons, crowds = canvas.ids, canvas.polygons, canvas.crowds
    name = f"{image_id:012d}.png"
    if depth:  # its own stream: the other files do not depend on it
      depth_rng = np.random.default_rng([seed, SPLITS.index(split), index, 1])
      _save_png(render_depth(depth_rng, canvas, height, width), os.path.join(paths["depth_dir"], name))
    anns, segments = _annotate(image_id, ids, polygons, crowds, 1 + 100 * image_id)
    _save_png(image, os.path.join(paths["images"], name))
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
    _save_png(rgb, os.path.join(paths["panoptic_dir"], name))
    _save_png(_TRAIN_ID[ids // 1000], os.path.join(paths["semantic_dir"], name))
    images.append({"id": image_id, "file_name": name, "height": height, "width": width})
    instances.extend(anns)
    panoptic.append({"image_id": image_id, "file_name": name, "segments_info": segments})
  info = {"description": "segjax synthetic shapes", "version": str(_VERSION)}
  things = [c for c in CATEGORIES if c["isthing"]]
  for path, content in (
      (paths["instances"], {"info": info, "licenses": [], "images": images,
                            "annotations": instances, "categories": things}),
      (paths["panoptic_json"], {"info": info, "licenses": [], "images": images,
                                "annotations": panoptic, "categories": list(CATEGORIES)})):
    with open(path, "w") as f:
      f.write(json.dumps(content, separators=(",", ":")))  # dumps: the C encoder


def _params(num_train, num_val, image_size, seed, train_shapes=(), val_shapes=(), depth=False):
  params = {"version": _VERSION, "num_train": int(num_train), "num_val": int(num_val),
            "image_size": [int(s) for s in image_size], "seed": int(seed)}
  if depth:  # absent by default, as the shape lists
    params["depth"] = DEPTH_VERSION
  for key, names in (("train_shapes", train_shapes), ("val_shapes", val_shapes)):
    if names:  # absent by default, so that sets written before the option keep matching
      params[key] = sorted(set(names))
  return params


def write_dataset(root, *, num_train=1000, num_val=200, image_size=(128, 128), seed=0, train_shapes=(),
                  val_shapes=(), depth=False):
  """Writes the synthetic set into `root` (see the module docstring); returns `root`.

  train_shapes / val_shapes: the shape class names each split draws from (empty: all four). depth: also write
  depth_{split}/ID.png (uint16 millimetres). Same arguments -> byte-identical files; the default shapes and no depth
  give the files of a set written without these options. Image ids: train 1..num_train, val 1000001.. .
  """
  things = {SPLITS[0]: shape_ids(train_shapes), SPLITS[1]: shape_ids(val_shapes)}
  height, width = image_size
  if min(height, width) < 16 or num_train < 0 or num_val < 0 or seed < 0:
    raise ValueError(f"write_dataset: need image_size >= 16 and counts, seed >= 0; got "
                     f"image_size={image_size}, num_train={num_train}, num_val={num_val}, seed={seed}")
  root = os.path.expanduser(os.fspath(root))
  os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
  _write_split(root, SPLITS[0], num_train, 1, image_size, seed, things[SPLITS[0]], depth)
  _write_split(root, SPLITS[1], num_val, 1_000_001, image_size, seed, things[SPLITS[1]], depth)
  with open(os.path.join(root, MARKER), "w") as f:
    json.dump(_params(num_train, num_val, image_size, seed, train_shapes, val_shapes, depth), f, sort_keys=True)
  return root


def is_complete(root, *, num_train, num_val, image_size, seed=0, train_shapes=(), val_shapes=(), depth=False):
  """Whether `root` holds a finished synthetic set written with these arguments."""
  try:
    with open(os.path.join(os.path.expanduser(root), MARKER)) as f:
      return json.load(f) == _params(num_train, num_val, image_size, seed, train_shapes, val_shapes, depth)
  except (OSError, ValueError):
    return False


def ensure_synthetic(root, *, num_train=1000, num_val=200, image_size=(128, 128), seed=0, train_shapes=(),
                     val_shapes=(), depth=False):
  """Writes the set into `root` unless a complete one with these arguments is there; returns root.

  Written into a sibling temporary folder and renamed, so a crash never leaves a half-written
  `root`; an existing `root` is replaced only if it is a synthetic set (has the marker) with
  other arguments (logged as a warning: runs still reading it see the new set), or an unfinished one (only the
  folders this writer makes, no marker).
  Processes sharing `root` should let one process call this first.
  """
  root = os.path.expanduser(os.fspath(root))
  args = dict(num_train=num_train, num_val=num_val, image_size=tuple(image_size), seed=seed,
              train_shapes=tuple(train_shapes), val_shapes=tuple(val_shapes), depth=bool(depth))
  if is_complete(root, **args):
    return root
  if os.path.isdir(root):
    ours = {"annotations", MARKER} | {f"{p}{s}" for s in SPLITS for p in ("", "semantic_", "depth_")}
    if not set(os.listdir(root)) <= ours:
      raise ValueError(f"ensure_synthetic: {root} exists and is not a synthetic set "
                       f"(holds {sorted(set(os.listdir(root)) - ours)[:5]}); choose another root")
    if os.path.exists(os.path.join(root, MARKER)):  # other runs reading this folder see the new set
      with open(os.path.join(root, MARKER)) as f:
        logging.warning("ensure_synthetic: replacing the set in %s, written with %s, by one with %s; give runs with "
                        "other arguments their own dataset.root", root, f.read(), _params(**args))
  partial = f"{root}.partial-{os.getpid()}"
  shutil.rmtree(partial, ignore_errors=True)
  try:
    write_dataset(partial, **args)
    if not is_complete(root, **args):  # unless another process finished meanwhile
      shutil.rmtree(root, ignore_errors=True)
      os.rename(partial, root)
  finally:
    shutil.rmtree(partial, ignore_errors=True)
  return root
