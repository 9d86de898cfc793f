"""Boundary-aware instance segmentation, ResNet-101 (Hayder, He & Salzmann, CVPR 2017), PASCAL VOC 2012 with SBD's
instance masks, as segjax's Mask R-CNN R101-FPN with the boundary-aware mask branch.

  python -m segjax.main --config=experiments/boundary_aware_voc.py --workdir=DIR \
      --config.dataset.root=~/data/sbd_coco --config.init_from=R101_DIR

Published (Hayder et al. 2017, SBD's instance annotations of VOC 2012: train 5,623 images, val 5,732, mAP^r at IoU
0.5 and 0.7): not verified here, so no numbers are quoted. The data: SBD's inst/ and cls/ masks converted to a
COCO-format folder (root/train, root/val and their annotations/instances_{train,val}.json, 20 thing categories),
read by dataset name "coco". Mask representation: K = 5 bins, truncation R = 5 (the values the task names as the
paper's; not checked against its text). Differences, stated: the paper builds on MNC's cascade (RPN, RoI warping on
an enlarged box, Object Mask Network with a residual-deconvolution decoder trained end to end) on ResNet-101; this
config runs Mask R-CNN's FPN detector and mask head with K maps per class, decodes them exactly after a 0.5
threshold and pastes the grid padded by R cells; mAP^r at 0.5 / 0.7 are the evaluator's mask_APr50 / mask_APr70
(SDS's protocol, segjax/evaluation/voc_regions.py). Recipe (Mask R-CNN's, scaled to VOC's 5.6k images): batch 16,
SGD 0.02 with momentum 0.9, weight decay 1e-4, 18k iterations with x0.1 at 12k and 16k, 500 warm-up iterations,
frozen BN in the ImageNet-initialised backbone (`scripts/convert_weights.py --name resnet101 ...` gives R101_DIR).
Needs SBD as that COCO-format folder in `config.dataset.root` and an accelerator.
"""
import ml_collections

from segjax.config import base_config
from segjax.models import boundary_aware


def get_config(iterations: int = 18_000, steps: tuple[int, ...] = (12_000, 16_000)):
  config = base_config()
  config.batch_size = 16
  config.total_steps = iterations
  config.log_every_steps = 20
  config.eval_every_steps = iterations // 3
  config.checkpoint_every_steps = 2_000
  config.model = boundary_aware.model_config()
  config.model.depth = 101
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
