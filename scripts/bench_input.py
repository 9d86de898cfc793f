"""Benchmarks segjax's input pipeline against a torch DataLoader with torchvision.transforms.v2, in one run.

  PYTHONPATH=. python scripts/bench_input.py [--workers=N] [--images=48] [--batch=8]

Both read the same COCO-like folder, written to a temp dir: JPEG images of 640x480 (COCO's most common size)
with instance polygons, a mean of 7 instances per image and one image with 100 (COCO's maximum in
Mask R-CNN's config). Both decode the image and the masks, resize to fit 800x1333 (shorter side 800),
flip at random, and give the masks and boxes: segjax through segjax.data.pipeline (the Mask R-CNN COCO config:
image_size (800, 1344), max_instances 100, no scale jitter, the batch keys Mask R-CNN reads), torch through a Dataset decoding the JPEG
(torchvision.io) and the polygons (pycocotools), v2.RandomHorizontalFlip + v2.Resize(800, max_size=1333) on
tv_tensors, in a DataLoader with the same number of workers (processes; segjax's are threads).

Prints images/s of each (after a warm-up batch; torch's worker start-up is excluded too) and their ratio, and
the host-to-device bytes per image of the batch keys Mask R-CNN reads: the plain model batch (float32 image,
masks uint8 [100, H, W]) against the compact batch (compact.py) that the pipeline ships.
"""
import argparse
import json
import os
import tempfile
import time

import numpy as np
import torch  # before TensorFlow: torch's extensions segfault when loaded after it
import torchvision
from torchvision.transforms import v2
from torchvision import tv_tensors
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

SOURCE = (480, 640)  # (h, w)
MASK_RCNN_KEYS = ("image", "boxes", "classes", "masks", "is_crowd", "instance_valid")  # mask_rcnn.BATCH_KEYS


def instance_counts(num_images, seed=0):
  """COCO-like counts per image: a long tail with mean 7 over the set, one image with 100."""
  rng = np.random.default_rng(seed)
  counts = 1 + rng.negative_binomial(2, 2 / (2 + 4.1), num_images)
  counts[num_images // 2] = 100
  return counts


def write_folder(root, num_images, seed=0):
  """A COCO-format folder: train2017/*.jpg and annotations/instances_train2017.json (polygons)."""
  rng = np.random.default_rng(seed)
  h, w = SOURCE
  os.makedirs(os.path.join(root, "train2017"))
  os.makedirs(os.path.join(root, "annotations"))
  images, annotations = [], []
  for index, count in enumerate(instance_counts(num_images, seed)):
    image_id = index + 1
    pixels = rng.integers(0, 255, (h // 8, w // 8, 3), np.uint8)
    picture = Image.fromarray(pixels).resize((w, h), Image.BILINEAR)  # smooth texture: JPEG-like content
    draw = ImageDraw.Draw(picture)
    for _ in range(count):
      radius = np.exp(rng.uniform(np.log(6), np.log(120)))
      cx, cy = rng.uniform(0, w), rng.uniform(0, h)
      angles = np.sort(rng.uniform(0, 2 * np.pi, 12))
      r = radius * rng.uniform(0.6, 1.0, 12)
      polygon = np.clip(np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], 1), 0, [w - 1, h - 1])
      draw.polygon([tuple(p) for p in polygon], fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
      x1, y1 = polygon.min(0)
      x2, y2 = polygon.max(0)
      annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(rng.integers(1, 5)),
                          "segmentation": [polygon.ravel().round(2).tolist()], "iscrowd": 0,
                          "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                          "area": float((x2 - x1) * (y2 - y1))})
    name = f"{image_id:012d}.jpg"
    picture.save(os.path.join(root, "train2017", name), quality=90)
    images.append({"id": image_id, "file_name": name, "height": h, "width": w})
  categories = [{"id": i, "name": f"thing{i}", "supercategory": "", "isthing": 1} for i in range(1, 5)]
  with open(os.path.join(root, "annotations", "instances_train2017.json"), "w") as f:
    json.dump({"images": images, "annotations": annotations, "categories": categories}, f)


class TorchCoco(torch.utils.data.Dataset):
  """torchvision's detection recipe: decode, then v2 flip and resize of image, boxes and masks together."""

  def __init__(self, root):
    with open(os.path.join(root, "annotations", "instances_train2017.json")) as f:
      data = json.load(f)
    self.root, self.images = root, data["images"]
    self.annotations = {image["id"]: [] for image in self.images}
    for annotation in data["annotations"]:
      self.annotations[annotation["image_id"]].append(annotation)
    self.transforms = v2.Compose([v2.RandomHorizontalFlip(0.5), v2.Resize(800, max_size=1333)])

  def __len__(self):
    return len(self.images)

  def __getitem__(self, index):
    record = self.images[index]
    h, w = record["height"], record["width"]
    image = torchvision.io.decode_jpeg(torchvision.io.read_file(os.path.join(self.root, "train2017",
                                                                             record["file_name"])))
    annotations = self.annotations[record["id"]]
    masks = np.stack([mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(a["segmentation"], h, w)))
                      for a in annotations])
    boxes = [[x, y, x + bw, y + bh] for x, y, bw, bh in (a["bbox"] for a in annotations)]
    target = {"boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(h, w)),
              "masks": tv_tensors.Mask(torch.from_numpy(masks)),
              "labels": torch.tensor([a["category_id"] for a in annotations])}
    image, target = self.transforms(tv_tensors.Image(image), target)
    return image, target


