"""R-FCN, ResNet-101, PASCAL VOC 2007+2012 trainval, evaluated on VOC 2007 test (Dai et al. 2016, Table 4).

  python -m segjax.main --config=experiments/rfcn_r101_voc07.py --workdir=workdirs/rfcn_r101_voc07 \\
      --config.dataset.root=~/data/VOCdevkit --config.init_from=R101_DIR

Published (Table 4, "R-FCN", training data 07+12): 79.5% mAP on VOC 2007 test at 0.17 s/img (one Nvidia K40 GPU);
Faster R-CNN on the same ResNet-101 gives 76.4% at 0.42 s/img there. Metric: voc07_mAP in metrics.jsonl
(11-point AP, VOC2007's devkit). Architecture (segjax/models/rfcn.py): ResNet-101 with conv5 at stride 16 (dilation
2), the RPN on conv4, a 1024-d 1x1 reduction, 7x7 position-sensitive maps for 21 classes and class-agnostic boxes,
300 proposals at test, NMS 0.3. Recipe (Sec. 4.1): 8 images per step (one per GPU), SGD momentum 0.9, weight decay
5e-4, lr 0.001 for 20k steps and 0.0001 for 10k more, OHEM keeping 128 of the 300 RoIs of each image, horizontal
flips, the ImageNet-initialised trunk (`scripts/convert_weights.py --name resnet101 ...` gives R101_DIR) with frozen
batch statistics and conv1 / res2 fixed. The paper trains with the RPN and R-FCN alternating (4 steps); here the
two are trained jointly, as approximate joint training. Images: the paper resizes the short side to 600 (long side at
most 1000); here every batch is 800 x 800 and images are fitted keeping their aspect ratio, which gives VOC's
500 x 375 and 375 x 500 images a short side of 600.
Needs VOC 2007 and 2012 in `config.dataset.root` and an accelerator.
"""
import ml_collections

from segjax.config import base_config
from segjax.models import rfcn

VOC_0712_TRAINVAL = 16551  # images of VOC2007 trainval + VOC2012 trainval


def get_config():
  config = base_config()
  config.batch_size = 8
  config.total_steps = 30_000
  config.log_every_steps = 20
  config.eval_every_steps = 10_000
  config.checkpoint_every_steps = 2_000
  config.model = rfcn.model_config()
  config.dataset.name = "voc"
  config.dataset.detection = True
  config.dataset.root = "~/data/VOCdevkit"
  config.dataset.train_split = "0712_trainval"
  config.dataset.eval_split = "2007_test"
  config.dataset.image_size = (800, 800)
  config.dataset.max_instances = 64  # every object of a VOC image (at most 56 in 2012 trainval, 41 in 2007 test)
  config.dataset.augment = ml_collections.ConfigDict({"scale_range": (1.0, 1.0), "flip": True, "translate": 0.0,
                                                      "exposure": 1.0, "saturation": 1.0})
  config.optimizer.name = "sgd"
  config.optimizer.frozen = (r"backbone/(conv1|bn1|layer1_)",)  # conv1 and res2, as the released R-FCN
  config.optimizer.learning_rate = 1e-3
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 5e-4
  config.optimizer.schedule = "step"
  config.optimizer.decay_steps = (20_000,)
  config.optimizer.decay_factor = 0.1
  config.optimizer.warmup_steps = 0
  return config
