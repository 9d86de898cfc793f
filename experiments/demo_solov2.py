"""SOLOv2 on the synthetic data: a narrow ResNet-18 with a small head, trained from scratch on 2 CPU cores.

  python -m segjax.main --config=experiments/demo_solov2.py --workdir=workdirs/demo_solov2

Not a paper row: a smoke-sized run of the whole instance pipeline (targets, focal + Dice loss, Matrix NMS,
COCO mask AP on the synthetic validation split). Target: mask_AP >= 0.5 in under 15 minutes.
The inference area filter (`min_mask_area`) is the reference's level strides scaled by 1/4 like the grids and ranges:
the unscaled strides drop things under ~12 x 12 pixels.
"""
from experiments import demo


def get_config():
  config = demo.get_config()  # demo.py's batch, logging and AdamW recipe
  config.total_steps = 2400
  config.eval_every_steps = 1200
  config.checkpoint_every_steps = 1200
  config.model.name = "solov2"
  config.model.depth = 18
  config.model.width = 16
  config.model.norm = "batch"
  config.model.fpn_channels = 64
  config.model.seg_feat_channels = 64
  config.model.stacked_convs = 2
  config.model.ins_out_channels = 64
  config.model.mask_feat_channels = 32
  # The reference's grids and scale ranges (for ~1333 x 800 inputs), scaled to these 128 x 128 images.
  config.model.num_grids = (16, 12, 8, 6, 4)
  config.model.scale_ranges = ((1, 24), (12, 48), (24, 96), (48, 192), (96, 2048))
  config.model.min_mask_area = (2, 2, 4, 8, 8)  # the reference's strides, scaled as the ranges
  config.model.max_positives = 96
  del config.model.output_stride, config.model.skips
  return config
