"""Mask R-CNN, ResNet-101-FPN, 3x schedule, COCO 2017 (detectron2 model zoo R101-FPN 3x).

  python -m segjax.main --config=experiments/mask_rcnn_r101_fpn_3x_coco.py --workdir=DIR \
      --config.dataset.root=~/data/coco --config.init_from=R101_DIR

Published (detectron2 MODEL_ZOO, mask_rcnn_R_101_FPN_3x): 42.9 box AP, 38.6 mask AP on val2017.
The 1x recipe (experiments/mask_rcnn_r50_fpn_1x_coco.py) on ResNet-101 over 270k iterations, steps at 210k
and 250k; R101_DIR from `scripts/convert_weights.py --name resnet101 ...`. Needs COCO 2017 in `config.dataset.root` and
an accelerator.
"""
from experiments import mask_rcnn_r50_fpn_1x_coco


def get_config():
  return mask_rcnn_r50_fpn_1x_coco.get_config(iterations=270_000, steps=(210_000, 250_000), depth=101)