def bench_torch(root, workers, batch, epochs=2):
  loader = torch.utils.data.DataLoader(TorchCoco(root), batch_size=batch, shuffle=True, num_workers=workers,
                                       collate_fn=list, persistent_workers=workers > 0)
  for _ in loader:  # warm-up epoch: worker start-up, page cache
    pass
  start, count = time.perf_counter(), 0
  for _ in range(epochs):
    for items in loader:
      count += len(items)
  return count / (time.perf_counter() - start)


def bench_segjax(root, workers, batch, num_images, epochs=2):
  os.environ["SEGJAX_DATA_THREADS"] = str(workers)
  import ml_collections  # pylint: disable=g-import-not-at-top
  from segjax.data import compact  # pylint: disable=g-import-not-at-top
  from segjax.data import config as config_lib  # pylint: disable=g-import-not-at-top
  from segjax.data import pipeline  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict({"seed": 0, "batch_size": batch, "dataset": config_lib.default_dataset_config()})
  config.dataset.update(name="coco", root=root, data_dir=root + "_tfds", image_size=(800, 1344),
                        max_instances=100, num_workers=workers, eval_split="train2017")
  config.dataset.augment.update(scale_range=(1.0, 1.0), flip=True)
  pipeline.prepare(config)
  iterator = pipeline.make_train_iterator(config, keys=MASK_RCNN_KEYS)  # as the training loop asks for Mask R-CNN
  next(iterator)  # warm-up: traces the example function
  steps = epochs * num_images // batch
  start, bytes_before, bytes_after = time.perf_counter(), 0, 0
  batches = []
  for _ in range(steps):
    batches.append(next(iterator))
  seconds = time.perf_counter() - start
  for host in batches:
    model = compact.expand(host)
    bytes_before += sum(model[k].nbytes for k in MASK_RCNN_KEYS)
    bytes_after += sum(host[compact.COMPACT_KEYS.get(k, k)].nbytes for k in MASK_RCNN_KEYS)
  images = steps * batch
  return images / seconds, bytes_before / images, bytes_after / images


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workers", type=int, default=max(1, min(8, (os.cpu_count() or 2) // 2)))
  parser.add_argument("--images", type=int, default=48)
  parser.add_argument("--batch", type=int, default=8)
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    root = os.path.join(tmp, "coco_like")
    write_folder(root, args.images)
    counts = instance_counts(args.images)
    print(f"{args.images} images {SOURCE[1]}x{SOURCE[0]} -> 800x1333, instances mean {counts.mean():.1f} "
          f"max {counts.max()}, batch {args.batch}, {args.workers} workers")
    segjax_rate, before, after = bench_segjax(root, args.workers, args.batch, args.images)
    torch_rate = bench_torch(root, args.workers, args.batch)
  print(f"{'pipeline':<40} {'images/s':>9}")
  print(f"{'segjax (threads, tf)':<40} {segjax_rate:9.2f}")
  print(f"{'torch DataLoader + transforms.v2':<40} {torch_rate:9.2f}")
  print(f"throughput ratio segjax / torch: {segjax_rate / torch_rate:.2f}")
  print(f"host-to-device MB per image (Mask R-CNN keys): before {before / 1e6:.1f}, now {after / 1e6:.2f}, "
        f"ratio {before / after:.1f}x")


if __name__ == "__main__":
  main()
