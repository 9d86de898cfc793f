"""DeepLab-CRF-LargeFOV (DeepLab v1, Chen et al. ICLR 2015), VGG-16, PASCAL VOC 2012.

  python -m scripts.convert_weights --name vgg16_deeplab_largefov --input vgg16-397923af.pth --output VGG_DIR
  python -m segjax.main --config=experiments/deeplab_v1_largefov_crf_voc.py --workdir=DIR --config.init_from=VGG_DIR

Paper rows (Table 1(a), VOC 2012 val, trained on train_aug): DeepLab-LargeFOV 62.25 mIoU, DeepLab-CRF-LargeFOV
67.64 (Table 2: fc6 3x3 at input stride 12, receptive field 224, 20.5M parameters).
Model: "dense_crf" on "deeplab_v1" variant "largefov"; the CRF (10 mean-field iterations) has the cross-validated
values of the released LargeFOV model (deeplab-public: bi_w 4, bi_xy_std 121, bi_rgb_std 5, pos_w 3, pos_xy_std 3).
Start: torchvision's ImageNet VGG-16 with fc6 decimated to 3x3 and fc6/fc7 to 1024 channels (the first command).
Schedule (Sec. 5, released solver): SGD momentum 0.9, weight decay 5e-4, batch 20, lr 1e-3 times 0.1 every 2000
iterations, 6000 iterations; random mirroring.
Differences: no per-layer learning rates (the paper: fc8 x10, biases x2 without weight decay); the loss is on the
logits upsampled to the input size, not on labels subsampled by 8 (see segjax/models/deeplab_v1.py); one image size
for training and evaluation, so training sees whole images fitted into 513 x 513 (the paper: random 321 x 321 crops)
and evaluation pads them to 513 x 513; torchvision's VGG-16 weights (RGB) rather than the Caffe VGG-16 (BGR, mean
subtracted), with images normalised by torchvision's ImageNet mean and std (config.model.pixel_mean / pixel_std).
Needs VOC 2012 and SBD in `config.dataset.root` and `config.dataset.sbd_root` and an accelerator.
"""
import ml_collections

from segjax.config import base_config

CRF = {"num_iterations": 10, "w_bilateral": 4.0, "theta_alpha": 121.0, "theta_beta": 5.0, "w_spatial": 3.0,
       "theta_gamma": 3.0}


def get_config(variant: str = "largefov", crf: dict | None = None):
  config = base_config()
  config.batch_size = 20
  config.total_steps = 6_000
  config.log_every_steps = 20
  config.eval_every_steps = 2_000
  config.checkpoint_every_steps = 1_000
  config.model = ml_collections.ConfigDict({
      "name": "dense_crf",
      "base": {"name": "deeplab_v1", "variant": variant, "width": 64, "dtype": "float32"},
      "crf": crf or CRF})
  config.dataset.name = "voc"
  config.dataset.root = "~/data/VOCdevkit"
  config.dataset.train_split = "train_aug"
  config.dataset.eval_split = "val"
  config.dataset.image_size = (513, 513)
  config.dataset.augment.scale_range = (1.0, 1.0)
  config.dataset.augment.flip = True
  config.optimizer.name = "sgd"
  config.optimizer.learning_rate = 1e-3
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 5e-4
  config.optimizer.schedule = "step"
  config.optimizer.decay_steps = (2_000, 4_000)
  config.optimizer.decay_factor = 0.1
  return config
