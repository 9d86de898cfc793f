"""GCN + BR, ResNet-152, PASCAL VOC 2012 (Peng et al., Large Kernel Matters, CVPR 2017, Fig. 2 and Sec. 4).

  python -m segjax.main --config=experiments/gcn_r152_voc.py --workdir=DIR

Paper row: ResNet-152 with a GCN (k = 15) and a Boundary Refinement block on each of res2..res5, the Fig. 2
decoder: 82.2 mIoU on the VOC 2012 test set (abstract; the final entry, after three training stages that add MS COCO
and SBD, multi-scale testing and DenseCRF). That number is not what this config can reach: it trains on train_aug
(VOC 2012 + SBD, 10,582 images) from ImageNet weights only and evaluates VOC 2012 val single scale, the setting of the
paper's ablations (Sec. 4.1, images padded to 512 x 512, horizontal flips).
Schedule here (segjax's choice, not the paper's): SGD momentum 0.9, weight decay 1e-4, poly learning rate from 0.007
with power 0.9, batch 16, 30k iterations, 512 x 512, flips. Start from
ImageNet weights: `scripts/convert_weights.py --name resnet152 ...` then `--config.init_from=DIR`.
Differs from the paper: torchvision's ResNet-152 (the paper also pretrains its own "ResNet-GCN" variant, Sec. 4.2,
not built here); the pipeline fits each image into 512 x 512 (VOC images are at most 500 pixels a side, so they are
slightly enlarged) where the paper pads; no DenseCRF or multi-scale testing.
Needs VOC 2012 and SBD in `config.dataset.root` and `config.dataset.sbd_root` (the VOC reader is segjax/data/voc.py,
`config.dataset.name = "voc"`) and an accelerator.
"""
import ml_collections

from segjax.config import base_config


def get_config():
  config = base_config()
  config.batch_size = 16
  config.total_steps = 30_000
  config.eval_every_steps = 5_000
  config.checkpoint_every_steps = 1_000
  config.model = ml_collections.ConfigDict({"name": "gcn", "depth": 152, "width": 64, "kernel_size": 15,
                                            "dtype": "float32"})
  config.dataset.name = "voc"
  config.dataset.root = "~/data/VOCdevkit"
  config.dataset.train_split = "train_aug"
  config.dataset.eval_split = "val"
  config.dataset.image_size = (512, 512)
  config.dataset.augment.scale_range = (1.0, 1.0)
  config.dataset.augment.flip = True
  config.optimizer.name = "sgd"
  config.optimizer.learning_rate = 0.007
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 1e-4
  config.optimizer.schedule = "poly"
  config.optimizer.power = 0.9
  return config
