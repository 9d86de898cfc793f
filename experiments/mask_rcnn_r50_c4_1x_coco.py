"""Mask R-CNN, ResNet-50-C4, 1x schedule, COCO 2017 (He et al. 2017, Fig. 4 left; detectron2 model zoo R50-C4 1x).

  python -m segjax.main --config=experiments/mask_rcnn_r50_c4_1x_coco.py --workdir=DIR \
      --config.dataset.root=~/data/coco --config.init_from=R50_DIR

Published (detectron2 MODEL_ZOO, mask_rcnn_R_50_C4_1x): 36.8 box AP, 32.2 mask AP on val2017. The paper's
ablations (Table 2) use this backbone: ResNet-50-C4 with RoIAlign gives 30.3 mask AP there (RoIPool 26.9, RoIWarp
27.2: `--config.model.roi_pooler=pool|warp`).
Architecture: the RPN on C4 (stride 16, 15 anchors of sizes 32-512 and ratios 0.5/1/2 per location, 12000/2000
proposals before/after NMS in training, 6000/1000 at test); RoIAlign 14x14 on C4, then the backbone's res5
stage (stride 2) as the RoI head: the box predictor on its average pool, the mask head (2x2 deconv to 256
channels, 1x1 per-class logits) on its 7x7 map, 14x14 masks.
Recipe: that of experiments/mask_rcnn_r50_fpn_1x_coco.py (batch 16, lr 0.02, 90k iterations, steps at 60k/80k,
warm-up 1000, frozen stem and res2), with its stated differences; here also RoIAlign with 2 samples per bin
(detectron2's C4 samples adaptively, which has no static shape) and torchvision's loss betas. Needs COCO 2017 in
`config.dataset.root` and an accelerator.
"""
from experiments import mask_rcnn_r50_fpn_1x_coco
from segjax.models import mask_rcnn


def get_config():
  config = mask_rcnn_r50_fpn_1x_coco.get_config()
  config.model = mask_rcnn.model_config("c4")
  return config
