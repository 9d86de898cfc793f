"""DeepLab v3, ResNet-101, output stride 16, PASCAL VOC 2012 (Chen et al. 2017, Table 4 / Sec. 4.3).

  python -m segjax.main --config=experiments/deeplab_v3_r101_voc.py --workdir=DIR

Paper row: ResNet-101, multi-grid (1, 2, 4), ASPP rates (6, 12, 18) with image pooling, output stride 16 for
training and evaluation, single scale, no flip: 77.21 mIoU on VOC 2012 val (trained on train_aug).
Schedule (Sec. 4): poly learning rate (power 0.9) from 0.007, batch 16, 30k iterations, 513x513 crops,
random scaling 0.5-2.0 and flips, weight decay 1e-4, BN fine-tuned with decay 0.9997.
Start from ImageNet weights: `scripts/convert_weights.py --name resnet101 ...` then
`--config.init_from=DIR`.
Needs VOC 2012 and SBD in `config.dataset.root` and `config.dataset.sbd_root` (see segjax/data/voc.py) and an
accelerator. Multi-grid here gives rates (1, 4, 8) in the last stage, not the paper's (2, 4, 8): torchvision's layout
keeps the previous dilation in a stage's first block (see segjax/backbones/resnet.py).
"""
import ml_collections

from segjax.config import base_config


def get_config():
  config = base_config()
  config.batch_size = 16
  config.total_steps = 30_000
  config.eval_every_steps = 5_000
  config.checkpoint_every_steps = 1_000
  config.model = ml_collections.ConfigDict({
      "name": "deeplab_v3", "depth": 101, "width": 64, "output_stride": 16, "multi_grid": (1, 2, 4),
      "head": "aspp", "rates": (6, 12, 18), "aux": False, "aux_weight": 0.5, "dtype": "float32"})
  config.dataset.name = "voc"
  config.dataset.root = "~/data/VOCdevkit"
  config.dataset.train_split = "train_aug"
  config.dataset.eval_split = "val"
  config.dataset.image_size = (513, 513)
  config.dataset.augment.scale_range = (0.5, 2.0)
  config.optimizer.name = "sgd"
  config.optimizer.learning_rate = 0.007
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 1e-4
  config.optimizer.schedule = "poly"
  config.optimizer.power = 0.9
  return config
