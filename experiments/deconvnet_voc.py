"""DeconvNet + CRF, VGG-16 encoder and mirrored deconvolution network, PASCAL VOC 2012 (Noh, Hong & Han, ICCV 2015,
Table 1 and the VOC 2012 test table).

  python -m segjax.main --config=experiments/deconvnet_voc.py --workdir=DIR

Paper rows (Noh et al. 2015, results on PASCAL VOC 2012 test, mean IoU): DeconvNet 69.6, DeconvNet+CRF 70.5,
EDeconvNet (the ensemble of DeconvNet and FCN-8s) 71.7, EDeconvNet+CRF 72.5, the paper's best. This config is the
DeconvNet+CRF row: "dense_crf" on a "deconvnet" base (segjax/models/deconvnet.py: Table 1's layers, 252M parameters,
the released DeconvNet_inference_deploy.prototxt's widths); the base's own logits (`unary`) are the DeconvNet row.
The EDeconvNet rows also need FCN-8s (experiments/fcn8s_vgg16_voc.py) and the averaging of the two networks' class
probabilities, which segjax does not build.
Schedule (Sec. 4): SGD with momentum 0.9, weight decay 5e-4, learning rate 0.01, batch 64, batch normalisation
after every convolution and deconvolution, encoder from ImageNet VGG-16; the paper's iteration counts are not
restated here (40k steps are our choice).
Differences: the paper trains in two stages, on object-centred crops and then on object proposals, and
segments each image by aggregating its network outputs on the top 50 EdgeBox proposals (pixel-wise maximum);
here the network sees whole images fitted into 224x224 (its input size in Table 1) and is trained from He
initialisation (segjax/models/deconvnet.py); the CRF takes DeepLab-LargeFOV's cross-validated values
(experiments/deeplab_v1_largefov_crf_voc.py), the paper's are not given.
Needs VOC 2012 and SBD in `config.dataset.root` and `config.dataset.sbd_root` and an accelerator.
"""
import ml_collections

from segjax.config import base_config
from experiments.deeplab_v1_largefov_crf_voc import CRF


def get_config():
  config = base_config()
  config.batch_size = 64
  config.total_steps = 40_000
  config.eval_every_steps = 5_000
  config.checkpoint_every_steps = 2_000
  config.model = ml_collections.ConfigDict({
      "name": "dense_crf", "base": {"name": "deconvnet", "width": 64, "dtype": "float32"}, "crf": dict(CRF)})
  config.dataset.name = "voc"
  config.dataset.root = "~/data/VOCdevkit"
  config.dataset.train_split = "train_aug"
  config.dataset.eval_split = "val"
  config.dataset.image_size = (224, 224)
  config.dataset.augment.scale_range = (1.0, 1.0)
  config.dataset.augment.flip = True
  config.optimizer.name = "sgd"
  config.optimizer.learning_rate = 0.01
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 5e-4
  config.optimizer.schedule = "constant"
  return config
