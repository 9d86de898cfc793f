"""Recurrent Attention on Cityscapes instance-level segmentation (Ren & Zemel, CVPR 2017, Table 3).

  python -m segjax.main --config=experiments/recurrent_attention_cityscapes.py --workdir=DIR \
      --config.dataset.root=~/data/cityscapes

Published (Table 3, Cityscapes test): AP 9.5.
Recipe of the paper: the recurrent model of the CVPPP run (box network with soft attention, Gaussian glimpses,
patch segmentation network, Eq. 21 loss, scheduled sampling) on downsampled Cityscapes images; the authors' code
also feeds the FCN's semantic segmentation of the thing classes as input (full_model.py's num_semantic_classes).
Differences, stated: class-agnostic (the FCN head predicts one foreground; instances carry label 1, so
mask_AP_agnostic is the metric to read, not the benchmark's per-class cityscapes_AP); the differences of
segjax/models/recurrent_attention.py (joint training from scratch, box coordinate term); 256 x 512 inputs, the first
40 instances of an image kept (segjax.data.augment keeps min(N, max_instances)).
Needs Cityscapes in `config.dataset.root` and an accelerator.
"""
import ml_collections

from experiments import recurrent_attention_cvppp


def get_config():
  config = recurrent_attention_cvppp.get_config()
  config.batch_size = 8
  config.total_steps = 60_000
  config.eval_every_steps = 10_000
  config.checkpoint_every_steps = 5_000
  config.model.num_steps = 41  # max_instances + 1
  # run_cityscapes.sh's knobs: ground-truth boxes for the glimpses until step 8000, ground-truth masks in the canvas
  # until step 100, each probability then halved every 1500 steps.
  config.model.box_sampling_offset = 8_000
  config.model.sampling_offset = 100
  config.model.sampling_period = 1_500
  config.dataset = ml_collections.ConfigDict(dict(config.dataset))
  config.dataset.name = "cityscapes_instances"
  config.dataset.root = "~/data/cityscapes"
  config.dataset.train_split = "train"
  config.dataset.eval_split = "val"
  config.dataset.image_size = (256, 512)
  config.dataset.max_instances = 40
  config.dataset.augment = ml_collections.ConfigDict({"scale_range": (0.9, 1.1), "flip": True})
  config.optimizer.decay_steps = tuple(range(5_000, 60_000, 5_000))
  return config
