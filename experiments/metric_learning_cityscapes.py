"""Deep metric learning (Fathi et al. 2017, "Semantic Instance Segmentation via Deep Metric Learning") on Cityscapes
instance segmentation.

  python -m segjax.main --config=experiments/metric_learning_cityscapes.py --workdir=DIR \
      --config.dataset.root=~/data/cityscapes

Published: unverified; the paper's abstract reports results on PASCAL VOC 2012 instance segmentation, and no
Cityscapes AP of this method could be confirmed here.
Recipe of the paper (Sec. 3): the similarity sigma(p, q) = 2 / (1 + exp(||e_p - e_q||^2)) trained by the pairwise
sigmoid cross entropy on pixels sampled per instance, a seediness head trained on the IoU of the mask each point
grows, sequential seed selection (log S_p + alpha log D) and masks of the pixels with similarity above 0.5.
Differences, stated: segjax's U-Net trunk trained from scratch (the paper fine-tunes an ImageNet-pretrained
network), one class-agnostic foreground and seediness instead of per-class heads, so the reported metric is
mask_AP_agnostic (all 8 thing classes merged), not the benchmark's per-class AP; images at 384 x 768.
Needs Cityscapes in `config.dataset.root` and an accelerator.
"""
import ml_collections

from experiments import demo_metric_learning


def get_config():
  config = demo_metric_learning.get_config()
  config.batch_size = 8
  config.total_steps = 100_000
  config.log_every_steps = 50
  config.eval_every_steps = 10_000
  config.checkpoint_every_steps = 5_000
  config.model.width = 32
  config.model.embedding_dim = 64  # the paper's embedding size is not confirmed here
  config.model.num_seeds = 64
  config.model.points_per_instance = 32
  config.dataset = ml_collections.ConfigDict(dict(config.dataset))
  config.dataset.name = "cityscapes_instances"
  config.dataset.root = "~/data/cityscapes"
  config.dataset.train_split = "train"
  config.dataset.eval_split = "val"
  config.dataset.image_size = (384, 768)
  config.dataset.max_instances = 100
  config.dataset.augment = ml_collections.ConfigDict({"scale_range": (0.9, 1.1), "flip": True})
  config.optimizer.name = "adamw"  # with weight_decay 0: Adam
  config.optimizer.learning_rate = 1e-4
  config.optimizer.weight_decay = 0.0
  config.optimizer.schedule = "constant"
  config.optimizer.warmup_steps = 0
  return config
