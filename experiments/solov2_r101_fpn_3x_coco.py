"""SOLOv2, ResNet-101-FPN, 3x schedule with multi-scale training, COCO 2017 (WXinlong/SOLO solov2_r101_fpn_8gpu_3x).

  python -m segjax.main --config=experiments/solov2_r101_fpn_3x_coco.py --workdir=DIR \
      --config.dataset.root=/path/to/coco --config.init_from=R101_DIR

Published: 39.1 mask AP on COCO val2017 (SOLO README, SOLOv2_R101_3x). The R50 3x config on ResNet-101
(`scripts/convert_weights.py --name resnet101`). Needs COCO 2017 in `config.dataset.root` and an accelerator.
"""
from experiments import solov2_r50_fpn_3x_coco as base


def get_config():
  config = base.get_config()
  config.model.depth = 101
  return config
