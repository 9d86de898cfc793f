"""U-Net on the ISBI cell tracking challenge 2015 DIC-HeLa set (Ronneberger et al., MICCAI 2015, Table 2).

  python -m segjax.main --config=experiments/unet_isbi_hela.py --workdir=DIR

Paper row: Table 2, "u-net (2015)" on DIC-HeLa (differential interference contrast, 20 partially annotated
training images): IoU 0.7756 of the cells. The recipe and what differs are those of `unet_isbi.py` (PhC-U373),
with the DIC-C2DH-HeLa folder. Needs the challenge's DIC-C2DH-HeLa set in `config.dataset.root` and an accelerator.
"""
from experiments import unet_isbi


def get_config():
  config = unet_isbi.get_config()
  config.dataset.root = "~/data/DIC-C2DH-HeLa"
  return config
