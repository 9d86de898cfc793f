"""The embedded default: FCN-8s on a narrow ResNet-18, trained on the synthetic data (what `make demo` runs).

  python -m segjax.main --config=experiments/demo.py --workdir=workdirs/demo

Not a paper row: a smoke-sized run that shows the whole pipeline (data -> model -> train -> eval -> pictures)
on 2 CPU cores. Target: mIoU >= 0.80 on the synthetic validation split in under 10 minutes.
"""
from segjax.config import base_config


def get_config():
  config = base_config()
  config.batch_size = 8
  config.total_steps = 1200
  config.log_every_steps = 50
  config.eval_every_steps = 600
  config.checkpoint_every_steps = 600
  config.model.depth = 18
  config.model.width = 32
  config.optimizer.name = "adamw"
  config.optimizer.learning_rate = 2e-3
  config.optimizer.weight_decay = 1e-4
  config.optimizer.schedule = "cosine"
  config.optimizer.warmup_steps = 50
  return config
