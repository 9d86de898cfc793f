"""Fast YOLO on PASCAL VOC 2007+2012 trainval, evaluated on VOC 2007 test (Redmon et al. 2016, Table 1).

  python -m segjax.main --config=experiments/fast_yolo_voc.py --workdir=workdirs/fast_yolo_voc \\
      --config.dataset.root=~/data/VOCdevkit

Table 1 row "Fast YOLO", train 2007+2012: 52.7 mAP on VOC 2007 test at 155 FPS (Titan X); voc07_mAP in metrics.jsonl.
9 convolutions with fewer filters (segjax.models.yolo.FAST_YOLO_LAYERS); every other training and testing setting is
YOLO's (Sec. 2.2, experiments/yolo_v1_voc.py). Needs VOC 2007 and 2012 in `config.dataset.root` and an accelerator.
"""
from experiments import yolo_v1_voc


def get_config():
  return yolo_v1_voc.voc_yolo_config("fast_yolo")
