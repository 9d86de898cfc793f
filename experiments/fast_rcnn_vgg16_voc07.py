"""Fast R-CNN, VGG-16, PASCAL VOC 2007 trainval, evaluated on VOC 2007 test (Girshick 2015, Table 1).

  python -m segjax.main --config=experiments/fast_rcnn_vgg16_voc07.py --workdir=DIR \
      --config.dataset.root=~/data/VOCdevkit

Published (Table 1, VGG16, "07" training data, selective search proposals): 66.9 mAP on VOC 2007 test; 70.0 with
"07+12" (`--config.dataset.train_split=0712_trainval`). voc07_mAP in metrics.jsonl is that metric
(11-point AP, difficult objects ignored). The network is segjax.models.fast_rcnn (conv5_3 trunk, RoI max pooling 7x7,
fc6/fc7 4096 with dropout 0.5, K+1 softmax and class-specific boxes); the recipe of Sec. 2.3 and 4: minibatches of
2 images x 64 RoIs (25% foreground at IoU >= 0.5, background in [0.1, 0.5)), log loss + smooth L1 with lambda 1,
horizontal flips, SGD momentum 0.9, weight decay 5e-4, lr 1e-3 for 30k steps then 1e-4 for 10k, conv1 and conv2
frozen (Sec. 4.5: fine-tuning from conv3_1 up), test NMS 0.3. Proposals: the paper's are selective search's
(~2000 per image, "fast" mode); name their files per split in config.dataset.proposal_files (Fast R-CNN's
selective_search_data .mat files, or scripts/selective_search.py's .npz; segjax/data/proposal_files.py). Without
them this config uses the stand-in of segjax/data/proposals.py (2000 boxes around the ground truth and at random),
built on the test split from its ground truth, so its mAP is not the paper's measure. Every batch is one static shape (608 x 1008,
images fitted keeping their aspect ratio; the paper: short side 600, long side at most 1000). The paper starts from
ImageNet VGG-16 including fc6/fc7, which segjax's converted VGG-16 (FCN's layout, fc6/fc7 as convolutions) does not
provide for this head. Truncated SVD (Sec. 3.1, fc6 to 1024 and fc7 to 256 singular values) converts a trained
checkpoint's params with fast_rcnn.truncated_svd for a config with model.fc6_rank / fc7_rank set.
Needs VOC 2007 in `config.dataset.root` and an accelerator.
"""
import ml_collections

from segjax.config import base_config
from segjax.models import fast_rcnn


def get_config():
  config = base_config()
  config.batch_size = 2  # 2 images x 64 RoIs per minibatch
  config.total_steps = 40_000
  config.log_every_steps = 20
  config.eval_every_steps = 10_000
  config.checkpoint_every_steps = 5_000
  config.model = fast_rcnn.model_config()
  config.dataset.name = "voc"
  config.dataset.detection = True
  config.dataset.root = "~/data/VOCdevkit"
  config.dataset.train_split = "2007_trainval"
  config.dataset.eval_split = "2007_test"
  config.dataset.image_size = (608, 1008)
  config.dataset.max_instances = 64  # every object of a VOC image (at most 56 in 2012 trainval, 41 in 2007 test)
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
  config.optimizer.frozen = (r"backbone/conv[12]_",)  # Sec. 4.5: conv1_x and conv2_x are not fine-tuned
  return config
