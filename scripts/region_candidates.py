"""SDS's region candidates for a COCO-format split, written once per image in MCG's candidate layout
(segjax/data/region_candidate_files.py): selective search's hierarchical grouping in its fast mode
(segjax/data/hierarchical_grouping.py: Felzenszwalb-Huttenlocher superpixels, then the greedy merges; every region a
candidate, in the pseudo-random ranking drawn from the image id).

  python scripts/region_candidates.py --root ~/data/voc12_sbd_coco --split val --out ~/data/voc12_sbd_coco/mcg_val
  # then: --config.dataset.region_proposal_dirs="{'val': '~/data/voc12_sbd_coco/mcg_val'}" (or set it in the config)

Writes <out>/<image file stem>.mat for every image of the split's annotation file (those written before are kept, so
an interrupted run resumes); `--max_candidates` keeps the first ones. Needs opencv-contrib-python-headless
(cv2.ximgproc), a data-preparation dependency.
"""
import argparse
import multiprocessing
import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from segjax.data import coco  # pylint: disable=g-import-not-at-top,wrong-import-position
from segjax.data import hierarchical_grouping  # pylint: disable=g-import-not-at-top,wrong-import-position
from segjax.data import region_candidate_files  # pylint: disable=g-import-not-at-top,wrong-import-position


def write_image(image_path, out_path, seed, max_candidates=None, strategies=hierarchical_grouping.FAST):
  """The candidates of one image file, written to out_path; returns their count."""
  with Image.open(image_path) as image:
    rgb = np.asarray(image.convert("RGB"))
  superpixels, candidates, scores = hierarchical_grouping.region_candidates(rgb, strategies, seed)
  if max_candidates:
    candidates, scores = candidates[:max_candidates], scores[:max_candidates]
  region_candidate_files.write_mat(out_path + ".part.mat", superpixels, candidates, scores)
  os.replace(out_path + ".part.mat", out_path)  # a file that exists is complete
  return len(candidates)


def _job(args):
  return write_image(*args)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--root", required=True, help="the COCO-format folder")
  parser.add_argument("--split", required=True, help='e.g. "val", "train2017"')
  parser.add_argument("--out", required=True, help="the directory to write <image stem>.mat into")
  parser.add_argument("--max_candidates", type=int, default=0, help="keep the first ones; 0: all")
  parser.add_argument("--workers", type=int, default=1, help="processes")
  args = parser.parse_args()
  paths = coco.split_paths(args.root, args.split)
  names = coco.image_file_names(args.root, args.split)
  os.makedirs(args.out, exist_ok=True)
  jobs = []
  for image_id, name in sorted(names.items()):
    out_path = os.path.join(args.out, os.path.splitext(os.path.basename(name))[0] + ".mat")
    if not os.path.exists(out_path):
      jobs.append((os.path.join(paths.images, name), out_path, image_id, args.max_candidates))
  print(f"{len(names) - len(jobs)} of {len(names)} images done before; {len(jobs)} to do", flush=True)
  counts = []
  with multiprocessing.Pool(args.workers) as pool:
    for count in pool.imap(_job, jobs):
      counts.append(count)
      if len(counts) % 100 == 0 or len(counts) == len(jobs):
        print(f"{len(counts)}/{len(jobs)} images, {np.mean(counts):.0f} candidates per image", flush=True)


if __name__ == "__main__":
  main()
