"""Fast YOLO, narrowed, with a convolutional head, trained from scratch on the synthetic data read as a detection set
(not a paper row).

  python -m segjax.main --config=experiments/demo_yolo.py --workdir=workdirs/demo_yolo

The whole detection path on 2 CPU cores: box-only data (the synthetic instances' boxes, crowds as VOC's
"difficult"), YOLO's augmentation, Eq. 3, class-specific confidence + per-class NMS, VOC AP (voc_mAP and
voc07_mAP in metrics.jsonl). Target: voc_mAP >= 0.5 on the synthetic validation split within 15 minutes of 2 CPU
cores.

The 9 convolutions have a quarter of Fast YOLO's filters and batch norm (Darknet's later cfgs; nothing is
pretrained here). On 112x112 inputs the first two poolings are left out, so the last convolution's map is 7x7 as
YOLO's at 448x448. The output is YOLOv2's convolutional head (segjax/models/yolo.py, head="convolutional": a 3x3
convolution of 256 filters, then a 1x1 convolution to the 7x7x(5B + C) values) instead of the paper's two fully
connected layers: on 1000 images from scratch, a dense layer has to learn each of the 49 cells' class and offset
predictions separately, while the convolution shares them across cells, so a short run learns them. The 112x112 set
is written to its own folder: the default root holds the 128x128 set the other demos read, which a different size
would rewrite.
Choices for a short run from scratch: no dropout, running batch statistics with momentum 0.9, so that the
evaluation's statistics follow the network (with Darknet's 0.99 they lag it by a hundred steps), and AdamW at 3e-3
with a cosine decay.
"""
import ml_collections

from segjax.config import base_config
from segjax.models import yolo


def get_config():
  config = base_config()
  config.batch_size = 16
  config.total_steps = 1200
  config.log_every_steps = 50
  config.eval_every_steps = 400
  config.checkpoint_every_steps = 1200
  config.model = yolo.model_config("fast_yolo")
  # 112x112 images without the first two poolings: a 7x7 final map, as YOLO's 448x448 gives.
  config.model.update({"width_multiplier": 0.25, "head": "convolutional", "hidden_units": 256, "batch_norm": True,
                       "skip_pools": 2, "dropout_rate": 0.0, "batch_norm_momentum": 0.9})
  config.dataset.image_size = (112, 112)
  config.dataset.root = "~/.cache/segjax/synthetic_112"
  config.dataset.detection = True
  config.dataset.augment = ml_collections.ConfigDict({"scale_range": (0.8, 1.2), "flip": True, "translate": 0.2,
                                                      "exposure": 1.5, "saturation": 1.5})
  config.optimizer.name = "adamw"
  config.optimizer.learning_rate = 3e-3
  config.optimizer.weight_decay = 1e-4
  config.optimizer.schedule = "cosine"
  config.optimizer.warmup_steps = 50
  return config
