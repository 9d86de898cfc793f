"""SDS on two narrow AlexNets, trained from scratch on the synthetic data (not a paper row).

  python -m segjax.main --config=experiments/demo_sds.py --workdir=workdirs/demo_sds

The whole SDS path of segjax/models/sds.py on 2 CPU cores: region candidates in the batch (the stand-in of
segjax/data/region_proposals.py: 64 masks per image made from the ground-truth masks plus random ellipses, drawn per
image id, in place of MCG; they make the validation scores optimistic), 2 images x 64 sampled regions (25%
foreground at region overlap >= 0.5), each region's box and its masked box warped to 67 x 67 with 5 pixels of
context (the paper's 227 and 16, scaled to the 128 px images) through the box and region pathways (AlexNet at an
eighth of its filters, fc6/fc7 256 units without dropout), the K+1 softmax, class-wise region NMS at 0.3 and the
region refinement on a 10 x 10 grid; COCO mask AP and SDS's AP^r (mask_APr50, mask_APr70, mask_APr_vol in
metrics.jsonl). Nothing is pretrained. Target: mask_APr50 >= 0.7 and mask_AP >= 0.4 on the synthetic validation
split, within 15 minutes of 2 CPU cores.
"""
from segjax.config import base_config
from segjax.models import sds


def get_config():
  config = base_config()
  config.batch_size = 2
  config.total_steps = 1000
  config.log_every_steps = 50
  config.eval_every_steps = 500
  config.checkpoint_every_steps = 500
  config.model = sds.model_config()
  config.model.update({"width": 12, "warp_size": 67, "context_padding": 5, "representation_size": 256,
                       "box_head_dropout": 0.0, "roi_batch_size_per_image": 64, "detections_per_image": 30,
                       "detection_candidates": 500})
  config.dataset.num_region_proposals = 64
  config.optimizer.name = "adamw"
  config.optimizer.learning_rate = 1e-3
  config.optimizer.weight_decay = 1e-4
  config.optimizer.schedule = "cosine"
  config.optimizer.warmup_steps = 50
  return config
