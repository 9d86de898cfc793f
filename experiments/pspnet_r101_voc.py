"""PSPNet, ResNet-101, PASCAL VOC 2012 (Zhao et al. CVPR 2017, Table 6).

  python -m segjax.main --config=experiments/pspnet_r101_voc.py --workdir=DIR --config.init_from=R101_DIR

Paper rows (Table 6, PASCAL VOC 2012 test, mean IoU): PSPNet 82.6 without MS-COCO pre-training, PSPNet pre-trained on
MS-COCO 85.4 (hszhao/PSPNet README at 13096c095e5d0784f95654d45f0aef6a434b06a2: the released pspnet101_VOC2012 model,
85.41 multi-scale on the test set). This config is the 82.6 row's recipe: ImageNet ResNet-101, then VOC 2012 with
SBD (train_aug, 10,582 images).
Model: dilated ResNet-101 at output stride 8, pyramid pooling with bins (1, 2, 3, 6), deep supervision on res4b22
with weight 0.4 (segjax/models/pspnet.py).
Schedule (Sec. 4.1): SGD momentum 0.9, weight decay 1e-4, poly learning rate from 0.01 with power 0.9, batch 16, 30k
iterations on VOC; augmentation: random mirror, random scale 0.5-2.0, random rotation -10 to 10 degrees, random
Gaussian blur; 473x473 crops (the released code's). Start from ImageNet weights: `scripts/convert_weights.py --name
resnet101 ...` then `--config.init_from=R101_DIR`.
Differences: as experiments/pspnet_r50_ade20k.py (torchvision's ResNet stem and stride placement, no rotation or
blur, images fitted into 473x473 before scaling, one single-scale evaluation where the test-set numbers are
multi-scale with flips); the test set is scored by the VOC server, so the loop evaluates on val.
Needs VOC 2012 and SBD in `config.dataset.root` and `config.dataset.sbd_root` and an accelerator.
"""
import ml_collections

from segjax.config import base_config


def get_config():
  config = base_config()
  config.batch_size = 16
  config.total_steps = 30_000
  config.eval_every_steps = 5_000
  config.checkpoint_every_steps = 2_000
  config.model = ml_collections.ConfigDict({
      "name": "pspnet", "depth": 101, "width": 64, "output_stride": 8, "bins": (1, 2, 3, 6), "aux": True,
      "aux_weight": 0.4, "dtype": "float32"})
  config.dataset.name = "voc"
  config.dataset.root = "~/data/VOCdevkit"
  config.dataset.train_split = "train_aug"
  config.dataset.eval_split = "val"
  config.dataset.image_size = (473, 473)
  config.dataset.augment.scale_range = (0.5, 2.0)
  config.dataset.augment.flip = True
  config.optimizer.name = "sgd"
  config.optimizer.learning_rate = 0.01
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 1e-4
  config.optimizer.schedule = "poly"
  config.optimizer.power = 0.9
  return config
