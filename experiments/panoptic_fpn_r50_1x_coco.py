"""Panoptic FPN, ResNet-50-FPN, 1x schedule, COCO 2017 panoptic (Kirillov et al. CVPR 2019; detectron2 model zoo
panoptic_fpn_R_50_1x).

  python -m segjax.main --config=experiments/panoptic_fpn_r50_1x_coco.py --workdir=DIR \
      --config.dataset.root=~/data/coco --config.init_from=R50_DIR

Published (detectron2 MODEL_ZOO, COCO Panoptic Segmentation Baselines with Panoptic FPN, R50-FPN 1x): PQ 39.4 on
val2017 (PQ, SQ, RQ of all / thing / stuff classes in metrics.jsonl, as fractions; box and mask AP beside them).
Recipe: Mask R-CNN R50-FPN 1x (batch 16, SGD momentum 0.9, lr 0.02, weight decay 1e-4, 90k iterations with steps at
60k and 80k (x0.1), linear warm-up over 1000 iterations from 0.001 x lr, frozen BN and FREEZE_AT 2 in the
ImageNet-initialised backbone, flips) plus the semantic FPN branch: 128 channels, GroupNorm, 53 stuff classes +
"other", loss weight 0.5; merge with overlap 0.5, instance score 0.5, stuff area 4096.
Differences, stated: those of experiments/mask_rcnn_r50_fpn_1x_coco.py (one static 800 x 1344 batch shape, RoIAlign
aligned=False); the merge runs at the network input size, so masks, the semantic argmax and the 4096-pixel stuff
area are measured there (detectron2 merges at the source image size, about 0.6x smaller per side on COCO), then the
panoptic map is resized to the source image (nearest) for PQ. Needs COCO 2017 in `config.dataset.root` and an
accelerator.
"""
from experiments import mask_rcnn_r50_fpn_1x_coco
from segjax.models import panoptic_fpn


def get_config():
  config = mask_rcnn_r50_fpn_1x_coco.get_config()
  config.model = panoptic_fpn.model_config()
  return config
