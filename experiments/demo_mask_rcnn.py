"""Mask R-CNN on a narrow ResNet-18-FPN, trained from scratch on the synthetic data (not a paper row).

  python -m segjax.main --config=experiments/demo_mask_rcnn.py --workdir=workdirs/demo_mask_rcnn

The whole instance path on 2 CPU cores: RPN, RoI sampling, box and mask heads, COCO evaluation with
pycocotools (box_AP, mask_AP in metrics.jsonl, results JSON, pictures). Target: mask_AP >= 0.5 on the
synthetic validation split in under 15 minutes. Anchors are 4x smaller than COCO's (8..128 on 128x128 images).
"""
from segjax.config import base_config
from segjax.models import mask_rcnn


def get_config():
  config = base_config()
  config.batch_size = 8
  config.total_steps = 1500
  config.log_every_steps = 50
  config.eval_every_steps = 750
  config.checkpoint_every_steps = 750
  config.model = mask_rcnn.model_config()
  config.model.update({
      "depth": 18, "width": 16, "norm": "batch", "fpn_channels": 64, "representation_size": 256,
      "mask_head_channels": 32, "anchor_sizes": ((8,), (16,), (32,), (64,), (128,)),
      "rpn_pre_nms_top_n_train": 1000, "rpn_post_nms_top_n_train": 500, "rpn_pre_nms_top_n_test": 500,
      "rpn_post_nms_top_n_test": 200, "roi_batch_size_per_image": 64, "detection_candidates": 1000,
      "detections_per_image": 30})
  config.optimizer.name = "adamw"
  config.optimizer.learning_rate = 1e-3
  config.optimizer.weight_decay = 1e-4
  config.optimizer.schedule = "cosine"
  config.optimizer.warmup_steps = 100
  return config
