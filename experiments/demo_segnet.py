"""SegNet on the synthetic data: a width-16 SegNet (a quarter of the paper's channels) trained from scratch on 2 CPU
cores.

  python -m segjax.main --config=experiments/demo_segnet.py --workdir=workdirs/demo_segnet

Not a paper row: a smoke-sized run of the max-unpooling encoder-decoder through the whole semantic pipeline (for
the paper's CamVid row see experiments/segnet_camvid.py). Schedule: AdamW 2e-3 with cosine decay and 50 warm-up
steps, like experiments/demo.py, instead of the paper's fixed-rate SGD; no class weighting.
tests/test_models_segnet.py trains it for a few steps.
"""
import ml_collections

from experiments import demo


def get_config():
  config = demo.get_config()  # demo.py's batch, logging and AdamW recipe
  config.model = ml_collections.ConfigDict({"name": "segnet", "width": 16, "class_weights": (), "dtype": "float32"})
  return config
