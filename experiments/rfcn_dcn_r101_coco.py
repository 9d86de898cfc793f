"""Deformable R-FCN, ResNet-101, COCO (Dai et al. 2017, "Deformable Convolutional Networks").

  python -m segjax.main --config=experiments/rfcn_dcn_r101_coco.py --workdir=workdirs/rfcn_dcn_r101_coco \\
      --config.dataset.root=~/data/coco --config.init_from=R101_DIR

Published (the deck's deformable ConvNets table, R-FCN on COCO test-dev, mAP@[0.5:0.95]): 32.1 for R-FCN with
ResNet-101, 35.7 with deformable convolution in res5 and deformable PS RoI pooling. The model is R-FCN
(segjax/models/rfcn.py, registered as "rfcn_coco") with `deformable_stages` (5,) (res5's three 3x3 convs, offsets
initialised to zero) and `deformable_psroi` (per-bin offsets of every class map and of the box maps, gamma 0.1,
pooled from zero-initialised 1x1 offset convs; 4 x 4 samples per bin as the reference's sample_per_part).
Recipe of the released config (msracver/Deformable-ConvNets,
experiments/rfcn/cfgs/resnet_v1_101_coco_trainval_rfcn_dcn_end2end_ohem.yaml): 8 GPUs x 1 image, short side 600
(long side at most 1000), flips; lr 0.0005 with 1000 warm-up steps from 0.00005, divided by 10 after 5.333 of 8
epochs, OHEM 128 of 300 RoIs, conv1 and res2 frozen, anchors of scales 4, 8, 16, 32 at stride 16 (sizes 64 to
512); test NMS 0.3, 100 detections. It trains on COCO 2014 train + val; here train2017 (about the same images but
minival) trains, 118k steps of 8 images (8 epochs), the decay at step 78.7k, and val2017 is scored with
pycocotools (box_AP in metrics.jsonl): test-dev has no public annotations. Every batch is 608 x 1008. The RPN and
R-FCN are trained jointly, as the released config.
Needs COCO 2017 in `config.dataset.root` and an accelerator.
"""
import ml_collections

from segjax.config import base_config
from segjax.models import rfcn


def get_config():
  config = base_config()
  config.batch_size = 8
  config.total_steps = 118_000
  config.log_every_steps = 20
  config.eval_every_steps = 29_500
  config.checkpoint_every_steps = 5_000
  config.model = rfcn.model_config()
  config.model.update({"name": "rfcn_coco", "anchor_sizes": ((64, 128, 256, 512),), "ps_pooler": "sampled",
                       "sampling_ratio": 4, "deformable_psroi": True, "deformable_stages": (5,)})
  config.dataset.name = "coco"
  config.dataset.root = "~/data/coco"
  config.dataset.image_size = (608, 1008)
  config.dataset.max_instances = 100
  config.dataset.augment = ml_collections.ConfigDict({"scale_range": (1.0, 1.0), "flip": True})
  config.optimizer.name = "sgd"
  config.optimizer.frozen = (r"backbone/(conv1|bn1|layer1_)",)  # conv1 and res2, as the released FIXED_PARAMS
  config.optimizer.learning_rate = 5e-4
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 5e-4
  config.optimizer.schedule = "step"
  config.optimizer.decay_steps = (78_700,)
  config.optimizer.decay_factor = 0.1
  config.optimizer.warmup_steps = 1000
  config.optimizer.warmup_factor = 0.1
  return config
