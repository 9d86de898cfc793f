"""PSPNet, ResNet-50, ADE20K (Zhao et al. CVPR 2017, Table 4 row "ResNet50+DA+AL+PSP", Sec. 4.2).

  python -m segjax.main --config=experiments/pspnet_r50_ade20k.py --workdir=DIR

Paper row: dilated ResNet-50 at output stride 8, pyramid pooling with bins (1, 2, 3, 6) and average pooling,
dimension reduction to C/4, deep supervision on res4b22 with weight 0.4, data augmentation: 41.68 mIoU / 80.04 pixel
accuracy on ADE20K val, single scale (42.78 / 80.76 multi-scale; the numbers the released pspnet50_ADE20K Caffe model
gives, hszhao/PSPNet README).
Schedule (Sec. 4.1): SGD momentum 0.9, weight decay 1e-4, poly learning rate from 0.01 with power 0.9, batch 16,
150k iterations on ADE20K, 473x473 crops; augmentation: random mirror, random scale 0.5-2.0, random rotation -10 to
10 degrees, random Gaussian blur. Start from ImageNet weights: `scripts/convert_weights.py --name resnet50 ...` then
`--config.init_from=DIR`.
Differs from the paper: the backbone is torchvision's ResNet-50 (7x7 stem, stride on the 3x3 conv) where the paper's
has a deep 3-conv stem and the stride on the 1x1 conv (see segjax/models/pspnet.py), so the published ImageNet
initialisation and the Caffe models do not carry over. The segjax pipeline does the mirror, the 0.5-2.0 scaling and
the random 473 crop, but neither the rotation nor the blur; it fits each image into 473x473 (aspect kept) before
scaling, and it evaluates once on the fitted, padded image, where the released evaluation (evaluation/eval_all.m,
caffe_process.m) resizes the long side to 512, slides 473 crops, sums the scores of each crop and its left-right flip,
and subtracts the ImageNet mean in 0-255 units.
Needs ADE20K in `config.dataset.root` (the ADE20K reader is segjax/data/ade20k.py, `config.dataset.name = "ade20k"`) and
an accelerator.
"""
import ml_collections

from segjax.config import base_config


def get_config():
  config = base_config()
  config.batch_size = 16
  config.total_steps = 150_000
  config.eval_every_steps = 10_000
  config.checkpoint_every_steps = 2_000
  config.model = ml_collections.ConfigDict({
      "name": "pspnet", "depth": 50, "width": 64, "output_stride": 8, "bins": (1, 2, 3, 6), "aux": True,
      "aux_weight": 0.4, "dtype": "float32"})
  config.dataset.name = "ade20k"
  config.dataset.root = "~/data/ADEChallengeData2016"
  config.dataset.train_split = "training"
  config.dataset.eval_split = "validation"
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
