"""Iterative Instance Segmentation, ResNet-101 (Li, Hariharan & Malik, CVPR 2016), PASCAL VOC 2012 with SBD's
instance masks, as segjax's Mask R-CNN R101-FPN with the iterative mask head.

  python -m segjax.main --config=experiments/iterative_instance_voc.py --workdir=DIR \
      --config.dataset.root=~/data/sbd_coco --config.init_from=R101_DIR

Published (Li et al. 2016, abstract of the CVPR version, VOC 2012 val with SBD's instance annotations): mean AP^r
63.6 at IoU 0.5 and 43.3 at IoU 0.7 (the arXiv version's abstract: 63.7 and 42.2); unverified here. They are the
evaluator's mask_APr50 and mask_APr70 (SDS's protocol, segjax/evaluation/voc_regions.py). Differences, stated: the
paper's f is a VGG-16 hypercolumn network fed the image and the previous labelling, on Fast R-CNN's boxes, its stages
trained one after the other; here f is Mask R-CNN's mask head on FPN hypercolumns with the labelling as one more RoI
channel, the N = 3 stages folded into one objective and M = 3 test iterations (segjax/models/iterative_instance.py
states each departure). Data and recipe are boundary_aware_voc.py's (SBD as a COCO-format folder, batch 16, SGD 0.02,
18k iterations with x0.1 at 12k and 16k, frozen stem and res2 in the ImageNet-initialised backbone;
`scripts/convert_weights.py --name resnet101 ...` gives R101_DIR). Needs SBD as that COCO-format folder in
`config.dataset.root` and an accelerator.
"""
from experiments import boundary_aware_voc
from segjax.models import iterative_instance


def get_config():
  config = boundary_aware_voc.get_config()  # SBD's COCO-format folder and the recipe scaled to VOC
  config.model = iterative_instance.model_config()
  config.model.depth = 101
  config.model.update({"train_stages": 3, "test_iterations": 3})
  return config
