"""Recurrent Attention (Ren & Zemel, CVPR 2017) on the synthetic data: canvas memory, a box network with soft
attention, Gaussian glimpses, a patch segmentation network and the Eq. 21 loss, class-agnostic.

  python -m segjax.main --config=experiments/demo_recurrent_attention.py --workdir=workdirs/demo_recurrent_attention

Not a paper row: a smoke-sized run of the recurrent-attention paradigm trained from scratch (FCN head included) on
2 CPU cores, 128 x 128 images with up to 8 instances, 24 x 24 glimpses. In place of the authors' separate pretraining
of the FCN and the box network, the FCN learns from its own loss from the start and the authors' scheduled sampling
feeds ground-truth boxes to the glimpses and ground-truth masks to the canvas for the first half of training. The box
network's attention reads the positions' content (`content_attention`, not in the paper): with the paper's
position-only weights it learns little more than the mean box in this budget. The boxes are padded by half their
extent per side (the authors pad by 0.2), so that a glimpse from an imprecise predicted box still holds the whole
instance, and the ground-truth boxes fed early are jittered well beyond the authors' amount, so that the segmentation
network learns to pick out the instance a box is centred on when the box also holds its neighbours. The steps take
the instances largest first (`fixed_order`, an option of the authors' code): with the matchings of the loss, which
instance the first step should take is left open, and from some initialisations the box network settles on the
mean box there, finds nothing and stops at the first step. A step's mask leaves out what the canvas holds
(`disable_overwrite`, also the authors' option). Target:
mask_AP_agnostic >= 0.4 on the synthetic validation split in under 15 minutes of 2 CPU cores.
"""
import ml_collections

from experiments import demo


def get_config():
  config = demo.get_config()  # demo.py's batch, logging and AdamW recipe
  config.total_steps = 1600
  config.eval_every_steps = 800
  config.checkpoint_every_steps = 800
  config.dataset.max_instances = 8
  config.model = ml_collections.ConfigDict({
      "name": "recurrent_attention", "fcn_channels": (16, 32, 64),
      "num_steps": 9,  # max_instances + 1: the authors' timespan covers every instance and one stop
      "box_channels": (8, 16, 32), "box_coordinates": True, "content_attention": True, "disable_overwrite": True,
      "sampling_time_scale": False, "fixed_order": True,
      "lstm_features": 64,
      "num_glimpses": 3, "patch_size": 24, "seg_channels": (16, 32),
      # Eq. 21's lambda_b, lambda_s, the box coordinate term's weight and the FCN head's.
      "box_weight": 1.0, "coord_weight": 1.0, "score_weight": 1.0, "fcn_weight": 1.0,
      # Scheduled sampling (the authors' knobs): the glimpse reads the matched ground-truth box (padded by 0.5 of
      # its extent per side, as the box targets) for 800 steps, the canvas takes the matched ground-truth mask for
      # 960; then each probability halves every 200 steps. The fed boxes are jittered four to five times the
      # authors' amount (padding 0.5 +- 0.4, centre +- 0.25 of the extent), so that the segmentation network learns
      # to take the one instance a box is centred on rather than all the foreground in its middle.
      "box_padding": 0.5, "box_pad_noise": 0.4, "box_centre_noise": 0.25,
      "box_sampling_offset": 800, "sampling_offset": 960, "sampling_period": 200,
      "score_threshold": 0.5, "mask_threshold": 0.5,
  })
  return config
