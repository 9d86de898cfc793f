"""U-Net on the ISBI cell tracking challenge 2015 PhC-U373 set (Ronneberger et al., MICCAI 2015, Table 2).

  python -m segjax.main --config=experiments/unet_isbi.py --workdir=DIR

Paper row: Table 2, "u-net (2015)" on PhC-U373 (phase contrast, 35 partially annotated training images): IoU
0.9203 of the cells. Picked over the ISBI 2012 EM row (Table 1, warping error 0.000353, Rand error 0.0382) because
segjax's semantic metrics measure IoU (the cells' IoU is semantic_metrics' per_class_IoU[1]; the loop logs only
mIoU, which also averages the background); warping and Rand errors are not implemented.
Schedule (Sec. 3): SGD with momentum 0.99, batch of a single large tile (572x572 input, 388x388 output with valid
padding, Fig. 1), Gaussian initialisation with std sqrt(2 / N), N the incoming nodes of a unit (Sec. 3).
The paper gives neither the learning rate nor the number of iterations ("10 hours on a NVidia Titan GPU"): 0.01
and 20K steps are our choices, untested.
Data: the challenge's layout read by `segjax/data/isbi_cells.py` (cells vs background; grey frames repeated to RGB);
the challenge's test sequences have no public labels, so sequence 01 trains and 02 evaluates.
Loss (Eq. 1-2): the cross entropy of each pixel weighted by the weight map of its ground truth,
w = w_c + w0 exp(-(d1 + d2)^2 / (2 sigma^2)), w0 = 10, sigma = 5 pixels (`config.dataset.unet_weight_map`: computed
by the input pipeline from the frame's cell instances at the source resolution, segjax/data/unet_weights.py).
What differs: no elastic deformation augmentation (Sec. 3.1) and no drop-out at the end of the contracting path;
the overlap-tile strategy (Fig. 2) runs each whole 572x572 input as one tile: mirrored to 764x764, it gives logits for all 572x572 pixels, which the loss and the
evaluator compare with the full-size labels (the paper trains on 572x572 tiles against their 388x388 centres and
tiles larger images; --config.dataset.image_size="(388, 388)" makes the mirrored tile the paper's 572x572). The
pipeline fits each image into 572x572 (resized, aspect kept) and pads it with VOID; the paper keeps the resolution.
Needs the challenge's PhC-C2DH-U373 set in `config.dataset.root` and an accelerator.
"""
import ml_collections

from segjax.config import base_config


def get_config():
  config = base_config()
  config.batch_size = 1
  config.total_steps = 20_000
  config.eval_every_steps = 2_000
  config.checkpoint_every_steps = 2_000
  config.model = ml_collections.ConfigDict({"name": "unet", "width": 64, "padding": "valid", "dtype": "float32"})
  config.dataset.name = "isbi_cells"
  config.dataset.root = "~/data/PhC-C2DH-U373"
  config.dataset.train_split = "01"
  config.dataset.eval_split = "02"
  config.dataset.image_size = (572, 572)
  config.dataset.unet_weight_map = True  # Eq. 2, from the instances of each frame's SEG ground truth
  config.dataset.unet_w0 = 10.0
  config.dataset.unet_sigma = 5.0
  config.optimizer.name = "sgd"
  config.optimizer.learning_rate = 0.01
  config.optimizer.momentum = 0.99
  config.optimizer.weight_decay = 0.0
  config.optimizer.schedule = "constant"
  return config
