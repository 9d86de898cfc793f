"""Fast YOLO, narrowed, trained from scratch on the synthetic data read as a detection set (not a paper row).

  python -m segjax.main --config=experiments/demo_yolo.py --workdir=workdirs/demo_yolo

The whole detection path on 2 CPU cores: box-only data (the synthetic instances' boxes, crowds as VOC's
"difficult"), YOLO's augmentation, Eq. 3, class-specific confidence + per-class NMS, VOC AP (voc_mAP and
voc07_mAP in metrics.jsonl). The 9 convolutions have a quarter of Fast YOLO's filters and batch norm (Darknet's
later cfgs; nothing is pretrained here), the first fully connected layer 512 units. Target: voc_mAP >= 0.5 on the
synthetic validation split in under 15 minutes.
Measured here: not yet run to completion.
"""
import ml_collections

from segjax.config import base_config
from segjax.models import yolo


def get_config():
  config = base_config()
  config.batch_size = 16
  config.total_steps = 1500
  config.log_every_steps = 50
  config.eval_every_steps = 500
  config.checkpoint_every_steps = 500
  config.model = yolo.model_config("fast_yolo")
  config.model.update({"width_multiplier": 0.25, "hidden_units": 512, "batch_norm": True})
  config.dataset.detection = True
  config.dataset.augment = ml_collections.ConfigDict({"scale_range": (0.8, 1.2), "flip": True, "translate": 0.2,
                                                      "exposure": 1.5, "saturation": 1.5})
  config.optimizer.name = "adamw"
  config.optimizer.learning_rate = 1e-3
  config.optimizer.weight_decay = 1e-4
  config.optimizer.schedule = "cosine"
  config.optimizer.warmup_steps = 100
  return config
