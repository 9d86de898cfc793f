"""Panoptic FCN on a narrow ResNet-18-FPN, trained from scratch on the synthetic data (not a paper row).

  python -m segjax.main --config=experiments/demo_panoptic_fcn.py --workdir=workdirs/demo_panoptic_fcn

The whole Panoptic FCN path on 2 CPU cores: centre heatmaps and region maps on P3..P7, kernels x the 1/4-scale
encoded features, weighted Dice, kernel fusion and the merge inside the eval step; PQ, SQ, RQ (all, things, stuff)
and box/mask AP in metrics.jsonl, panoptic pictures. Target (issue 8): PQ >= 0.4 on the synthetic validation split
in under 20 minutes. The stuff area threshold is COCO's 4096 px scaled from a 640 x 480 image to 128 x 128 (218 px);
the position head has plain convs (position_deform False) for CPU time.
The instance scale ranges are the official ones, unscaled: the level strides are COCO's, so an object takes as many
cells of its level as on COCO. With the ranges / 4 (as demo_solov2 scales its grids) most objects are under a cell
at their level, their centre targets are single pixels (radius 0), too small a target for the heatmaps to tell the
classes apart.
"""
from segjax.config import base_config
from segjax.models import panoptic_fcn


def get_config():
  config = base_config()
  config.batch_size = 8
  config.total_steps = 1500
  config.log_every_steps = 50
  config.eval_every_steps = 500
  config.checkpoint_every_steps = 500
  config.model = panoptic_fcn.model_config()
  config.model.update({
      "depth": 18, "width": 16, "norm": "batch", "fpn_channels": 64, "semantic_channels": 32, "head_channels": 64,
      "encoder_channels": 32, "position_deform": False, "stuff_area_threshold": 218})
  config.optimizer.name = "adamw"
  config.optimizer.learning_rate = 2e-3
  config.optimizer.weight_decay = 1e-4
  config.optimizer.schedule = "cosine"
  config.optimizer.warmup_steps = 100
  return config
