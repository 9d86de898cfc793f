"""FCN-16s, VGG-16, PASCAL VOC (Long et al. 2015, Table 2): conv7 scores upsampled 2x and summed with pool4's.

  python -m segjax.main --config=experiments/fcn16s_vgg16_voc.py --workdir=DIR --config.init_from=FCN32S_DIR

Paper row: CVPR 2015 Table 2, FCN-16s: 62.4 mean IU on seg11valid (FCN-32s 59.4, FCN-8s 62.7). The paper trains it
from the FCN-32s run (Sec. 4.2: the pool4 score layer starts at zero, the 2x upsampling as bilinear): init_from a
`fcn32s_vgg16_voc.py` workdir's converted weights, or from VGG16_DIR for one run. The data, schedule and
differences are those of `fcn8s_vgg16_voc.py`; the staged network has no Scale layer on pool4.
Needs VOC 2012 and SBD in `config.dataset.root` and `config.dataset.sbd_root` and an accelerator.
"""
from experiments import fcn8s_vgg16_voc


def get_config():
  config = fcn8s_vgg16_voc.get_config()
  config.model.skips = ("pool4",)
  del config.model.skip_scales
  return config
