"""Faster R-CNN, VGG-16, PASCAL VOC 2007 trainval, evaluated on VOC 2007 test (Ren et al. 2015, Table 3).

  python -m segjax.main --config=experiments/faster_rcnn_vgg16_voc07.py --workdir=DIR \
      --config.dataset.root=~/data/VOCdevkit

Published (Table 3, RPN + VGG-16, shared features, "07" training data): 69.9 mAP on VOC 2007 test; 73.2 with
"07+12" (`--config.dataset.train_split=0712_trainval`). voc07_mAP in metrics.jsonl is that metric (11-point AP,
difficult objects ignored). The network is py-faster-rcnn's VGG16 end2end (segjax.models.faster_rcnn, backbone
"vgg16": RPN with 9 anchors on conv5_3, RoI max pooling 7x7, fc6/fc7 4096 with dropout 0.5); its recipe: one image
per step, SGD momentum 0.9, weight decay 5e-4, lr 1e-3 for 50k steps then 1e-4 to 70k, horizontal flips, difficult
objects left out of training, conv1 and conv2 frozen. Differences, stated: every batch is one static shape
(608 x 1008): images are fitted into it keeping their aspect ratio (py-faster-rcnn: short side 600, long side at
most 1000); the paper starts from ImageNet VGG-16 including fc6/fc7, and segjax's converted VGG-16
(scripts/convert_weights.py, FCN's layout) holds fc6/fc7 as convolutions, which this trunk lacks, so it does not load
as init_from: started from scratch this config will not reach the paper's number.
Needs VOC 2007 in `config.dataset.root` and an accelerator.
"""
import ml_collections

from segjax.config import base_config
from segjax.models import faster_rcnn


def get_config():
  config = base_config()
  config.batch_size = 1
  config.total_steps = 70_000
  config.log_every_steps = 20
  config.eval_every_steps = 10_000
  config.checkpoint_every_steps = 5_000
  config.model = faster_rcnn.model_config("vgg16")
  config.dataset.name = "voc"
  config.dataset.detection = True
  config.dataset.root = "~/data/VOCdevkit"
  config.dataset.train_split = "2007_trainval"
  config.dataset.eval_split = "2007_test"
  config.dataset.image_size = (608, 1008)
  config.dataset.max_instances = 64  # every object of a VOC image (at most 56 in 2012 trainval, 41 in 2007 test)
  config.dataset.augment = ml_collections.ConfigDict({"scale_range": (1.0, 1.0), "flip": True, "translate": 0.0,
                                                      "exposure": 1.0, "saturation": 1.0})
  config.optimizer.name = "sgd"
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 5e-4
  config.optimizer.learning_rate = 1e-3
  config.optimizer.schedule = "step"
  config.optimizer.decay_steps = (50_000,)
  config.optimizer.decay_factor = 0.1
  config.optimizer.frozen = (r"backbone/conv[12]_",)  # py-faster-rcnn: lr_mult 0 for conv1_x and conv2_x
  return config
