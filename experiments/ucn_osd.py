"""The Unseen Clustering Network, RGB (Xiang et al. 2020, "Learning RGB-D Feature Embeddings for Unseen Object
Instance Segmentation"), trained on synthetic tabletop scenes and evaluated on OSD.

  python -m segjax.main --config=experiments/ucn_osd.py --workdir=DIR --config.dataset.root=~/data/ucn_coco

Published: unverified; the paper's OSD table (overlap and boundary precision / recall / F-measure) could not be read
here.
Layout and recipe: as experiments/ucn_ocid.py, with root/osd/*.png and root/annotations/instances_osd.json, the
Object Segmentation Database's label images converted with one class-agnostic "object" category, as the eval split.
Needs the Tabletop Object Dataset and OSD in that layout in `config.dataset.root` and an accelerator.
"""
from experiments import ucn_ocid


def get_config():
  config = ucn_ocid.get_config()
  config.dataset.eval_split = "osd"
  return config
