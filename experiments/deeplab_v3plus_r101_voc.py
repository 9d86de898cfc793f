"""DeepLab v3+, ResNet-101, output stride 16, PASCAL VOC 2012 (Chen et al. 2018, Table 3).

  python -m segjax.main --config=experiments/deeplab_v3plus_r101_voc.py --workdir=DIR

Paper row: ResNet-101, train and eval output stride 16, the decoder (48-channel C2 projection, two 3x3 convs of
256), single scale, no flip: 78.85 mIoU on VOC 2012 val (77.21 without the decoder: experiments/
deeplab_v3_r101_voc.py, whose recipe this is: poly learning rate from 0.007, batch 16, 30k iterations, 513x513
crops, random scaling 0.5-2.0 and flips, weight decay 1e-4, train_aug from ImageNet weights via
`scripts/convert_weights.py --name resnet101 ...` then `--config.init_from=DIR`).
What differs: the multi-grid rates of that config (1, 4, 8), and a bilinear 4x upsampling of the ASPP output to
C2's size with half-pixel centres (torch's align_corners=False). Needs VOC 2012 and SBD in `config.dataset.root` and
`config.dataset.sbd_root` and an accelerator.
"""
from experiments import deeplab_v3_r101_voc


def get_config():
  config = deeplab_v3_r101_voc.get_config()
  config.model.head = "decoder"
  return config
