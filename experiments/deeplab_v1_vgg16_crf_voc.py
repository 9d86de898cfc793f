"""DeepLab-CRF (DeepLab v1, Chen et al. ICLR 2015), the basic VGG-16 DeepLab, PASCAL VOC 2012.

  python -m scripts.convert_weights --name vgg16_deeplab --input vgg16-397923af.pth --output VGG_DIR
  python -m segjax.main --config=experiments/deeplab_v1_vgg16_crf_voc.py --workdir=DIR --config.init_from=VGG_DIR

Paper rows (Table 1(a), VOC 2012 val, trained on train_aug): DeepLab 59.80 mIoU, DeepLab-CRF 63.74 (Table 2: fc6
4x4 at input stride 4, receptive field 128, 65.1M parameters; the released model is deeplab-public's vgg128_noup).
Model: "dense_crf" on "deeplab_v1" variant "deeplab". CRF: the paper publishes only the search (Sec. 5: w2 = 3,
sigma_gamma = 3 fixed, w1, sigma_alpha, sigma_beta cross-validated on 100 val images); the values here (w1 5,
sigma_alpha 50, sigma_beta 10) are the ones the authors' DenseCRF scripts note for "vgg128_noup_pool3 (not optimized
well)" (deeplab-public matlab/my_script); they may not be the ones behind 63.74.
Start: torchvision's ImageNet VGG-16 with fc6 decimated to 4x4 (the first command).
Schedule (Sec. 5): SGD momentum 0.9, weight decay 5e-4, batch 20, lr 1e-3 times 0.1 every 2000 iterations, 6000
iterations; random mirroring.
Differences: those of experiments/deeplab_v1_largefov_crf_voc.py (no per-layer learning rates: fc8's x10 is not
reproduced; the loss on logits upsampled to the input size; whole images fitted into 513 x 513 rather than 321 x 321
crops; torchvision's RGB VGG-16 on images normalised by its ImageNet mean and std).
Needs VOC 2012 and SBD in `config.dataset.root` and `config.dataset.sbd_root` and an accelerator.
"""
from experiments import deeplab_v1_largefov_crf_voc

CRF = {"num_iterations": 10, "w_bilateral": 5.0, "theta_alpha": 50.0, "theta_beta": 10.0, "w_spatial": 3.0,
       "theta_gamma": 3.0}


def get_config():
  return deeplab_v1_largefov_crf_voc.get_config(variant="deeplab", crf=CRF)
