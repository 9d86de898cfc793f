"""Dynamically Instantiated Network (Arnab & Torr 2017) on a narrow ResNet-18-FPN, trained from scratch on the
synthetic data (not a paper row).

  python -m segjax.main --config=experiments/demo_instance_crf.py --workdir=workdirs/demo_instance_crf

demo_mask_rcnn.py's detector (box-only, mask=False) and schedule, plus a 64-wide semantic FPN branch over the
background and the 4 shape classes and the instance CRF on top (segjax/models/dynamic_instance.py): in training its
detections are the ground-truth boxes jittered by 10% with score 1, at inference the detector's 30 best, and each
detection's mask is the pixels the CRF labels with it. COCO evaluation with pycocotools (box_AP, mask_AP in
metrics.jsonl), and PQ over the thing categories (PQ_th, SQ_th, RQ_th): the CRF's labelling is a panoptic map of the
things, scored against the split's COCO panoptic annotations.
"""
from experiments import demo_mask_rcnn
from segjax.models import dynamic_instance


def get_config():
  config = demo_mask_rcnn.get_config()  # its detector, batch and AdamW schedule
  model = dynamic_instance.model_config()
  # The detector's keys; the instance CRF makes the masks (no mask head).
  own = ("name", "mask", "mask_head_channels")
  model.update({k: v for k, v in config.model.items() if k in model and k not in own})
  model.semantic_channels = 64
  config.model = model
  return config
