"""DeepLab v3+ on the synthetic data: a narrow ResNet-18 at output stride 16, ASPP and the decoder, with the
auxiliary FCN head on C4, trained from scratch.

  python -m segjax.main --config=experiments/demo_deeplab_v3.py --workdir=workdirs/demo_deeplab_v3

Not a paper row: the tiny variant of experiments/deeplab_v3_r101_voc.py and deeplab_v3plus_r101_voc.py that the
tests train through the loop (tests/test_models_deeplab.py, at width 8 for a few steps).
"""
import ml_collections

from experiments import demo


def get_config():
  config = demo.get_config()  # demo.py's batch, logging and AdamW recipe
  config.model = ml_collections.ConfigDict({
      "name": "deeplab_v3", "depth": 18, "width": 16, "output_stride": 16, "multi_grid": None,
      "head": "decoder", "rates": (6, 12, 18), "aux": True, "aux_weight": 0.5, "dtype": "float32"})
  return config
