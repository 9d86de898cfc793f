"""Deep Watershed Transform on Cityscapes instance-level segmentation (Bai & Urtasun, CVPR 2017).

  python -m segjax.main --config=experiments/deep_watershed_cityscapes.py --workdir=DIR \
      --config.dataset.root=~/data/cityscapes

Published: AP 19.4 on the Cityscapes test set (the paper's Table 1; the figure later comparison tables cite for
DWT).
Recipe of the paper: a PSPNet semantic segmentation gates the input; the Direction Network (VGG-16 based) and the
Watershed Transform Network are pre-trained separately, then fine-tuned end to end. The authors' post-processing
(repository min2209/dwt, E2E/post_process.py) cuts above level 1 for person, rider, bicycle and motorcycle and above
level 2 for vehicles. The Cityscapes AP and AP50 are the benchmark's (segjax.evaluation.cityscapes_instances,
reported as cityscapes_AP*).
Differences, stated: segjax's three U-Nets are trained from scratch and jointly, with a class-agnostic foreground in
place of PSPNet's 8 thing classes; instances carry label 1, so the class-agnostic mask_AP_agnostic is the metric
to read (label 1 is the data set's first class, person, so cityscapes_AP scores every instance as a person); one
cut level for all classes.
Needs Cityscapes in `config.dataset.root` and an accelerator.
"""
import ml_collections

from experiments import demo_watershed


def get_config():
  config = demo_watershed.get_config()
  config.batch_size = 8
  config.total_steps = 100_000
  config.log_every_steps = 50
  config.eval_every_steps = 10_000
  config.checkpoint_every_steps = 5_000
  config.model.width = 32
  config.model.head_width = 32
  config.model.cut_level = 1
  config.model.min_area = 20  # the authors' smallest person component (E2E/post_process.py MIN_SIZE)
  config.model.max_detections = 100
  config.dataset = ml_collections.ConfigDict(dict(config.dataset))
  config.dataset.name = "cityscapes_instances"
  config.dataset.root = "~/data/cityscapes"
  config.dataset.train_split = "train"
  config.dataset.eval_split = "val"
  config.dataset.image_size = (512, 1024)
  config.dataset.max_instances = 100
  config.dataset.augment = ml_collections.ConfigDict({"scale_range": (0.9, 1.1), "flip": True})
  config.optimizer.name = "adamw"  # with weight_decay 0: Adam
  config.optimizer.learning_rate = 1e-4
  config.optimizer.weight_decay = 0.0
  config.optimizer.schedule = "constant"
  config.optimizer.warmup_steps = 0
  return config
