"""U-Net on the synthetic data: a width-16 U-Net with "same" padding trained from scratch on 2 CPU cores.

  python -m segjax.main --config=experiments/demo_unet.py --workdir=workdirs/demo_unet

Not a paper row: a smoke-sized run of U-Net through the whole semantic pipeline (for the paper's setting see
experiments/unet_isbi.py). "same" padding keeps the 128x128 input size at the least cost (valid padding, the
paper's, would run each image as a 316x316 mirrored tile: the overlap-tile strategy). Schedule: AdamW 2e-3 with
cosine decay and 50 warm-up steps, like experiments/demo.py, instead of the paper's SGD with momentum 0.99 on single
tiles.
Not run here beyond the few steps of tests/test_models_unet.py.
"""
import ml_collections

from segjax.config import base_config


def get_config():
  config = base_config()
  config.batch_size = 8
  config.total_steps = 1200
  config.log_every_steps = 50
  config.eval_every_steps = 600
  config.checkpoint_every_steps = 600
  config.model = ml_collections.ConfigDict({"name": "unet", "width": 16, "padding": "same", "dtype": "float32"})
  config.optimizer.name = "adamw"
  config.optimizer.learning_rate = 2e-3
  config.optimizer.weight_decay = 1e-4
  config.optimizer.schedule = "cosine"
  config.optimizer.warmup_steps = 50
  return config
