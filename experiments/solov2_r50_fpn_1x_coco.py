"""SOLOv2, ResNet-50-FPN, 1x schedule, COCO 2017 (Wang et al. 2020; WXinlong/SOLO solov2_r50_fpn_8gpu_1x).

  python -m segjax.main --config=experiments/solov2_r50_fpn_1x_coco.py --workdir=DIR \
      --config.dataset.root=/path/to/coco --config.init_from=R50_DIR

Published: 34.8 mask AP on COCO val2017 (SOLO README, SOLOv2_R50_1x, single-scale training and testing).
Schedule (the reference config): SGD lr 0.01, momentum 0.9, weight decay 1e-4, batch 16, 12 epochs of the
117,266 train2017 images with annotations (7,330 steps each), lr x 0.1 after epochs 9 and 11, linear warm-up
from 0.01 x lr over 500 steps; inputs resized to fit 1333 x 800 keeping the aspect ratio, flipped, padded to a
multiple of 32. Head: 512-channel towers of 4 convs with GN, E = 256 kernels, 128-channel mask branch, grids
(40, 36, 24, 16, 12), Dice weight 3, focal loss (2, 0.25).
ImageNet start: `scripts/convert_weights.py --name resnet50 --output R50_DIR`, then init_from.
Differences: segjax batches have one fixed size, so inputs fit (800, 1344) (portrait images come out smaller than
the reference's 1333 x 800); the backbone's BN is frozen whole (the reference trains the BN affine weights; both
freeze the stem and stage 1); no gradient clipping (the reference clips at norm 35); at most 512 positive
kernels per image enter the mask loss (`dropped_positives` in metrics.jsonl counts the rest).
Needs COCO 2017 in `config.dataset.root` and an accelerator.
"""
import ml_collections

from segjax.config import base_config

STEPS_PER_EPOCH = 7330  # ceil(117,266 / 16)


def get_config():
  config = base_config()
  config.batch_size = 16
  config.total_steps = 12 * STEPS_PER_EPOCH
  config.log_every_steps = 50
  config.eval_every_steps = STEPS_PER_EPOCH
  config.checkpoint_every_steps = 2000
  config.model = ml_collections.ConfigDict({
      "name": "solov2", "depth": 50, "width": 64, "norm": "frozen", "fpn_channels": 256,
      "seg_feat_channels": 512, "stacked_convs": 4, "ins_out_channels": 256, "mask_feat_channels": 128,
      "num_grids": (40, 36, 24, 16, 12),
      "scale_ranges": ((1, 96), (48, 192), (96, 384), (192, 768), (384, 2048)),
      "min_mask_area": (8, 8, 16, 32, 32), "max_positives": 512, "dtype": "float32"})
  config.dataset.name = "coco"
  config.dataset.root = "~/data/coco"
  config.dataset.image_size = (800, 1344)
  config.dataset.max_instances = 100
  config.dataset.augment.scale_range = (1.0, 1.0)
  config.dataset.augment.flip = True
  config.optimizer.name = "sgd"
  config.optimizer.frozen = (r"backbone/(conv1|bn1|layer1_)",)  # the stem and res2 (detectron2's FREEZE_AT 2)
  config.optimizer.learning_rate = 0.01
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 1e-4
  config.optimizer.schedule = "step"
  config.optimizer.decay_steps = (9 * STEPS_PER_EPOCH, 11 * STEPS_PER_EPOCH)
  config.optimizer.decay_factor = 0.1
  config.optimizer.warmup_steps = 500
  config.optimizer.warmup_factor = 0.01
  return config
