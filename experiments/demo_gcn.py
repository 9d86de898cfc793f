"""GCN + BR on the synthetic data: a narrow ResNet-18 with a GCN (k = 15) and BR blocks on C2..C5.

  python -m segjax.main --config=experiments/demo_gcn.py --workdir=workdirs/demo_gcn

Not a paper row: a smoke-sized run of the Fig. 2 architecture on 2 CPU cores, trained from scratch. Target: mIoU
>= 0.80 on the synthetic validation split in under 10 minutes.
"""
from experiments import demo


def get_config():
  config = demo.get_config()  # demo.py's batch, logging and AdamW recipe
  config.total_steps = 600
  config.model.name = "gcn"
  config.model.depth = 18
  config.model.width = 16
  config.model.kernel_size = 15
  del config.model.skips, config.model.output_stride
  return config
