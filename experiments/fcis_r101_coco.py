"""FCIS, ResNet-101, COCO (Li et al. 2017, "Fully Convolutional Instance-aware Semantic Segmentation").

  python -m segjax.main --config=experiments/fcis_r101_coco.py --workdir=workdirs/fcis_r101_coco \\
      --config.dataset.root=~/data/coco --config.init_from=R101_DIR

Published: 29.2 mask AP (mAP^r@[0.5:0.95]) on COCO test-dev for FCIS with ResNet-101 (the paper's COCO table; FCIS
+++ with multi-scale testing, horizontal flip and more reaches 33.6). Here train2017 (about trainval35k) trains and
val2017 is scored with pycocotools (mask_AP in metrics.jsonl): test-dev has no public annotations. Recipe of the
released config (msracver/FCIS, experiments/fcis/cfgs/resnet_v1_101_coco_fcis_end2end_ohem.yaml): 8 GPUs x 1
image, images scaled to a short side of 600 (long side at most 1000), flips; lr 0.0005 with 250 warm-up steps from
0.00005, divided by 10 after 5.33 of 8 epochs, SGD momentum 0.9, weight decay 5e-4 (the released default); OHEM of
128 RoIs among 300 proposals; conv1 and res2 frozen, BatchNorm frozen; anchors of scales 4, 8, 16, 32 at stride 16
(sizes 64 to 512) x ratios 0.5, 1, 2; test: NMS 0.3, the second head pass (ITER 2), mask voting (box IoU 0.5,
masks binarised at 0.4). 8 epochs of train2017's 118k images at 8 images per step is 118k steps, the decay at
5.33 epochs is step 78.6k. Every batch is 608 x 1008 (COCO's 640 x 480 images fitted to a short side of about 600).
The RPN and FCIS are trained jointly (end to end), as the released config.
Needs COCO 2017 in `config.dataset.root` and an accelerator.
"""
import ml_collections

from segjax.config import base_config
from segjax.models import fcis


def get_config():
  config = base_config()
  config.batch_size = 8
  config.total_steps = 118_000
  config.log_every_steps = 20
  config.eval_every_steps = 29_500
  config.checkpoint_every_steps = 5_000
  config.model = fcis.model_config()
  config.dataset.name = "coco"
  config.dataset.root = "~/data/coco"
  config.dataset.image_size = (608, 1008)
  config.dataset.max_instances = 100
  config.dataset.augment = ml_collections.ConfigDict({"scale_range": (1.0, 1.0), "flip": True})
  config.optimizer.name = "sgd"
  config.optimizer.frozen = (r"backbone/(conv1|bn1|layer1_)",)  # conv1 and res2, as the released FIXED_PARAMS
  config.optimizer.learning_rate = 5e-4
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 5e-4
  config.optimizer.schedule = "step"
  config.optimizer.decay_steps = (78_600,)
  config.optimizer.decay_factor = 0.1
  config.optimizer.warmup_steps = 250
  config.optimizer.warmup_factor = 0.1
  return config
