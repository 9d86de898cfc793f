"""Fast R-CNN on a narrow VGG-16, trained from scratch on the synthetic data read as a detection set (not a paper
row).

  python -m segjax.main --config=experiments/demo_fast_rcnn.py --workdir=workdirs/demo_fast_rcnn

The whole Fast R-CNN path on 2 CPU cores: external proposals in the batch (the stand-in of segjax/data/proposals.py:
jittered ground-truth boxes plus random boxes, drawn per image id, in place of selective search; they make the
validation scores optimistic), hierarchical sampling of 2 images x 64 RoIs (25% foreground, background IoU in
[0.1, 0.5)), RoI max pooling 7x7 on conv5_3, the multi-task loss, per-class NMS and VOC AP (voc_mAP and voc07_mAP in
metrics.jsonl). VGG-16 has an eighth of its filters, fc6/fc7 256 units without dropout; nothing is pretrained.
Truncated SVD of a trained checkpoint (fast_rcnn.truncated_svd, evaluated with model.fc6_rank / fc7_rank set):
ranks 64 / 16 are the paper's fractions, a quarter of fc6's and a sixteenth of fc7's 256 outputs (box head
parameters 875k -> 232k).
"""
from segjax.config import base_config
from segjax.models import fast_rcnn


def get_config():
  config = base_config()
  config.batch_size = 2
  config.total_steps = 1500
  config.log_every_steps = 50
  config.eval_every_steps = 750
  config.checkpoint_every_steps = 750
  config.model = fast_rcnn.model_config()
  config.model.update({"width": 8, "representation_size": 256, "box_head_dropout": 0.0, "detections_per_image": 30})
  config.dataset.detection = True
  config.dataset.num_proposals = 256
  config.optimizer.name = "adamw"
  config.optimizer.learning_rate = 1e-3
  config.optimizer.weight_decay = 1e-4
  config.optimizer.schedule = "cosine"
  config.optimizer.warmup_steps = 50
  return config
