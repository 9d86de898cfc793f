"""Deep Watershed Transform (Bai & Urtasun 2017) on the synthetic data: width-16 semantic U-Net and width-8
direction / watershed U-Nets trained from scratch on 2 CPU cores, instances by the energy cut, class-agnostic.

  python -m segjax.main --config=experiments/demo_watershed.py --workdir=workdirs/demo_watershed

Not a paper row: a smoke-sized run of the direction field, the quantised energy and the cut through the whole
pipeline (targets in the train step, class-agnostic COCO mask AP on the synthetic validation split). Departure from
the model's default cut (above level 1, distance > 2 px): the cut is above level 0 (distance > 1 px), as the 128 x
128 images hold shapes at most 4 px across, which have no pixel farther than 2 px from their boundary and so no core
above level 1; a 500-step cosine schedule.
Target: mask_AP_agnostic >= 0.4 in under 15 minutes on 2 cores.
"""
import ml_collections

from experiments import demo


def get_config():
  config = demo.get_config()  # demo.py's batch, logging and AdamW recipe
  config.total_steps = 500
  config.eval_every_steps = 500
  config.checkpoint_every_steps = 500
  config.model = ml_collections.ConfigDict({
      "name": "deep_watershed", "width": 16, "head_width": 8, "dtype": "float32",
      # Loss weights of the direction (angular), energy (weighted cross entropy) and foreground terms.
      "direction_weight": 1.0, "energy_weight": 1.0, "foreground_weight": 1.0,
      # Inference: the cut above level 0 (distance > 1 px: only the one-pixel boundary ring is cut, so that small
      # shapes keep a core), the smallest core, detections kept, foreground gate.
      "cut_level": 0, "min_area": 2, "max_detections": 32, "foreground_threshold": 0.5,
  })
  return config
