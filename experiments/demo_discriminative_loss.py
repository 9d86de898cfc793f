"""Discriminative-loss embeddings (De Brabandere et al. 2017) on the synthetic data: a width-16 U-Net trained from
scratch on 2 CPU cores, instances by seeds + mean shift, class-agnostic.

  python -m segjax.main --config=experiments/demo_discriminative_loss.py --workdir=workdirs/demo_discriminative_loss

Not a paper row: a smoke-sized run of bottom-up instance segmentation through the whole pipeline (discriminative
loss, grouping inside jit, class-agnostic COCO mask AP on the synthetic validation split). Target:
mask_AP_agnostic >= 0.4 in under 15 minutes.
"""
import ml_collections

from experiments import demo


def get_config():
  config = demo.get_config()  # demo.py's batch, logging and AdamW recipe
  config.total_steps = 1200
  config.eval_every_steps = 1200  # evaluated once, at the end
  config.checkpoint_every_steps = 600
  config.model = ml_collections.ConfigDict({
      "name": "discriminative_embedding", "width": 16, "embedding_dim": 8, "dtype": "float32",
      # Loss (Sec. 4.2): margins delta_v, delta_d and term weights alpha, beta, gamma.
      "delta_v": 0.5, "delta_d": 1.5, "alpha": 1.0, "beta": 1.0, "gamma": 0.001, "foreground_weight": 1.0,
      # Inference: seeds, mean shift and the area / foreground thresholds.
      "num_seeds": 32, "seed_alpha": 1.0, "kernel": "flat",
      "bandwidth": 1.5, "kappa": 10.0,  # bandwidth delta_d: half the 2 delta_d hinge between centres
      "mean_shift_iterations": 10, "foreground_threshold": 0.5, "min_area": 16,
  })
  return config
