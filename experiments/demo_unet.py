"""U-Net on the synthetic data: a width-16 U-Net with "same" padding trained from scratch on 2 CPU cores.

  python -m segjax.main --config=experiments/demo_unet.py --workdir=workdirs/demo_unet

Not a paper row: a smoke-sized run of U-Net through the whole semantic pipeline (for the paper's setting see
experiments/unet_isbi.py). "same" padding keeps the 128x128 input size at the least cost (valid padding, the
paper's, would run each image as a 316x316 mirrored tile: the overlap-tile strategy). Schedule: AdamW 2e-3 with
cosine decay and 50 warm-up steps, like experiments/demo.py, instead of the paper's SGD with momentum 0.99 on single
tiles.
tests/test_models_unet.py trains it for a few steps.
"""
import ml_collections

from experiments import demo


def get_config():
  config = demo.get_config()  # demo.py's batch, logging and AdamW recipe
  config.model = ml_collections.ConfigDict({"name": "unet", "width": 16, "padding": "same", "dtype": "float32"})
  return config
