"""Deformable DeepLab, ResNet-101 with deformable res5, Cityscapes (Dai et al. 2017, Deformable ConvNets).

  python -m scripts.convert_weights --name resnet101 --input resnet101-63fe2227.pth --output R101_DIR
  python -m segjax.main --config=experiments/deeplab_dcn_r101_cityscapes.py --workdir=DIR --config.init_from=R101_DIR

Published (msracver/Deformable-ConvNets README, "Main Results", training data Cityscapes train, testing Cityscapes
val): DeepLab ResNet-v1-101 70.3 mIoU, Deformable DeepLab 75.2 mIoU (`config.model.deformable_stages = ()` gives
the plain row); the arXiv paper's Table 3 DeepLab rows were not checked here.
Model: that of experiments/deeplab_dcn_r101_voc.py (deformable res5 at output stride 16, frozen BN, "fc1024" head)
with 19 classes.
Recipe (experiments/deeplab/cfgs/deeplab_resnet_v1_101_cityscapes_segmentation_dcn.yaml and deeplab/train.py there):
4 GPUs with one image each, SGD momentum 0.9, weight decay 5e-4, 1000 warm-up steps at lr 5e-5, lr 5e-4 to epoch
40.336, then 5e-5 to epoch 53, conv1 / res2 and every BN fixed, full-resolution images (short side 1024, long side at
most 2048) cropped to 768 x 1024, flips. An epoch there is the set and its flipped copy: 2 x 2975 / 4 = 1487.5 steps,
so the decay comes at step 59,999 and training ends at 78,838.
Differences: the lr and weight decay take the gradient sum over 4 GPUs into a mean (lr x 4, weight decay / 4; see
experiments/deeplab_dcn_r101_voc.py, which also lists the model differences); the warm-up rises linearly from
0.1 x the rate instead of staying there; training sees whole 1024 x 2048 images, not 768 x 1024 crops.
Needs Cityscapes in `config.dataset.root` and an accelerator.
"""
from experiments import deeplab_dcn_r101_voc

CITYSCAPES_TRAIN = 2975
STEPS_PER_EPOCH = 2 * CITYSCAPES_TRAIN / 4  # the set and its flipped copy, 4 images a step


def get_config():
  config = deeplab_dcn_r101_voc.get_config()
  config.total_steps = round(53 * STEPS_PER_EPOCH)
  config.eval_every_steps = 10_000
  config.dataset.name = "cityscapes"
  config.dataset.root = "~/data/cityscapes"
  config.dataset.train_split = "train"
  config.dataset.eval_split = "val"
  config.dataset.image_size = (1024, 2048)
  config.optimizer.decay_steps = (int(40.336 * STEPS_PER_EPOCH),)
  config.optimizer.warmup_steps = 1000
  config.optimizer.warmup_factor = 0.1
  return config
