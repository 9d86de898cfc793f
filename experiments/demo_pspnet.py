"""PSPNet on the synthetic data: a narrow dilated ResNet-18 with the pyramid pooling head and the auxiliary head.

  python -m segjax.main --config=experiments/demo_pspnet.py --workdir=workdirs/demo_pspnet

Not a paper row: a smoke-sized run of PSPNet (output stride 8, bins 1, 2, 3, 6, auxiliary loss weight 0.4) on
2 CPU cores, trained from scratch. Target: mIoU >= 0.80 on the synthetic validation split in under 10 minutes.
"""
from experiments import demo


def get_config():
  config = demo.get_config()  # demo.py's batch, logging and AdamW recipe
  config.total_steps = 400
  config.eval_every_steps = 400
  config.checkpoint_every_steps = 400
  config.model.name = "pspnet"
  config.model.depth = 18
  config.model.width = 16
  config.model.output_stride = 8
  config.model.bins = (1, 2, 3, 6)
  config.model.aux = True
  config.model.aux_weight = 0.4
  del config.model.skips
  return config
