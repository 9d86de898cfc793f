"""YOLO v1 on PASCAL VOC 2007+2012 trainval, evaluated on VOC 2007 test (Redmon et al. 2016, Table 1).

  python -m segjax.main --config=experiments/yolo_v1_voc.py --workdir=workdirs/yolo_v1_voc \\
      --config.dataset.root=~/data/VOCdevkit --config.init_from=CONVERTED_DARKNET_DIR

Table 1 row "YOLO", train 2007+2012: 63.4 mAP on VOC 2007 test at 45 FPS (Titan X); voc07_mAP in metrics.jsonl is
that metric (11-point AP, VOC2007's devkit). Recipe (Sec. 2.2): 448x448 input, 135 epochs, batch 64, SGD momentum 0.9,
weight decay 5e-4; the learning rate rises from 1e-3 to 1e-2 over the first epochs (here 2, linearly; the paper does
not say how many), stays 1e-2 to epoch 75, 1e-3 to epoch 105, 1e-4 to 135; dropout 0.5; random scaling and
translation up to 20% and exposure / saturation up to 1.5 in HSV. The paper pretrains the first 20 convolutions on
ImageNet (not done here: pass a converted Darknet checkpoint as init_from, scripts/convert_darknet.py). Images are fitted
keeping their aspect ratio and padded (segjax's one input convention), where Darknet stretches them to 448x448.
Needs VOC 2007 and 2012 in `config.dataset.root` and an accelerator.
"""
import ml_collections

from segjax.config import base_config
from segjax.models import yolo

VOC_0712_TRAINVAL = 16551  # images of VOC2007 trainval + VOC2012 trainval
BATCH = 64
STEPS_PER_EPOCH = VOC_0712_TRAINVAL / BATCH


def voc_yolo_config(name):
  config = base_config()
  config.batch_size = BATCH
  config.total_steps = round(135 * STEPS_PER_EPOCH)
  config.log_every_steps = 100
  config.eval_every_steps = round(15 * STEPS_PER_EPOCH)
  config.checkpoint_every_steps = round(5 * STEPS_PER_EPOCH)
  config.model = yolo.model_config(name)
  config.dataset.name = "voc"
  config.dataset.detection = True
  config.dataset.root = "~/data/VOCdevkit"
  config.dataset.train_split = "0712_trainval"
  config.dataset.eval_split = "2007_test"
  config.dataset.image_size = (448, 448)
  config.dataset.max_instances = 64  # every object of a VOC image (at most 56 in 2012 trainval, 41 in 2007 test)
  config.dataset.augment = ml_collections.ConfigDict({"scale_range": (0.8, 1.2), "flip": False, "translate": 0.2,
                                                      "exposure": 1.5, "saturation": 1.5})
  config.optimizer.name = "sgd"
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 5e-4
  config.optimizer.learning_rate = 1e-2
  config.optimizer.schedule = "step"
  config.optimizer.warmup_steps = round(2 * STEPS_PER_EPOCH)
  config.optimizer.warmup_factor = 0.1  # from 1e-3
  config.optimizer.decay_steps = (round(75 * STEPS_PER_EPOCH), round(105 * STEPS_PER_EPOCH))
  config.optimizer.decay_factor = 0.1
  return config


def get_config():
  return voc_yolo_config("yolo_v1")
