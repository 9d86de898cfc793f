"""Mask R-CNN, ResNet-50-FPN, 1x schedule, COCO 2017 (He et al. 2017; detectron2 model zoo R50-FPN 1x).

  python -m segjax.main --config=experiments/mask_rcnn_r50_fpn_1x_coco.py --workdir=DIR \
      --config.dataset.root=~/data/coco --config.init_from=R50_DIR

Published (detectron2 MODEL_ZOO, mask_rcnn_R_50_FPN_1x): 38.6 box AP, 35.2 mask AP on val2017.
Recipe: batch 16, SGD momentum 0.9, lr 0.02, weight decay 1e-4, 90k iterations with steps at 60k and 80k
(x0.1), linear warm-up over 1000 iterations from 0.001 x lr; train short side 640-800, max 1333, flips;
frozen BN in the ImageNet-initialised backbone (`scripts/convert_weights.py --name resnet50 ...` gives
R50_DIR). Boxes and masks evaluated with pycocotools on val2017 (box_AP, mask_AP in metrics.jsonl).
Differences, stated: every batch is one static shape (800 x 1344): images are fitted into it keeping their
aspect ratio, so portrait images get a long side of 1333 and a short side below 800 (detectron2: short side
800); RoIAlign aligned=False and
torchvision's level rule (detectron2: ROIAlignV2). Needs COCO 2017 in `config.dataset.root` and an accelerator.
"""
import ml_collections

from segjax.config import base_config
from segjax.models import mask_rcnn


def get_config(iterations: int = 90_000, steps: tuple[int, ...] = (60_000, 80_000), depth: int = 50):
  config = base_config()
  config.batch_size = 16
  config.total_steps = iterations
  config.log_every_steps = 20
  config.eval_every_steps = iterations // 6
  config.checkpoint_every_steps = 5_000
  config.model = mask_rcnn.model_config()
  config.model.depth = depth
  config.dataset.name = "coco"
  config.dataset.root = "~/data/coco"
  config.dataset.image_size = (800, 1344)
  config.dataset.max_instances = 100
  config.dataset.augment = ml_collections.ConfigDict({"scale_range": (0.8, 1.0), "flip": True})
  config.optimizer.name = "sgd"
  config.optimizer.frozen = (r"backbone/(conv1|bn1|layer1_)",)  # the stem and res2 (detectron2's FREEZE_AT 2)
  config.optimizer.learning_rate = 0.02
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 1e-4
  config.optimizer.schedule = "step"
  config.optimizer.decay_steps = steps
  config.optimizer.decay_factor = 0.1
  config.optimizer.warmup_steps = 1_000
  config.optimizer.warmup_factor = 0.001
  return config
