"""Discriminative loss on Cityscapes instance segmentation (De Brabandere et al. 2017, Table 2).

  python -m segjax.main --config=experiments/discriminative_loss_cityscapes.py --workdir=DIR \
      --config.dataset.root=~/data/cityscapes_coco

Published (Table 2, Cityscapes test): AP 17.5 (AP50 35.9).
Recipe of the paper (Sec. 4.2): the discriminative loss (delta_v 0.5, delta_d 1.5, alpha = beta = 1, gamma = 0.001)
per semantic class, 8-dimensional embeddings, images at 768 x 384, Adam lr 1e-4; instances found by mean shift within
the mask of a separate semantic segmentation network, scored by that network.
Differences, stated: segjax's U-Net trunk trained from scratch predicts one class-agnostic foreground (all 8 thing
classes) and the embeddings; instances are class-agnostic (the reported metric is mask_AP_agnostic, not the
benchmark's per-class AP). Cityscapes instances are read as a COCO-format folder (gtFine polygons converted with
cityscapesScripts / detectron2's cityscapes-to-COCO tools; segjax/data/cityscapes.py reads semantic labels only).
Needs Cityscapes instances as that COCO-format folder in `config.dataset.root` and an accelerator.
"""
import ml_collections

from experiments import demo_discriminative_loss


def get_config():
  config = demo_discriminative_loss.get_config()
  config.batch_size = 8
  config.total_steps = 100_000
  config.log_every_steps = 50
  config.eval_every_steps = 10_000
  config.checkpoint_every_steps = 5_000
  config.model.width = 32
  config.model.embedding_dim = 8
  config.model.num_seeds = 64
  config.dataset = ml_collections.ConfigDict(dict(config.dataset))
  config.dataset.name = "coco"
  config.dataset.root = "~/data/cityscapes_coco"
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
