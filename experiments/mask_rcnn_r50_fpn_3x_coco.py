"""Mask R-CNN, ResNet-50-FPN, 3x schedule, COCO 2017 (detectron2 model zoo R50-FPN 3x).

  python -m segjax.main --config=experiments/mask_rcnn_r50_fpn_3x_coco.py --workdir=DIR \
      --config.dataset.root=~/data/coco --config.init_from=R50_DIR

Published (detectron2 MODEL_ZOO, mask_rcnn_R_50_FPN_3x): 41.0 box AP, 37.2 mask AP on val2017.
The 1x recipe (experiments/mask_rcnn_r50_fpn_1x_coco.py, with its stated differences) over 270k iterations,
steps at 210k and 250k. Needs COCO 2017 in `config.dataset.root` and an accelerator.
"""
from experiments import mask_rcnn_r50_fpn_1x_coco


def get_config():
  return mask_rcnn_r50_fpn_1x_coco.get_config(iterations=270_000, steps=(210_000, 250_000))
