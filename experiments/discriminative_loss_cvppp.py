"""Discriminative loss on the CVPPP leaf segmentation challenge, A1 (De Brabandere et al. 2017, Table 1).

  python -m segjax.main --config=experiments/discriminative_loss_cvppp.py --workdir=DIR \
      --config.dataset.root=~/data/CVPPP2017_LSC_training/training

Published (Table 1, CVPPP LSC A1 test set): SBD 84.2, |DiC| 1.0.
Recipe of the paper (Sec. 4.2): the discriminative loss with delta_v 0.5, delta_d 1.5, alpha = beta = 1,
gamma = 0.001; 16-dimensional embeddings; images at 512 x 512; Adam, lr 1e-4; the foreground mask is the
challenge's (or a separate segmentation network's); clustering by mean shift around the foreground embeddings.
Differences, stated: the trunk is segjax's U-Net ("same" padding, width 32), trained from scratch, and predicts the
foreground itself; the split "A1" is all 128 training plants (the challenge's test labels are withheld: hold out a
list file root/NAME.txt of "A1/plantNNN" lines as eval_split to validate). Evaluation writes the challenge's SBD and
abs_DiC (segjax.evaluation.leaf, the LSC program's semantics) next to mask_AP_agnostic in metrics.jsonl.
Needs the CVPPP A1 set in `config.dataset.root`.
"""
import ml_collections

from experiments import demo_discriminative_loss


def get_config():
  config = demo_discriminative_loss.get_config()
  config.batch_size = 8
  config.total_steps = 20_000
  config.log_every_steps = 50
  config.eval_every_steps = 2_000
  config.checkpoint_every_steps = 2_000
  config.model.width = 32
  config.model.embedding_dim = 16
  config.model.num_seeds = 48  # A1 plants have up to ~20 leaves
  config.dataset = ml_collections.ConfigDict(dict(config.dataset))
  config.dataset.name = "cvppp"
  config.dataset.root = "~/data/CVPPP2017_LSC_training/training"
  config.dataset.train_split = "A1"
  config.dataset.eval_split = "A1"
  config.dataset.image_size = (512, 512)
  config.dataset.max_instances = 32
  config.dataset.augment = ml_collections.ConfigDict({"scale_range": (0.9, 1.1), "flip": True})
  config.optimizer.name = "adamw"  # with weight_decay 0: Adam
  config.optimizer.learning_rate = 1e-4
  config.optimizer.weight_decay = 0.0
  config.optimizer.schedule = "constant"
  config.optimizer.warmup_steps = 0
  return config
