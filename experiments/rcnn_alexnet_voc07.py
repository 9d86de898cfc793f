"""R-CNN, AlexNet, PASCAL VOC 2007 trainval, evaluated on VOC 2007 test (Girshick et al. 2014, Table 2).

  python -m segjax.main --config=experiments/rcnn_alexnet_voc07.py --workdir=DIR --config.dataset.root=~/data/VOCdevkit

Published (Table 2, "R-CNN FT fc7 BB": fine-tuned AlexNet, SVMs on fc7, box regression): 58.5 mAP on VOC 2007 test;
54.2 without box regression ("R-CNN FT fc7"). The network is segjax.models.fast_rcnn with name "rcnn": every proposal
dilated for 16 pixels of context and warped to 227x227 (Appendix A), AlexNet conv1..pool5 (segjax.backbones.alexnet),
fc6/fc7 4096 with dropout 0.5 and a K+1 softmax. What this config trains is the paper's fine-tuning (Sec. 2.3): mini-
batches of 128 regions (here 2 images x 64), 25% positives at IoU >= 0.5 and the rest background, SGD with lr 1e-3;
its voc07_mAP is that of the softmax scores. The post-hoc stages, per-class linear SVMs on fc7 (positives the ground-
truth boxes, negatives below IoU 0.3, hard negative mining) and class-specific ridge box regression (lambda 1000,
proposals with IoU > 0.6), are segjax.ops.svm.train_class_svms and segjax.ops.box_regression.fit_class_box_regressors
on fast_rcnn.roi_features; scripts/rcnn_svm_stage.py trains and scores the SVMs on a trained workdir; no script
applies the box regressors yet (the paper regresses from pool5, which roi_features does not return). Differences,
stated: the proposals are the stand-in of segjax/data/proposals.py (2000 per image, built around the ground truth, so
the test mAP is not the paper's measure) unless config.dataset.proposal_files names selective search's; AlexNet starts
from scratch (no ImageNet weights here) and has no local response normalisation; the schedule (lr x0.1 at 30k of 40k
steps) is this config's, the paper gives only the starting rate. Each region is a full AlexNet pass: 2000 per test
image.
Needs VOC 2007 in `config.dataset.root` and an accelerator.
"""
import ml_collections

from segjax.config import base_config
from segjax.models import fast_rcnn


def get_config():
  config = base_config()
  config.batch_size = 2
  config.total_steps = 40_000
  config.log_every_steps = 100
  config.eval_every_steps = 10_000
  config.checkpoint_every_steps = 5_000
  config.model = fast_rcnn.model_config("rcnn")
  config.dataset.name = "voc"
  config.dataset.detection = True
  config.dataset.root = "~/data/VOCdevkit"
  config.dataset.train_split = "2007_trainval"
  config.dataset.eval_split = "2007_test"
  config.dataset.image_size = (500, 500)  # VOC images at their own size (at most 500 a side): regions are warped
  config.dataset.max_instances = 64
  config.dataset.num_proposals = 2000
  config.dataset.augment = ml_collections.ConfigDict({"scale_range": (1.0, 1.0), "flip": True, "translate": 0.0,
                                                      "exposure": 1.0, "saturation": 1.0})
  config.optimizer.name = "sgd"
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 5e-4
  config.optimizer.learning_rate = 1e-3
  config.optimizer.schedule = "step"
  config.optimizer.decay_steps = (30_000,)
  config.optimizer.decay_factor = 0.1
  return config
