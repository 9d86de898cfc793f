"""The Unseen Clustering Network, RGB (Xiang et al. 2020, "Learning RGB-D Feature Embeddings for Unseen Object
Instance Segmentation"), trained on synthetic tabletop scenes and evaluated on OCID.

  python -m segjax.main --config=experiments/ucn_ocid.py --workdir=DIR --config.dataset.root=~/data/ucn_coco

Published: unverified; the paper's OCID table (overlap and boundary precision / recall / F-measure of UCN and UCN+
with RGB, depth and RGB-D input) could not be read here.
Layout read (a COCO-format folder, segjax/data/config.py's COCO_LAYOUT): root/tabletop_train/*.png and
root/annotations/instances_tabletop_train.json, the Tabletop Object Dataset of Xie et al. (the authors' training set)
converted with one class-agnostic "object" category, the table merged into the background; root/ocid/*.png and
root/annotations/instances_ocid.json, OCID's label images converted the same way (their objects only).
Recipe of the paper (the authors' seg_resnet34_8s_embedding_cosine_color_tabletop.yml): 64-dimensional unit
embeddings, alpha 0.02, delta 0.5, lambda_intra = lambda_inter = 10, Adam at 1e-5, batch 16; inference by mean shift
with kappa 20 from 100 farthest-point seeds. Differences, stated: segjax's U-Net trunk trained from scratch (the
paper's ResNet-34-8s is ImageNet-pretrained), all pixels of a cluster in the loss (the authors sample 1000 per
cluster), modes merged as scikit-learn's MeanShift; the first stage only (no crop refinement, UCN+); no boundary
F-measure. Evaluation writes overlap_precision / overlap_recall / overlap_F / objects_detected_075
(segjax.evaluation.overlap) next to mask_AP_agnostic.
Needs the Tabletop Object Dataset and OCID in that layout in `config.dataset.root` and an accelerator.
"""
import ml_collections

from experiments import demo_ucn


def get_config():
  config = demo_ucn.get_config()
  config.batch_size = 16
  config.total_steps = 80_000
  config.log_every_steps = 50
  config.eval_every_steps = 10_000
  config.checkpoint_every_steps = 5_000
  config.model.width = 32
  config.model.embedding_dim = 64
  config.model.num_seeds = 100
  config.model.min_area = 200  # pixels at 480 x 640
  config.dataset = ml_collections.ConfigDict(dict(config.dataset))
  config.dataset.name = "coco"
  config.dataset.root = "~/data/ucn_coco"
  config.dataset.train_shapes = ()
  config.dataset.val_shapes = ()
  config.dataset.train_split = "tabletop_train"
  config.dataset.eval_split = "ocid"
  config.dataset.image_size = (480, 640)
  config.dataset.max_instances = 32
  config.dataset.augment = ml_collections.ConfigDict({"scale_range": (1.0, 1.0), "flip": True})
  config.optimizer.name = "adamw"  # with weight_decay 0: Adam
  config.optimizer.learning_rate = 1e-5
  config.optimizer.weight_decay = 0.0
  config.optimizer.schedule = "constant"
  config.optimizer.warmup_steps = 0
  return config
