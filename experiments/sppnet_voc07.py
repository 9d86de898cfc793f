"""SPP-net, ZF-5, PASCAL VOC 2007 trainval, evaluated on VOC 2007 test (He et al. 2014, Sec. 4, Table 9).

  python -m segjax.main --config=experiments/sppnet_voc07.py --workdir=DIR --config.dataset.root=~/data/VOCdevkit

Published (Table 9, SPP ZF-5, fine-tuned fc6/fc7, SVMs and box regression): 58.0 mAP on VOC 2007 test at one scale
(shorter side 688), 59.2 with five scales; R-CNN with AlexNet: 58.5 in the same table. The network is
segjax.models.fast_rcnn with name "sppnet": ZF-5's conv5 (stride 16), the 4-level spatial pyramid (6x6, 3x3, 2x2, 1x1)
of each window projected on conv5, fc6/fc7 4096 with dropout 0.5 and a K+1 softmax. What this config trains is the
paper's fine-tuning (Sec. 4.1): the convolutions frozen, fc6, fc7 and the softmax on RoIs with 25% positives (IoU >=
0.5) and negatives in [0.1, 0.5), lr 1e-4 for 250k mini-batches then 1e-5 for 50k; its voc07_mAP is that of the
softmax scores. The paper's last stages, per-class linear SVMs with hard negative mining on fc7 features and ridge box
regression, are segjax.ops.svm.train_class_svms and segjax.ops.box_regression.fit_class_box_regressors on
fast_rcnn.roi_features; scripts/rcnn_svm_stage.py trains and scores the SVMs on a trained workdir; no script applies
the box regressors yet. Differences, stated: the proposals are the stand-in of segjax/data/proposals.py (2000 per
image, built around the ground truth, so the test mAP is not the paper's measure) unless config.dataset.proposal_files
names selective search's; ZF-5 starts from scratch (no ImageNet ZF-5 weights here; the paper's conv layers are
ImageNet's and never fine-tuned, which from scratch leaves them random: set optimizer.frozen to () to train them) and
has no local response normalisation; one scale, images fitted into 688 x 928.
Needs VOC 2007 in `config.dataset.root` and an accelerator.
"""
import ml_collections

from segjax.config import base_config
from segjax.models import fast_rcnn


def get_config():
  config = base_config()
  config.batch_size = 2  # 2 images x 64 RoIs: R-CNN's 128-region mini-batches, 25% positive
  config.total_steps = 300_000
  config.log_every_steps = 100
  config.eval_every_steps = 50_000
  config.checkpoint_every_steps = 10_000
  config.model = fast_rcnn.model_config("sppnet")
  config.dataset.name = "voc"
  config.dataset.detection = True
  config.dataset.root = "~/data/VOCdevkit"
  config.dataset.train_split = "2007_trainval"
  config.dataset.eval_split = "2007_test"
  config.dataset.image_size = (688, 928)  # shorter side 688 (Sec. 4.1); VOC's 500 x 375 becomes 917 x 688
  config.dataset.max_instances = 64
  config.dataset.num_proposals = 2000
  config.dataset.augment = ml_collections.ConfigDict({"scale_range": (1.0, 1.0), "flip": True, "translate": 0.0,
                                                      "exposure": 1.0, "saturation": 1.0})
  config.optimizer.name = "sgd"
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 5e-4
  config.optimizer.learning_rate = 1e-4
  config.optimizer.schedule = "step"
  config.optimizer.decay_steps = (250_000,)
  config.optimizer.decay_factor = 0.1
  config.optimizer.frozen = (r"backbone/",)  # Sec. 4.1: only the fully connected layers are fine-tuned
  return config
