"""DeepLab-CRF-LargeFOV in small on the synthetic data: a width-16 VGG-16 LargeFOV trunk trained from scratch, evaluated
with DenseCRF post-processing.

  python -m segjax.main --config=experiments/demo_deeplab_crf.py --workdir=workdirs/demo_deeplab_crf

Not a paper row: a smoke-sized run of DeepLab v1's pipeline (stride-8 atrous VGG, scores upsampled x8, 10 mean-field
iterations of DenseCRF with the LargeFOV paper values at test time) on 2 CPU cores; the layer widths are 1/4 of the
paper's (conv 16-128 channels, fc6/fc7 256). The CRF's effect on the synthetic scenes with stride-8 unaries is checked
in tests/test_models_crf.py (ideal coarse unaries).
"""
import ml_collections

from experiments import demo
from experiments.deeplab_v1_largefov_crf_voc import CRF


def get_config():
  config = demo.get_config()  # demo.py's batch, logging and AdamW recipe
  config.model = ml_collections.ConfigDict({
      "name": "dense_crf",
      "base": {"name": "deeplab_v1", "variant": "largefov", "width": 16, "dtype": "float32"},
      "crf": CRF})
  config.optimizer.learning_rate = 1e-3
  return config
