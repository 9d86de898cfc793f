"""SDS, network C with region refinement, AlexNet, PASCAL VOC 2012 with SBD's instance masks (Hariharan et al. 2014).

  python -m segjax.main --config=experiments/sds_alexnet_voc.py --workdir=DIR --config.dataset.root=~/data/voc12_sbd_coco

Published (the paper's SDS results on VOC 2012 val, "C+ref": network C with region refinement): AP^r at 0.5 = 49.7;
the AP^r at 0.7 and AP^r_vol rows are not checked here, so not quoted. They are the evaluator's mask_APr50,
mask_APr70 and mask_APr_vol (SDS's protocol, segjax/evaluation/voc_regions.py). The network is segjax.models.sds:
every region's box dilated for 16 pixels of context and warped to 227 x 227 (the box pathway) and the same warp with
the background set to the mean (the region pathway), two AlexNets (segjax.backbones.alexnet) with fc6/fc7 4096 and
dropout 0.5, the concatenated fc7 scored by a 21-way softmax, fine-tuned jointly on 128 regions per minibatch (here
2 images x 64), 25% foreground at region overlap >= 0.5, SGD with lr 1e-3 (the reference's
pascal_finetune_solver.prototxt: momentum 0.9, weight decay 5e-4, x0.1 steps); the refinement's 10 x 10 grid and its
per-pixel combination train with it on regions overlapping an object by >= 0.7. The region candidates are the
paper's: the first 2000 of MCG's candidates per image, read from MCG's candidate files (one .mat per image:
segjax/data/region_candidate_files.py) in dataset.region_proposal_dirs; scripts/region_candidates.py writes
selective search's regions in the same layout where MCG's are not at hand (then the AP^r is not the paper's
measure). Differences, stated: the detections are scored by the fine-tuned softmax, not by the paper's per-class
SVMs on the concatenated fc7 (sds.region_features gives those features; segjax.ops.svm trains such SVMs); the second
refinement stage decides pixels, not MCG's superpixels; the AlexNets start from scratch (the paper: ImageNet
weights, then network B as the region pathway's start) and have no local response normalisation; the schedule (lr
x0.1 at 30k of 40k steps) is this config's. Every region is two AlexNet passes: 2000 per test image, and each
image's 2000 masks cross as 2000 x 500 x 500 bits.
Needs VOC 2012 train / val with SBD's instance masks as a COCO-format folder in `config.dataset.root` (train, val,
annotations/instances_{train,val}.json, 20 thing categories), MCG's candidate files for its images in the folder MCG
in it (`<image name>.mat` each, as MCG's im2mcg_all.m writes them; or scripts/region_candidates.py's) and an
accelerator with room for 2000 masks per image.
"""
import ml_collections

from segjax.config import base_config
from segjax.models import sds


def get_config():
  config = base_config()
  config.batch_size = 2
  config.total_steps = 40_000
  config.log_every_steps = 100
  config.eval_every_steps = 10_000
  config.checkpoint_every_steps = 5_000
  config.model = sds.model_config()
  config.model.roi_batch_size_per_image = 64
  config.dataset.name = "coco"
  config.dataset.root = "~/data/voc12_sbd_coco"
  config.dataset.train_split = "train"
  config.dataset.eval_split = "val"
  config.dataset.image_size = (500, 500)  # VOC images at their own size (at most 500 a side): regions are warped
  config.dataset.max_instances = 64
  config.dataset.num_region_proposals = 2000
  config.dataset.region_proposal_dirs = ml_collections.ConfigDict({"train": "MCG", "val": "MCG"})  # in the root
  config.dataset.augment = ml_collections.ConfigDict({"scale_range": (1.0, 1.0), "flip": True})
  config.optimizer.name = "sgd"
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 5e-4
  config.optimizer.learning_rate = 1e-3
  config.optimizer.schedule = "step"
  config.optimizer.decay_steps = (30_000,)
  config.optimizer.decay_factor = 0.1
  return config
