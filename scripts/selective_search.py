"""Selective search proposals (Uijlings et al. 2013) for a VOC detection split, as R-CNN, SPP-net and Fast R-CNN
read them, written once per split in segjax/data/proposal_files.py's .npz layout.

  python scripts/selective_search.py --root ~/data/VOCdevkit --split 2007_test --out proposals/2007_test.npz
  # then: --config.dataset.proposal_files="{'2007_test': ('proposals/2007_test.npz',)}" (or set it in the config)

OpenCV contrib's implementation (cv2.ximgproc.segmentation, `pip install opencv-contrib-python-headless`), in the
"fast" mode the papers use (Fast R-CNN Sec. 4.1: about 2000 boxes per image), on the image as OpenCV expects it
(BGR). Its rectangles (x, y, w, h) are written as pixel edges (x, y, x + w, y + h), in the order it ranks them;
`--max_boxes` keeps the first ones.
"""
import argparse
import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from segjax.data import proposal_files  # pylint: disable=g-import-not-at-top,wrong-import-position
from segjax.data import voc_detection  # pylint: disable=g-import-not-at-top,wrong-import-position


def selective_search(image, mode="fast"):
  """image [H, W, 3] RGB uint8 -> boxes [K, 4] float32 (x1, y1, x2, y2) pixel edges, in OpenCV's order."""
  import cv2  # pylint: disable=g-import-not-at-top  (a data-preparation dependency only)
  search = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
  search.setBaseImage(np.ascontiguousarray(image[..., ::-1]))
  {"fast": search.switchToSelectiveSearchFast, "quality": search.switchToSelectiveSearchQuality}[mode]()
  rects = search.process().astype(np.float32).reshape(-1, 4)
  return np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], 1)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--root", required=True, help="VOCdevkit")
  parser.add_argument("--split", required=True, help='e.g. "2007_test", "0712_trainval"')
  parser.add_argument("--out", required=True, help="the .npz to write")
  parser.add_argument("--mode", default="fast", choices=("fast", "quality"))
  parser.add_argument("--max_boxes", type=int, default=2000)
  args = parser.parse_args()
  examples = voc_detection.examples(args.root, args.split)
  boxes = []
  for i, example in enumerate(examples):
    with Image.open(example.image_path) as image:
      rgb = np.asarray(image.convert("RGB"))
    boxes.append(selective_search(rgb, args.mode)[:args.max_boxes])
    if (i + 1) % 100 == 0 or i + 1 == len(examples):
      print(f"{i + 1}/{len(examples)} images", flush=True)
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  proposal_files.write_npz(args.out, [e.name for e in examples], boxes)
  print(f"wrote {args.out}: {len(boxes)} images, {np.mean([len(b) for b in boxes]):.0f} boxes per image")


if __name__ == "__main__":
  main()
