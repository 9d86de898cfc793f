"""DeepLab v2 (Chen et al. TPAMI 2017), ResNet-101 with ASPP-L and DenseCRF, PASCAL VOC 2012.

  python -m scripts.convert_weights --name resnet101 --input resnet101-63fe2227.pth --output R101_DIR
  python -m segjax.main --config=experiments/deeplab_v2_r101_aspp_crf_voc.py --workdir=DIR --config.init_from=R101_DIR

Paper rows (Table 4, ResNet-101, VOC 2012 val): MSC + COCO + Aug + ASPP 76.35 mIoU, + CRF 77.69 (without MSC, COCO
and Aug the ResNet-101 baseline is 68.72).
Model: "dense_crf" on "deeplab_v2": ResNet-101 at output stride 8, frozen BN (the released prototxt's
use_global_stats and fixed scale), ASPP-L rates (6, 12, 18, 24) summed, MSC: the network on scales 1, 0.75 and 0.5,
score maps fused by their maximum, a cross entropy on each scale and on the fused map (segjax.layers.multiscale). CRF
(10 iterations): bi_w 4, bi_xy_std 67, bi_rgb_std 3, pos_w 3, pos_xy_std 1, the values two ports give for the
released ResNet-101 model (kazuto1011/deeplab-pytorch configs/voc12.yaml and others); the paper gives only the search
(Sec. 4.1).
Start: torchvision's ImageNet ResNet-101 (the first command).
Schedule (Sec. 4.1): SGD momentum 0.9, weight decay 5e-4, batch 10, 20k iterations, "poly" learning rate (power 0.9)
from 1e-3 (the paper's value for its VGG-16 study, Table 1; the ResNet-101 port above uses 2.5e-4); random scaling
0.5-1.5 ("Aug") and mirroring.
Differences: no MS-COCO pre-training, so the comparable row is below 76.35; no per-layer learning rates (the
classifier's x10); torchvision's ResNet layout (stride in the 3x3 conv, res4a/res5a with the previous dilation)
instead of the Caffe ResNet; the loss on logits upsampled to the input size (not labels subsampled by 8); training
sees images fitted into 513 x 513 (the paper: 321 x 321 crops), as evaluation does.
Needs VOC 2012 and SBD in `config.dataset.root` and `config.dataset.sbd_root` and an accelerator.
"""
import ml_collections

from segjax.config import base_config

CRF = {"num_iterations": 10, "w_bilateral": 4.0, "theta_alpha": 67.0, "theta_beta": 3.0, "w_spatial": 3.0,
       "theta_gamma": 1.0}


def get_config():
  config = base_config()
  config.batch_size = 10
  config.total_steps = 20_000
  config.log_every_steps = 20
  config.eval_every_steps = 5_000
  config.checkpoint_every_steps = 1_000
  config.model = ml_collections.ConfigDict({
      "name": "dense_crf",
      "base": {"name": "deeplab_v2", "depth": 101, "width": 64, "norm": "frozen", "output_stride": 8,
               "rates": (6, 12, 18, 24), "dtype": "float32", "scales": (1.0, 0.75, 0.5), "scale_fusion": "max"},
      "crf": CRF})
  config.dataset.name = "voc"
  config.dataset.root = "~/data/VOCdevkit"
  config.dataset.train_split = "train_aug"
  config.dataset.eval_split = "val"
  config.dataset.image_size = (513, 513)
  config.dataset.augment.scale_range = (0.5, 1.5)
  config.dataset.augment.flip = True
  config.optimizer.name = "sgd"
  config.optimizer.learning_rate = 1e-3
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 5e-4
  config.optimizer.schedule = "poly"
  config.optimizer.power = 0.9
  return config
