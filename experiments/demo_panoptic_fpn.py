"""Panoptic FPN on a narrow ResNet-18-FPN, trained from scratch on the synthetic data (not a paper row).

  python -m segjax.main --config=experiments/demo_panoptic_fpn.py --workdir=workdirs/demo_panoptic_fpn

The whole panoptic path on 2 CPU cores: demo_mask_rcnn's small Mask R-CNN plus the semantic FPN branch (32 wide)
over the 3 stuff classes + "other", merged by panoptic_merge inside the eval step; PQ, SQ, RQ (all, things, stuff)
and box/mask AP in metrics.jsonl, panoptic pictures. Target (issue 8): PQ >= 0.4 on the synthetic validation split
in under 20 minutes. The stuff area threshold is COCO's 4096 px scaled from a 640 x 480 image to 128 x 128 (218 px).
"""
from experiments import demo_mask_rcnn
from segjax.models import panoptic_fpn


def get_config():
  config = demo_mask_rcnn.get_config()
  config.total_steps = 1200
  config.eval_every_steps = 400
  config.checkpoint_every_steps = 400
  model = panoptic_fpn.model_config()
  model.update({k: v for k, v in config.model.items() if k != "name"})
  model.update({"semantic_channels": 32, "stuff_area_threshold": 218})
  config.model = model
  return config
