"""Recurrent Instance Segmentation (ConvLSTM + spatial inhibition, Eq. 3 loss) on the synthetic data.

  python -m segjax.main --config=experiments/demo_ris.py --workdir=workdirs/demo_ris

Not a paper row (RIS reports SBD 56.8 on CVPPP A1, 66.6 with the CRF): a smoke-sized run of the recurrent paradigm on a
narrow ResNet-18 at output stride 8, class-agnostic. Departures from the model's defaults: the masks refined to
stride 4 by the trunk's C2 (the shapes of the 128 x 128 images are a few stride-8 cells across); every step reported,
scored for AP by confidence times mask quality and decayed by Matrix NMS over the steps; the ConvLSTM reads its
global context and the cells' coordinates, and the masks pass the salience inhibition (so that a step picks one shape
over the whole map; none is in the paper); evaluation refines each step's mask by the paper's DenseCRF, its kernels
sized for 128 x 128 images (theta_alpha 40 pixels).
Target: mask_AP_agnostic >= 0.4 on the synthetic validation split in under 15 minutes on 2 cores.
"""
from experiments import demo


def get_config():
  config = demo.get_config()  # demo.py's batch, logging and AdamW recipe
  config.total_steps = 2600
  config.eval_every_steps = 2600
  config.checkpoint_every_steps = 2600
  config.dataset.max_instances = 8
  config.model.name = "ris"
  config.model.depth = 18
  config.model.width = 16
  config.model.norm = "batch"
  config.model.num_steps = 10  # max_instances + 2, the paper's n + 2
  config.model.lstm_features = 32
  config.model.lstm_layers = 2
  config.model.mask_stride = 4
  config.model.skip_features = 16
  config.model.mask_scoring = True
  config.model.score_threshold = 0.0  # every step a detection, ranked by its score (COCO AP ranks them all)
  config.model.nms = "matrix"  # a step that segments an instance again ranks below the first (Matrix NMS)
  config.model.nms_sigma = 2.0
  config.model.global_context = True
  config.model.coordinates = True
  config.model.inhibition = True
  config.model.crf = {"num_iterations": 10, "w_bilateral": 30.0, "theta_alpha": 40.0, "theta_beta": 8.0,
                      "w_spatial": 3.0, "theta_gamma": 3.0}
  del config.model.output_stride, config.model.skips, config.model.dtype
  return config
