"""SegNet on the synthetic data: a width-16 SegNet (a quarter of the paper's channels) trained from scratch on 2 CPU
cores.

  python -m segjax.main --config=experiments/demo_segnet.py --workdir=workdirs/demo_segnet

Not a paper row: a smoke-sized run of the max-unpooling encoder-decoder through the whole semantic pipeline (for
the paper's CamVid row see experiments/segnet_camvid.py). Schedule: AdamW 2e-3 with cosine decay and 50 warm-up
steps, like experiments/demo.py, instead of the paper's fixed-rate SGD; no class weighting.
Not run here beyond the few steps of tests/test_models_segnet.py.
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
  config.model = ml_collections.ConfigDict({"name": "segnet", "width": 16, "class_weights": (), "dtype": "float32"})
  config.optimizer.name = "adamw"
  config.optimizer.learning_rate = 2e-3
  config.optimizer.weight_decay = 1e-4
  config.optimizer.schedule = "cosine"
  config.optimizer.warmup_steps = 50
  return config
