"""Dynamically Instantiated Network, ResNet-101 (Arnab & Torr, CVPR 2017), PASCAL VOC 2012 with SBD's instance
masks, as segjax's Faster R-CNN R101-FPN with a semantic FPN branch and the instance CRF.

  python -m segjax.main --config=experiments/dynamic_instance_voc.py --workdir=DIR \
      --config.dataset.root=~/data/sbd_coco --config.init_from=R101_DIR

Published (Arnab & Torr 2017, VOC 2012 val with SBD's instance annotations): AP^r 61.7 at IoU 0.5 and AP^r_vol 55.5;
unverified (the numbers come from the task statement; the paper's text was not available here). The data: SBD's
inst/ and cls/ masks converted to a COCO-format folder (root/train, root/val and their
annotations/instances_{train,val}.json, 20 thing categories), read by dataset name "coco". Differences, stated: the
paper's semantic subnetwork is a pretrained FCN-style network and its detector a separately trained R-FCN that the
instance network does not train; here both are branches of one ResNet-101-FPN trained jointly (Faster R-CNN's
losses, the semantic cross entropy, the instance CRF's matched loss), the CRF training on ground-truth boxes
jittered by 10% with score 1 (segjax/models/dynamic_instance.py). AP^r at 0.5 and AP^r_vol are the evaluator's
mask_APr50 and mask_APr_vol (SDS's protocol, segjax/evaluation/voc_regions.py). Recipe (Mask R-CNN's, scaled to
VOC's 5.6k images, as boundary_aware_voc.py; the paper's own schedule is unverified): batch 16, SGD 0.02 with
momentum 0.9, weight decay 1e-4, 18k iterations with x0.1 at 12k and 16k, 500 warm-up iterations, frozen BN in the
ImageNet-initialised backbone (`scripts/convert_weights.py --name resnet101 ...` gives R101_DIR). Needs SBD as that
COCO-format folder in `config.dataset.root` and an accelerator.
"""
import ml_collections

from segjax.config import base_config
from segjax.models import dynamic_instance


def get_config(iterations: int = 18_000, steps: tuple[int, ...] = (12_000, 16_000)):
  config = base_config()
  config.batch_size = 16
  config.total_steps = iterations
  config.log_every_steps = 20
  config.eval_every_steps = iterations // 3
  config.checkpoint_every_steps = 2_000
  config.model = dynamic_instance.model_config()
  config.model.depth = 101
  config.model.detections_per_image = 50
  config.dataset.name = "coco"
  config.dataset.root = "~/data/sbd_coco"
  config.dataset.train_split = "train"
  config.dataset.eval_split = "val"
  config.dataset.image_size = (512, 512)  # VOC images are at most 500 x 500
  config.dataset.max_instances = 64
  config.dataset.augment = ml_collections.ConfigDict({"scale_range": (0.8, 1.0), "flip": True})
  config.optimizer.name = "sgd"
  config.optimizer.frozen = (r"backbone/(conv1|bn1|layer1_)",)  # the stem and res2 (detectron2's FREEZE_AT 2)
  config.optimizer.learning_rate = 0.02
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 1e-4
  config.optimizer.schedule = "step"
  config.optimizer.decay_steps = steps
  config.optimizer.decay_factor = 0.1
  config.optimizer.warmup_steps = 500
  config.optimizer.warmup_factor = 0.001
  return config
