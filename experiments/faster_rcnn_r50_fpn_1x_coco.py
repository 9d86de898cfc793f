"""Faster R-CNN, ResNet-50-FPN, 1x schedule, COCO 2017 (Ren et al. 2015; detectron2 model zoo R50-FPN 1x).

  python -m segjax.main --config=experiments/faster_rcnn_r50_fpn_1x_coco.py --workdir=DIR \
      --config.dataset.root=~/data/coco --config.init_from=R50_DIR

Published (detectron2 MODEL_ZOO, faster_rcnn_R_50_FPN_1x): 37.9 box AP on val2017.
The Mask R-CNN R50-FPN 1x recipe (experiments/mask_rcnn_r50_fpn_1x_coco.py: batch 16, SGD lr 0.02, 90k iterations,
steps at 60k and 80k, warm-up, frozen stem and res2) with model.name "faster_rcnn": the same RPN and box head, no
mask branch. Boxes evaluated with pycocotools on val2017 (box_AP in metrics.jsonl; each box filled stands for its
mask, so mask_AP there means nothing). Differences from detectron2 as in the Mask R-CNN config (one static
800 x 1344 batch shape, RoIAlign aligned=False). Needs COCO 2017 in `config.dataset.root` and an accelerator.
"""
from experiments import mask_rcnn_r50_fpn_1x_coco
from segjax.models import mask_rcnn


def get_config():
  config = mask_rcnn_r50_fpn_1x_coco.get_config()
  config.model = mask_rcnn.model_config(name="faster_rcnn")
  return config
