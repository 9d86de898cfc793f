"""torchvision's maskrcnn_resnet50_fpn COCO weights (MaskRCNN_ResNet50_FPN_Weights.COCO_V1), converted, evaluated.

  python -c "import torch, torchvision; torch.save(torchvision.models.detection.maskrcnn_resnet50_fpn(
      weights='COCO_V1').state_dict(), 'maskrcnn_resnet50_fpn.pth')"
  python -m scripts.convert_weights --name maskrcnn_resnet50_fpn --input maskrcnn_resnet50_fpn.pth --output TV_DIR
  python -m segjax.main --config=experiments/torchvision_mask_rcnn_r50_fpn_coco.py --workdir=DIR --mode=evaluate \
      --config.dataset.root=~/data/coco --config.init_from=TV_DIR

Published (torchvision's weights table, COCO_V1): 37.9 box AP, 34.6 mask AP on val2017.
The model keeps torchvision's 91 labels, which are COCO's category ids (config.model.category_ids); the
detections are mapped to the data set's thing labels (`segjax.models.thing_label_map`), so any COCO-format folder
whose categories use COCO's ids scores it. Differences, stated: torchvision resizes each image to a short side of 800
(long side at most 1333); here images are fitted into one static 800 x 1344 batch, so portrait images get a short
side below 800. Needs COCO 2017 val in `config.dataset.root` and the converted weights in `config.init_from`;
tests/test_eval_converted_detector.py checks the path on random weights against pycocotools on torchvision's own
detections.
"""
from experiments import mask_rcnn_r50_fpn_1x_coco


def get_config():
  config = mask_rcnn_r50_fpn_1x_coco.get_config()
  config.model.num_classes = 91  # torchvision's: background and COCO's category ids 1..90
  config.model.category_ids = tuple(range(1, 91))
  config.batch_size = 8
  return config
