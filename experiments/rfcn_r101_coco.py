"""R-FCN, ResNet-101, multi-scale training, COCO (Dai et al. 2016, Table 6).

  python -m segjax.main --config=experiments/rfcn_r101_coco.py --workdir=workdirs/rfcn_r101_coco \\
      --config.dataset.root=~/data/coco --config.init_from=R101_DIR

Published (Table 6, "R-FCN multi-sc train", trained on COCO trainval): 29.9 AP (51.9 AP@0.5) on test-dev at
0.17 s/img; single-scale training gives 29.2 there. Here train2017 (about trainval35k) trains and val2017 is scored
with pycocotools (box_AP in metrics.jsonl): test-dev has no public annotations. The model is registered as
"rfcn_coco" (segjax/models/rfcn_coco.py: the R-FCN of segjax/models/rfcn.py as an instance model, crowds left out of
training, boxes filled as masks). Recipe (Sec. 4.2): 8 images per step, lr 0.001 for 90k steps and 0.0001 for 30k
more, SGD momentum 0.9, weight decay 5e-4, OHEM (128 of 300 RoIs), flips; multi-scale training draws the short side
from {400, 500, 600, 700, 800} and tests at 600. Here every batch is 608 x 1008 (COCO's 640 x 480 images fitted to a
short side of about 600) and training scales each fitted image by a factor in [2/3, 4/3] (short sides about 400 to
800), cropping what exceeds the batch's size. Anchors: four sizes, 64 to 512, at stride 16 (one smaller than VOC's,
for COCO's small objects). The RPN and R-FCN are trained jointly, not in the paper's 4-step alternation.
Needs COCO 2017 in `config.dataset.root` and an accelerator.
"""
import ml_collections

from segjax.config import base_config
from segjax.models import rfcn


def get_config():
  config = base_config()
  config.batch_size = 8
  config.total_steps = 120_000
  config.log_every_steps = 20
  config.eval_every_steps = 30_000
  config.checkpoint_every_steps = 5_000
  config.model = rfcn.model_config()
  config.model.name = "rfcn_coco"
  config.model.anchor_sizes = ((64, 128, 256, 512),)
  config.dataset.name = "coco"
  config.dataset.root = "~/data/coco"
  config.dataset.image_size = (608, 1008)
  config.dataset.max_instances = 100
  config.dataset.augment = ml_collections.ConfigDict({"scale_range": (2 / 3, 4 / 3), "flip": True})
  config.optimizer.name = "sgd"
  config.optimizer.frozen = (r"backbone/(conv1|bn1|layer1_)",)  # conv1 and res2, as the released R-FCN
  config.optimizer.learning_rate = 1e-3
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 5e-4
  config.optimizer.schedule = "step"
  config.optimizer.decay_steps = (90_000,)
  config.optimizer.decay_factor = 0.1
  config.optimizer.warmup_steps = 0
  return config
