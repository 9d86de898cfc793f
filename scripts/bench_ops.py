"""The segjax.ops benchmarks of the ops issue in one run: roi_align and nms against torchvision's CPU kernels.

  PYTHONPATH=. python scripts/bench_ops.py

Prints roi_align forward and forward+backward on FPN-sized input (2x200x304x256, 512 RoIs, 7x7) and nms on
5000 boxes, each with the ratio torchvision/segjax measured in this run, then Matrix NMS against hard mask NMS.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_nms  # pylint: disable=g-import-not-at-top,wrong-import-position
import bench_roi_align  # pylint: disable=g-import-not-at-top,wrong-import-position

if __name__ == "__main__":
  sys.argv = sys.argv[:1]
  bench_roi_align.main()
  bench_nms.main()
