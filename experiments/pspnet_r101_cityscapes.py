"""PSPNet, ResNet-101, Cityscapes (Zhao et al. CVPR 2017, Table 7).

  python -m segjax.main --config=experiments/pspnet_r101_cityscapes.py --workdir=DIR --config.init_from=R101_DIR

Paper rows (Table 7, Cityscapes test, mean IoU): PSPNet trained on the fine annotations 78.4; trained on fine and
coarse 80.2. The released pspnet101_cityscapes model gives 79.70 mIoU / 96.38 pixel accuracy on val single-scale and
80.91 / 96.59 multi-scale (hszhao/PSPNet README at 13096c095e5d0784f95654d45f0aef6a434b06a2). This config is the
fine-only recipe (train, 2,975 images; segjax/data/cityscapes.py reads gtFine only).
Model: dilated ResNet-101 at output stride 8, pyramid pooling with bins (1, 2, 3, 6), deep supervision on res4b22
with weight 0.4 (segjax/models/pspnet.py).
Schedule (Sec. 4.1): SGD momentum 0.9, weight decay 1e-4, poly learning rate from 0.01 with power 0.9, batch 16, 90k
iterations on Cityscapes; random mirror, scale 0.5-2.0, rotation and blur; 713x713 crops (the released code's). Start
from ImageNet weights: `scripts/convert_weights.py --name resnet101 ...` then `--config.init_from=R101_DIR`.
Differences: as experiments/pspnet_r50_ade20k.py (torchvision's ResNet stem and stride placement, no rotation or
blur); the pipeline's crops are the batch size, so training takes 1024x2048 windows of the scaled images (the paper:
713x713) and evaluation runs once on each full 1024x2048 image (the released evaluation slides 713x713 crops).
Needs Cityscapes in `config.dataset.root` and an accelerator.
"""
import ml_collections

from segjax.config import base_config


def get_config():
  config = base_config()
  config.batch_size = 16
  config.total_steps = 90_000
  config.eval_every_steps = 10_000
  config.checkpoint_every_steps = 2_000
  config.model = ml_collections.ConfigDict({
      "name": "pspnet", "depth": 101, "width": 64, "output_stride": 8, "bins": (1, 2, 3, 6), "aux": True,
      "aux_weight": 0.4, "dtype": "float32"})
  config.dataset.name = "cityscapes"
  config.dataset.root = "~/data/cityscapes"
  config.dataset.train_split = "train"
  config.dataset.eval_split = "val"
  config.dataset.image_size = (1024, 2048)
  config.dataset.augment.scale_range = (0.5, 2.0)
  config.dataset.augment.flip = True
  config.optimizer.name = "sgd"
  config.optimizer.learning_rate = 0.01
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 1e-4
  config.optimizer.schedule = "poly"
  config.optimizer.power = 0.9
  return config
