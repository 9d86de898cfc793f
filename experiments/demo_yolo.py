"""Fast YOLO, narrowed, trained from scratch on the synthetic data read as a detection set (not a paper row).

  python -m segjax.main --config=experiments/demo_yolo.py --workdir=workdirs/demo_yolo

The whole detection path on 2 CPU cores: box-only data (the synthetic instances' boxes, crowds as VOC's
"difficult"), YOLO's augmentation, Eq. 3, class-specific confidence + per-class NMS, VOC AP (voc_mAP and
voc07_mAP in metrics.jsonl). The 9 convolutions have a quarter of Fast YOLO's filters and batch norm (Darknet's
later cfgs; nothing is pretrained here), the first fully connected layer 512 units; on 112x112 inputs the first two
poolings are left out, so the last convolution's map is 7x7 as YOLO's at 448x448. Target: voc_mAP >= 0.5 on the
synthetic validation split in under 15 minutes.
Measured here (the command above, eval at step 500): voc_mAP 0.002, voc07_mAP 0.023; the target is not reached: the
training loss stays at the level of predicting the mean box and class, so the network has not learnt to localise or
classify.
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
  # 112x112 images without the first two poolings: a 7x7 final map, as YOLO's 448x448 gives.
  config.model.update({"width_multiplier": 0.25, "hidden_units": 512, "batch_norm": True, "skip_pools": 2})
  config.dataset.image_size = (112, 112)
  config.dataset.detection = True
  config.dataset.augment = ml_collections.ConfigDict({"scale_range": (0.8, 1.2), "flip": True, "translate": 0.2,
                                                      "exposure": 1.5, "saturation": 1.5})
  config.optimizer.name = "adamw"
  config.optimizer.learning_rate = 1e-3
  config.optimizer.weight_decay = 1e-4
  config.optimizer.schedule = "cosine"
  config.optimizer.warmup_steps = 100
  return config
