"""Dynamically Instantiated Network (Arnab & Torr 2017) on a narrow ResNet-18-FPN, trained from scratch on the
synthetic data (not a paper row).

  python -m segjax.main --config=experiments/demo_instance_crf.py --workdir=workdirs/demo_instance_crf

demo_mask_rcnn.py's detector (box-only, mask=False) and schedule, plus a 64-wide semantic FPN branch over the
background and the 4 shape classes and the instance CRF on top (segjax/models/dynamic_instance.py): in training its
detections are the ground-truth boxes jittered by 10% with score 1, at inference the detector's 30 best, and each
detection's mask is the pixels the CRF labels with it. COCO evaluation with pycocotools (box_AP, mask_AP in
metrics.jsonl).
"""
from segjax.config import base_config
from segjax.models import dynamic_instance


def get_config():
  config = base_config()
  config.batch_size = 8
  config.total_steps = 1500
  config.log_every_steps = 50
  config.eval_every_steps = 750
  config.checkpoint_every_steps = 750
  config.model = dynamic_instance.model_config()
  config.model.update({
      "depth": 18, "width": 16, "norm": "batch", "fpn_channels": 64, "representation_size": 256,
      "semantic_channels": 64, "anchor_sizes": ((8,), (16,), (32,), (64,), (128,)),
      "rpn_pre_nms_top_n_train": 1000, "rpn_post_nms_top_n_train": 500, "rpn_pre_nms_top_n_test": 500,
      "rpn_post_nms_top_n_test": 200, "roi_batch_size_per_image": 64, "detection_candidates": 1000,
      "detections_per_image": 30})
  config.optimizer.name = "adamw"
  config.optimizer.learning_rate = 1e-3
  config.optimizer.weight_decay = 1e-4
  config.optimizer.schedule = "cosine"
  config.optimizer.warmup_steps = 100
  return config
