"""Iterative Instance Segmentation (Li, Hariharan & Malik 2016) on a narrow ResNet-18-FPN Mask R-CNN, trained from
scratch on the synthetic data (not a paper row).

  python -m segjax.main --config=experiments/demo_iterative_instance.py --workdir=workdirs/demo_iterative_instance

demo_mask_rcnn.py's detector and schedule with the iterative mask head (segjax/models/iterative_instance.py): f reads
each box's hypercolumn (RoIAlign 14 x 14 from P2..P5) and the previous labelling of the box, trained on the
labellings of N = 3 stages and applied M = 3 times from 1/2 at test (`--config.model.test_iterations` sets M for an
evaluate-only run of the same checkpoint). COCO evaluation with pycocotools (box_AP, mask_AP in metrics.jsonl).
demo_mask_rcnn.py, the same detector and schedule with the plain mask head, is the baseline to compare with.
"""
from experiments import demo_mask_rcnn
from segjax.models import iterative_instance


def get_config():
  config = demo_mask_rcnn.get_config()  # its detector, batch and AdamW schedule
  model = iterative_instance.model_config()
  model.update({k: v for k, v in config.model.items() if k != "name"})
  model.update({"train_stages": 3, "test_iterations": 3})
  config.model = model
  return config
