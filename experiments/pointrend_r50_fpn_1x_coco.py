"""PointRend, Mask R-CNN ResNet-50-FPN, 1x schedule, COCO 2017 (Kirillov et al. 2020; detectron2 PointRend project).

  python -m segjax.main --config=experiments/pointrend_r50_fpn_1x_coco.py --workdir=DIR \
      --config.dataset.root=~/data/coco --config.init_from=R50_DIR

Published (detectron2 projects/PointRend README, pointrend_rcnn_R_50_FPN_1x_coco, 224 x 224 output): 36.2 mask AP
on val2017 (39.7 AP* against LVIS annotations).
Recipe: Mask R-CNN R50-FPN 1x's (experiments/mask_rcnn_r50_fpn_1x_coco.py: batch 16, SGD lr 0.02, 90k iterations,
steps at 60k and 80k) with PointRend's mask branch at detectron2's defaults (model_config of
segjax/models/pointrend.py: coarse 7x7 head on P2, point head of 3 x 256, 14^2 training points with k = 3,
beta = 0.75, 5 subdivision steps of 28^2 points). Differences, stated: the detector is torchvision's Mask R-CNN
(RoIAlign aligned=False, torchvision's box head and sampling); the mask branch trains on the proposals
(detectron2: ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES, the box head's regressed boxes); coarse mask targets are soft
(torchvision's), not thresholded at 0.5. Needs COCO 2017 in `config.dataset.root` and an accelerator.
"""
from experiments import mask_rcnn_r50_fpn_1x_coco
from segjax.models import pointrend


def get_config():
  config = mask_rcnn_r50_fpn_1x_coco.get_config()
  config.model = pointrend.model_config()
  return config
