"""Panoptic FCN on a narrow ResNet-18-FPN, trained from scratch on the synthetic data (not a paper row).

  python -m segjax.main --config=experiments/demo_panoptic_fcn.py --workdir=workdirs/demo_panoptic_fcn

The whole Panoptic FCN path on 2 CPU cores: centre heatmaps and region maps on P3..P7, kernels x the 1/4-scale
encoded features, weighted Dice, kernel fusion and the merge inside the eval step; PQ, SQ, RQ (all, things, stuff)
and box/mask AP in metrics.jsonl, panoptic pictures. Target (issue 8): PQ >= 0.4 on the synthetic validation split
in under 20 minutes. The instance scale ranges are the official ones / 4 (128-pixel images, where COCO's are
~800-1333), the stuff area threshold COCO's 4096 px scaled from a 640 x 480 image to 128 x 128 (218 px).
"""
from segjax.config import base_config
from segjax.models import panoptic_fcn


def get_config():
  config = base_config()
  config.batch_size = 8
  config.total_steps = 2000
  config.log_every_steps = 50
  config.eval_every_steps = 1000
  config.checkpoint_every_steps = 1000
  config.model = panoptic_fcn.model_config()
  config.model.update({
      "depth": 18, "width": 16, "norm": "batch", "fpn_channels": 64, "semantic_channels": 32, "head_channels": 64,
      "encoder_channels": 32, "stuff_area_threshold": 218})
  config.optimizer.name = "adamw"
  config.optimizer.learning_rate = 2e-3
  config.optimizer.weight_decay = 1e-4
  config.optimizer.schedule = "cosine"
  config.optimizer.warmup_steps = 100
  return config
