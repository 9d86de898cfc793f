"""FCIS on a narrow ResNet-18, trained from scratch on the synthetic data (not a paper row).

  python -m segjax.main --config=experiments/demo_fcis.py --workdir=workdirs/demo_fcis

The FCIS of segjax/models/fcis.py (inside / outside position-sensitive score maps, assembling, joint mask and class
scores, mask voting) on 2 CPU cores, with the data, batch, optimizer and anchors of
experiments/demo_mask_rcnn.py. Scaled to 128 x 128 images: C4 and C5 at stride 8 (output_stride 8, the paper's 16
on 600 px images), k = 3 cells of 5 x 5 bins (M = 15) instead of k = 7, M = 21, each bin of 2 x 2 bilinear samples
(ps_pooler "align") instead of the average over integer bins, which on maps of stride 8 makes masks of 8 px
blocks, a balanced sample of 64 RoIs instead of OHEM, mask voting on a 30 x 30 grid (vote_size, twice M;
the reference votes at image pixels). Target: mask_AP >= 0.4 on the synthetic validation split.
"""
from experiments import demo_mask_rcnn
from segjax.models import fcis


def get_config():
  config = demo_mask_rcnn.get_config()
  config.model = fcis.model_config()
  config.model.update({
      "depth": 18, "width": 16, "norm": "batch", "output_stride": 8, "head_channels": 128, "ps_size": 3,
      "roi_size": 15, "ps_pooler": "align", "sampling_ratio": 2, "anchor_sizes": ((8, 16, 32, 64, 128),),
      "rpn_pre_nms_top_n_train": 1000, "rpn_post_nms_top_n_train": 300, "rpn_pre_nms_top_n_test": 500,
      "rpn_post_nms_top_n_test": 150, "ohem": False, "roi_batch_size_per_image": 64, "detection_candidates": 500,
      "detections_per_image": 30, "vote_size": 30})
  return config
