"""FCN-8s, VGG-16, PASCAL VOC (Long et al. 2015, Table 3), as the reference code's all-at-once FCN-8s.

  python -m scripts.convert_weights --name vgg16 --input vgg16.pth --output VGG16_DIR
  python -m segjax.main --config=experiments/fcn8s_vgg16_voc.py --workdir=DIR --config.init_from=VGG16_DIR

(vgg16.pth: torchvision's ImageNet VGG-16 state dict; fc6/fc7 become the 7x7 and 1x1 convolutions, fc8 is dropped.)
Paper row: CVPR 2015 Table 3, FCN-8s: 62.2 mean IU on VOC 2012 test, 62.7 on VOC 2011 test (Table 2: 62.7 on the
seg11valid subset of VOC 2011 val). That FCN-8s was fine-tuned in stages (FCN-32s, then 16s, then 8s, Sec. 4.2).
This config is the released voc-fcn8s-atonce network instead (fcn.berkeleyvision.org: 65.4 mean IU on seg11valid,
staged voc-fcn8s 65.5): all three streams trained in one run from ImageNet VGG-16, pool4 and pool3 multiplied by
the prototxt's fixed Scale layers, 0.01 and 0.0001, before their zero-initialised score layers. One run, because
staging needs three runs and init_from cannot carry FCN-16s's upscore16 into FCN-8s's upscore8.
Schedule: the paper's Sec. 4.3 recipe for a loss averaged over pixels (segjax's fcn.loss): SGD, 20 images a batch,
momentum 0.9, fixed learning rate 1e-4, weight decay 5e-4. The reference code instead sums the loss over pixels
(SoftmaxWithLoss normalize: false) with batch 1, momentum 0.99 and lr 1e-10 (1e-14 for its staged FCN-8s);
that lr is for the sum only, so it is not used here. 15k steps = the at-once solver's 300k images. Whole images
(VOC's are at most 500 x 500) padded to 500 x 500 with VOID, no augmentation (Sec. 4.3: no gain from mirroring or
jittering). The upscore layers stay bilinear (optimizer.frozen): the reference code fixes them (lr_mult 0); the
paper learned them, and the reference README reports no significant difference.
What differs: train_aug (SBD train + val with VOC 2012 train, 10,582 images) rather than SBD train (8,498);
evaluation on VOC 2012 val (1,449 images), not seg11valid; no lr_mult 2 / no weight decay for biases; RGB inputs
normalised by ImageNet's mean and std for torchvision's VGG-16 rather than Caffe's mean-subtracted BGR 0..255; batch
20 needs a device count that divides it (--config.batch_size=16 on 8 devices).
Needs VOC 2012 and SBD in `config.dataset.root` and `config.dataset.sbd_root` (the VOC reader, `config.dataset.name =
"voc"`, is segjax/data/voc.py) and an accelerator.
"""
import ml_collections

from segjax.config import base_config


def get_config():
  config = base_config()
  config.batch_size = 20
  config.total_steps = 15_000
  config.eval_every_steps = 2_500
  config.checkpoint_every_steps = 1_000
  config.model = ml_collections.ConfigDict({
      "name": "fcn", "backbone": "vgg16", "skips": ("pool4", "pool3"), "skip_scales": (0.01, 0.0001),
      "dtype": "float32"})
  config.dataset.name = "voc"
  config.dataset.root = "~/data/VOCdevkit"
  config.dataset.train_split = "train_aug"
  config.dataset.eval_split = "val"
  config.dataset.image_size = (500, 500)
  config.dataset.augment.scale_range = (1.0, 1.0)
  config.dataset.augment.flip = False
  config.optimizer.name = "sgd"
  config.optimizer.learning_rate = 1e-4
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 5e-4
  config.optimizer.schedule = "constant"
  config.optimizer.frozen = (r"upscore",)
  return config
