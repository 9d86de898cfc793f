"""Boundary-aware instance segmentation (Hayder et al. 2017) on a narrow ResNet-18-FPN Mask R-CNN, trained from
scratch on the synthetic data (not a paper row).

  python -m segjax.main --config=experiments/demo_boundary_aware.py --workdir=workdirs/demo_boundary_aware

demo_mask_rcnn.py's detector and schedule with the boundary-aware mask branch: K = 5 binary maps per class of the
distance transform truncated at R = 5 cells of the 28 x 28 RoI grid, per-bin cross entropy, masks decoded as the
union of disks and pasted over the box grown by R cells (segjax/models/boundary_aware.py). COCO evaluation with
pycocotools (box_AP, mask_AP in metrics.jsonl). demo_mask_rcnn.py, the same detector and schedule with the plain mask
head, is the baseline to compare with.
"""
from segjax.config import base_config
from segjax.models import boundary_aware


def get_config():
  config = base_config()
  config.batch_size = 8
  config.total_steps = 1500
  config.log_every_steps = 50
  config.eval_every_steps = 750
  config.checkpoint_every_steps = 750
  config.model = boundary_aware.model_config()
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
