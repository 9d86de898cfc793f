"""Recurrent Attention (Ren & Zemel, CVPR 2017) on the synthetic data: canvas memory, a box network with soft
attention, Gaussian glimpses, a patch segmentation network and the Eq. 21 loss, class-agnostic.

  python -m segjax.main --config=experiments/demo_recurrent_attention.py --workdir=workdirs/demo_recurrent_attention

Not a paper row: a smoke-sized run of the recurrent-attention paradigm trained from scratch (FCN head included) on
2 CPU cores, 128 x 128 images with up to 8 instances, 24 x 24 glimpses.
"""
import ml_collections

from experiments import demo


def get_config():
  config = demo.get_config()  # demo.py's batch, logging and AdamW recipe
  config.total_steps = 3000
  config.eval_every_steps = 1500
  config.checkpoint_every_steps = 1500
  config.dataset.max_instances = 8
  config.model = ml_collections.ConfigDict({
      "name": "recurrent_attention", "fcn_channels": (16, 32, 64),
      "num_steps": 9,  # max_instances + 1: the authors' timespan covers every instance and one stop
      "box_channels": (16, 32, 32), "lstm_features": 64, "num_glimpses": 3, "patch_size": 24,
      "seg_channels": (16, 32),
      # Eq. 21's lambda_b, lambda_s, the box coordinate term's weight and the FCN head's.
      "box_weight": 1.0, "coord_weight": 1.0, "score_weight": 1.0, "fcn_weight": 1.0,
      # Scheduled sampling: ground truth in the canvas for 300 steps, then theta halves every 200 steps.
      "sampling_offset": 300, "sampling_period": 200,
      "score_threshold": 0.5, "mask_threshold": 0.5,
  })
  return config
