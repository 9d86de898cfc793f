"""DeepLab-CRF-LargeFOV in small on the synthetic data: a width-16 VGG-16 LargeFOV trunk trained from scratch, evaluated
with DenseCRF post-processing.

  python -m segjax.main --config=experiments/demo_deeplab_crf.py --workdir=workdirs/demo_deeplab_crf

Not a paper row: a smoke-sized run of DeepLab v1's pipeline (stride-8 atrous VGG, scores upsampled x8, 10 mean-field
iterations of DenseCRF with the LargeFOV paper values at test time) on 2 CPU cores; the layer widths are 1/4 of the
paper's (conv 16-128 channels, fc6/fc7 256). The CRF's effect on the synthetic scenes with stride-8 unaries is in
tests/test_models_crf.py (mIoU 0.896 -> 0.989 for ideal coarse unaries).
Measured here (2-core CPU shared with other engineers' jobs, load ~12, 2026-12-03, command above with a private
dataset root): stopped by a 9-minute cap after 275 of the 1200 steps (0.7 steps/s), before the first evaluation;
train loss 1.46 (step 25), 0.60 (100), 0.38 (200), 0.32 (275). No mIoU measured yet.
Measured before the models normalised their input by ImageNet's pixel_mean / pixel_std (the backbone then read the
[0, 1] images as they are); not re-measured since.
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
