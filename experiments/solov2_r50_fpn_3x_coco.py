"""SOLOv2, ResNet-50-FPN, 3x schedule with multi-scale training, COCO 2017 (WXinlong/SOLO solov2_r50_fpn_8gpu_3x).

  python -m segjax.main --config=experiments/solov2_r50_fpn_3x_coco.py --workdir=DIR \
      --config.dataset.root=/path/to/coco --config.init_from=R50_DIR

Published: 37.5 mask AP on COCO val2017 (SOLO README, SOLOv2_R50_3x). As the 1x config, but 36 epochs with
lr x 0.1 after epochs 27 and 33, and the shorter side drawn from 640..800 (the reference picks one of
640, 672, ..., 800; here a continuous scale in [0.8, 1] of the 800 x 1344 fit). Needs COCO 2017 in `config.dataset.root`
and an accelerator.
"""
from experiments import solov2_r50_fpn_1x_coco as base


def get_config():
  config = base.get_config()
  config.total_steps = 36 * base.STEPS_PER_EPOCH
  config.optimizer.decay_steps = (27 * base.STEPS_PER_EPOCH, 33 * base.STEPS_PER_EPOCH)
  config.dataset.augment.scale_range = (0.8, 1.0)
  return config
