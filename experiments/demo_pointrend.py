"""PointRend on a narrow ResNet-18-FPN, trained from scratch on the synthetic data (not a paper row).

  python -m segjax.main --config=experiments/demo_pointrend.py --workdir=workdirs/demo_pointrend

experiments/demo_mask_rcnn.py with PointRend's mask branch (coarse 7x7 head, point head, adaptive subdivision to
224 x 224) in place of the 28 x 28 mask head: the same detector, data, schedule and steps, so mask AP75 and Boundary
AP (boundary_AP, segjax/evaluation/boundary.py) of the two compare the mask heads. Target: boundary_AP above
demo_mask_rcnn's at the same steps.
"""
from experiments import demo_mask_rcnn
from segjax.models import pointrend


def get_config():
  config = demo_mask_rcnn.get_config()
  detector = config.model
  config.model = pointrend.model_config()
  config.model.update({k: detector[k] for k in detector if k != "name"})
  config.model.update({"coarse_fc_dim": 256, "point_fc_dim": 64})
  return config
