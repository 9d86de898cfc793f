"""CRF-as-RNN on FCN-8s (VGG-16), PASCAL VOC 2012 (Zheng et al. 2015, Table 1), fine-tuned end to end from a
trained FCN-8s.

  python -m segjax.main --config=experiments/fcn8s_vgg16_voc.py --workdir=FCN_DIR --config.init_from=VGG16_DIR
  python -m segjax.main --config=experiments/crf_rnn_fcn8s_voc.py --workdir=DIR \
      --config.init_from=FCN_DIR/checkpoints/15000/state

(init_from reads the params and batch_stats of the FCN-8s run's last checkpoint into the model's `base`.)
Paper row: Table 1, CRF-RNN: 72.0 mean IU on VOC 2012 test trained on VOC 2012 + SBD, 74.7 with MS COCO
pretraining as well (FCN-8s alone: 62.2). Sec. 5 / 6: the FCN-8s unaries, then a CRF-RNN layer of 5 mean-field
iterations in training and 10 at test; bilateral kernel theta_alpha 160, theta_beta 3 (pixels, colours 0..255),
spatial kernel theta_gamma 3; kernel weights start at 5 (bilateral) and 3 (spatial), the compatibility at Potts;
all learned end to end with the network. The authors' solver: lr 1e-13 with the pixel-summed loss, momentum 0.99,
one image a batch.
Schedule: as experiments/fcn8s_vgg16_voc.py, whose at-once FCN-8s (skip scales 0.01, 0.0001; upscore frozen) is the
base: SGD, 20 images a batch, momentum 0.9, weight decay 5e-4, a constant lr of 1e-7, the authors' 1e-13 carried
over by the factor between FCN's summed-loss lr (1e-10) and its pixel-averaged one (1e-4). The paper gives no step
count: 5k steps (100k images, ~9 epochs of train_aug) is this config's choice.
What differs: the base is the released at-once FCN-8s recipe trained here, not the authors' staged FCN-8s; no MS
COCO (the row to compare is 72.0); the lr mapping above; VOC 2012 val for evaluation. Watch the train metric
crf_overflow (images whose permutohedral lattice overflowed; raise config.model.crf.lattice_capacity if > 0).
Needs VOC 2012 and SBD in `config.dataset.root` and `config.dataset.sbd_root` (the VOC reader, `config.dataset.name =
"voc"`, is segjax/data/voc.py) and an accelerator.
"""
import ml_collections

from experiments import fcn8s_vgg16_voc


def get_config():
  config = fcn8s_vgg16_voc.get_config()  # its data, batch, SGD and weight decay
  config.total_steps = 5_000
  config.eval_every_steps = 1_000
  config.model = ml_collections.ConfigDict({
      "name": "crf_rnn", "base": config.model.to_dict(),
      "crf": {"theta_alpha": 160.0, "theta_beta": 3.0, "theta_gamma": 3.0, "w_spatial": 3.0, "w_bilateral": 5.0,
              "train_iterations": 5, "test_iterations": 10}})
  config.optimizer.learning_rate = 1e-7
  config.optimizer.frozen = (r"base/upscore",)
  return config
