"""DeepLab v3 going deeper, ResNet-101 with block5..block7 and multi-grid (1, 2, 1), PASCAL VOC 2012 (Chen et al.
2017, Sec. 3.2, Table 3).

  python -m segjax.main --config=experiments/deeplab_v3_cascade_r101_voc.py --workdir=DIR

Paper row (arXiv:1706.05587v3, Table 3, "Employing multi-grid method for ResNet-101 with different number of cascaded
blocks at output stride = 16"): block7 with Multi-Grid (1, 2, 1), 76.66 mIoU on VOC 2012 val, the table's best; the
same network's row in Table 4 (inference strategy) starts from it at output stride 16. Other rows of Tables 2-3 are
`config.model.cascade_blocks` 0..3 (block4..block7) and `config.model.multi_grid` (1, 1, 1), (1, 2, 3), (1, 2, 4),
(2, 2, 2).
Model: ResNet-101 at output stride 16, block4..block7 at rates 2, 4, 8, 16 times the unit rates (1, 2, 1), a 1x1
classifier on block7, no ASPP (segjax/backbones/resnet_cascade.py).
Schedule (Sec. 4): poly learning rate (power 0.9) from 0.007, batch 16, 30k iterations, 513x513 crops, random
scaling 0.5-2.0 and flips, weight decay 1e-4, output stride 16 in training and evaluation.
What differs: the paper's ResNet is TF-slim's (stride in a block's last unit, its ImageNet weights); here block1..4
are torchvision's (stride in the first unit), with the paper's rates, so converted torchvision weights see block4's
first 3x3 conv at rate 2 where their own network had it at stride 2; block5..block7 start from random weights, as
in the paper.
Needs VOC 2012 and SBD in `config.dataset.root` and `config.dataset.sbd_root` (see segjax/data/voc.py) and an
accelerator.
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
      "name": "deeplab_v3", "depth": 101, "width": 64, "output_stride": 16, "multi_grid": (1, 2, 1),
      "head": "cascade", "cascade_blocks": 3, "aux": False, "dtype": "float32"})
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
