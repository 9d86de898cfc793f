"""DeepLab-LargeFOV with attention to scale, VGG-16, PASCAL VOC 2012 (Chen, Yang, Wang, Xu & Yuille, "Attention to
Scale", CVPR 2016, Table 4).

  python -m scripts.convert_weights --name vgg16_deeplab_largefov --input vgg16-397923af.pth --output VGG_DIR
  python -m segjax.main --config=experiments/deeplab_attention_largefov_voc.py --workdir=DIR --config.init_from=VGG_DIR

Paper rows (Table 4, PASCAL VOC 2012 val, ImageNet pre-training, no CRF): the DeepLab-LargeFOV baseline 62.28 mIoU;
scales {1, 0.75, 0.5} merged by the attention model with extra supervision 69.08, the table's best (its max- and
average-pooling rows are `config.model.scale_fusion = "max"` and a fusion segjax does not have). These two numbers
were not re-read from the paper's PDF in this repository.
Model: "deeplab_v1" variant "largefov" shared across the input scales (1.0, 0.75, 0.5) (images resized as Caffe's
Interp: 513 -> 385 -> 257), the attention model (3x3 conv of 512 channels + ReLU and a 1x1 conv to one logit per scale
on the scales' fc7 features, softmax over scales, Eq. 1-2) and the extra supervision: a cross entropy on each scale's
score map besides the fused one (Sec. 3.3; segjax/layers/multiscale.py, segjax/models/per_pixel.py).
Schedule: DeepLab-LargeFOV's (experiments/deeplab_v1_largefov_crf_voc.py: SGD momentum 0.9, weight decay 5e-4, batch
20, lr 1e-3 times 0.1 every 2000 iterations, 6000 iterations, random mirroring), from the ImageNet VGG-16 with fc6
decimated (the first command).
Differences: those of experiments/deeplab_v1_largefov_crf_voc.py (no per-layer learning rates, the loss on upsampled
logits, whole images fitted into 513x513 where the paper crops 321x321, torchvision's VGG-16 weights); no CRF.
Needs VOC 2012 and SBD in `config.dataset.root` and `config.dataset.sbd_root` and an accelerator.
"""
import ml_collections

from experiments import deeplab_v1_largefov_crf_voc

SCALES = (1.0, 0.75, 0.5)


def get_config():
  config = deeplab_v1_largefov_crf_voc.get_config()
  config.model = ml_collections.ConfigDict({"name": "deeplab_v1", "variant": "largefov", "width": 64,
                                           "dtype": "float32", "scales": SCALES, "scale_fusion": "attention"})
  return config
