"""Deformable DeepLab, ResNet-101 with deformable res5, PASCAL VOC 2012 (Dai et al. 2017, Deformable ConvNets).

  python -m scripts.convert_weights --name resnet101 --input resnet101-63fe2227.pth --output R101_DIR
  python -m segjax.main --config=experiments/deeplab_dcn_r101_voc.py --workdir=DIR --config.init_from=R101_DIR

Published (msracver/Deformable-ConvNets README, "Main Results", training data VOC 12 train augmented, testing VOC 12
val): DeepLab ResNet-v1-101 70.7 mIoU, Deformable DeepLab 75.9 mIoU (`config.model.deformable_stages = ()` gives
the plain row); the arXiv paper's Table 3 DeepLab rows were not checked here.
Model (deeplab/symbols/resnet_v1_101_deeplab_dcn.py there): ResNet-101 at output stride 16 (res5 dilation 2), the
three 3x3 convs of res5 deformable with zero-initialised offset convs, frozen BN, then the "fc1024" head (1x1 conv to
1024 + ReLU, 1x1 score), logits upsampled x16 bilinearly.
Recipe (experiments/deeplab/cfgs/deeplab_resnet_v1_101_voc12_segmentation_dcn.yaml, deeplab/config/config.py,
deeplab/train.py there): 4 GPUs with one image each, SGD momentum 0.9, weight decay 5e-4, lr 5e-4 for 8 epochs then
5e-5 to epoch 12, conv1 / res2 and every BN fixed, short side 360 (long side at most 600). An epoch there is the set
and its left-right flipped copy, so with train_aug's 10,582 images 12 epochs are 63,492 steps of 4 images and the
decay comes at step 42,328; here each image is flipped with probability 1/2 instead.
Differences: the reference sums the 4 GPUs' gradients (rescale_grad 1, each image's loss averaged over its own valid
pixels), so this config's mean loss takes lr 4 x 5e-4 and weight decay 5e-4 / 4 (the same update); no lr x2 on
biases; torchvision's ImageNet ResNet-101 with its mean/std instead of the converted Caffe ResNet-v1-101 with BGR means;
images fitted into 480 x 480 (VOC's 500 x 375 images get the short side 360) and padded; the offset convs take the
deformable conv's dilation (the paper's rule; the reference code gives them dilation 1); the reference's fixed
bilinear deconvolution zero-pads the score map where this clamps at the border.
Needs VOC 2012 and SBD in `config.dataset.root` and `config.dataset.sbd_root` and an accelerator.
"""
import ml_collections

from segjax.config import base_config

VOC_TRAIN_AUG = 10_582
STEPS_PER_EPOCH = 2 * VOC_TRAIN_AUG // 4  # the set and its flipped copy, 4 images a step


def get_config():
  config = base_config()
  config.batch_size = 4
  config.total_steps = 12 * STEPS_PER_EPOCH
  config.log_every_steps = 20
  config.eval_every_steps = STEPS_PER_EPOCH
  config.checkpoint_every_steps = 2_000
  config.model = ml_collections.ConfigDict({
      "name": "deeplab_v3", "depth": 101, "width": 64, "output_stride": 16, "multi_grid": None,
      "deformable_stages": (5,), "norm": "frozen", "head": "fc1024", "aux": False, "dtype": "float32"})
  config.dataset.name = "voc"
  config.dataset.root = "~/data/VOCdevkit"
  config.dataset.train_split = "train_aug"
  config.dataset.eval_split = "val"
  config.dataset.image_size = (480, 480)
  config.dataset.augment.scale_range = (1.0, 1.0)
  config.dataset.augment.flip = True
  config.optimizer.name = "sgd"
  config.optimizer.frozen = (r"backbone/(conv1|bn1|layer1_)",)  # conv1 and res2, as the reference's FIXED_PARAMS
  config.optimizer.learning_rate = 4 * 5e-4
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 5e-4 / 4
  config.optimizer.schedule = "step"
  config.optimizer.decay_steps = (8 * STEPS_PER_EPOCH,)
  config.optimizer.decay_factor = 0.1
  config.optimizer.warmup_steps = 0
  return config
