"""Panoptic FCN, ResNet-50-FPN, 1x schedule, COCO 2017 panoptic (Li et al. CVPR 2021; dvlab-research/PanopticFCN
configs/PanopticFCN-R50-1x.yaml).

  python -m segjax.main --config=experiments/panoptic_fcn_r50_1x_coco.py --workdir=DIR \
      --config.dataset.root=~/data/coco --config.init_from=R50_DIR

Published (the official README's COCO val results, row PanopticFCN R50 1x): PQ 41.1, SQ 79.8, RQ 49.9, AP 32.2 on
val2017 (PQ, SQ, RQ of all / thing / stuff classes in metrics.jsonl, as fractions; box and mask AP beside them).
Recipe (config.py defaults + the YAML): batch 16, SGD momentum 0.9, lr 0.01, weight decay 1e-4, 90k iterations,
poly decay (power 0.9) to 0, linear warm-up over 1000 iterations from 0.001 x lr, gradients clipped at 35 per value,
train short side 640-800 (max 1333), flips; frozen BN and FREEZE_AT 2 in the ImageNet-initialised backbone; heads
256 wide with GN, C_e = 64, k = 7 weighted points, loss weights 1 (position) and 3 (segmentation); inference: top
100 centres, thresholds 0.05 (centres, stuff), mask 0.4, cosine similarity 0.9, merge with overlap 0.5, instance
score 0.2, stuff area 4096.
Differences, stated: those of experiments/mask_rcnn_r50_fpn_1x_coco.py (one static 800 x 1344 batch shape); no
gradient clipping (segjax.train.optim has none); the poly decay runs over the 89k iterations after the warm-up
(detectron2's WarmupPolyLR over all 90k: (90/89)^0.9, 1.0% above it, after the warm-up); those of
segjax/models/panoptic_fcn.py; torchvision's ResNet-50 and its mean/std input normalisation (the official starts
from MSRA's R-50, std 1); the merge runs at the network input size, and the panoptic map is resized to the source
image (nearest) for PQ (the official upsamples the masks to the source size first).
Needs COCO 2017 in `config.dataset.root` and an accelerator.
"""
from experiments import mask_rcnn_r50_fpn_1x_coco
from segjax.models import panoptic_fcn


def get_config():
  config = mask_rcnn_r50_fpn_1x_coco.get_config()
  config.model = panoptic_fcn.model_config()
  config.optimizer.learning_rate = 0.01
  config.optimizer.schedule = "poly"
  config.optimizer.power = 0.9
  config.optimizer.decay_steps = ()
  return config
