"""Deep metric learning (Fathi et al. 2017) on the synthetic data: a width-16 U-Net trained from scratch on 2 CPU
cores, instances by sequential seeds and similarity > 0.5 (each mask grown again from its mean embedding),
class-agnostic.

  GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python -m segjax.main --config=experiments/demo_metric_learning.py \
      --workdir=workdirs/demo_metric_learning

Not a paper row: a smoke-sized run of the pairwise embedding loss, the seediness head and seed-based grouping through
the whole pipeline (class-agnostic COCO mask AP and the overlap F-measure on the synthetic validation split), on a
1200-step cosine schedule.
Target: mask_AP_agnostic >= 0.4 in under 15 minutes on 2 cores (with huge pages, see README: Running experiments).
"""
import ml_collections

from experiments import demo


def get_config():
  config = demo.get_config()  # demo.py's batch, logging and AdamW recipe
  config.total_steps = 1200
  config.eval_every_steps = 1200  # evaluated once, at the end
  config.checkpoint_every_steps = 600
  config.model = ml_collections.ConfigDict({
      "name": "metric_learning", "width": 16, "embedding_dim": 8, "dtype": "float32",
      # Loss: points drawn per instance (and from the background), term weights.
      "points_per_instance": 16, "embedding_weight": 1.0, "seediness_weight": 1.0, "foreground_weight": 1.0,
      # Inference: sequential seeds (Fathi et al. 2017; seed_alpha 0.5 weighs seediness over the distance to the
      # earlier seeds), the similarity threshold 0.5, area / foreground thresholds;
      # each mask grown again from its mean embedding and scored by seediness x the IoU of the two masks (a departure
      # from the paper, stated in segjax/models/metric_learning.py).
      "num_seeds": 32, "seed_alpha": 0.5, "similarity_threshold": 0.5, "foreground_threshold": 0.5, "min_area": 8,
      "recentre_masks": True,
  })
  return config
