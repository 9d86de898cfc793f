"""FCN-32s, VGG-16, PASCAL VOC (Long et al. 2015, Table 2), single-stream: class scores of conv7 upsampled 32x.

  python -m scripts.convert_weights --name vgg16 --input vgg16.pth --output VGG16_DIR
  python -m segjax.main --config=experiments/fcn32s_vgg16_voc.py --workdir=DIR --config.init_from=VGG16_DIR

Paper row: CVPR 2015 Table 2 (mean IU on the seg11valid subset of VOC 2011 val): FCN-32s 59.4, FCN-32s-fixed
45.4 (`--config.optimizer.frozen='("backbone", "upscore")'`: only the score layer learns, the table's "fixed"
row), FCN-16s 62.4, FCN-8s 62.7. The data, schedule and differences are those of `fcn8s_vgg16_voc.py`, with no
skip stream.
Needs VOC 2012 and SBD in `config.dataset.root` and `config.dataset.sbd_root` and an accelerator.
"""
from experiments import fcn8s_vgg16_voc


def get_config():
  config = fcn8s_vgg16_voc.get_config()
  config.model.skips = ()
  del config.model.skip_scales
  return config
