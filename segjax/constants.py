"""Label conventions shared by the data readers, losses, evaluators and pictures."""

# The semantic train id of pixels that no loss or metric counts (VOC's object boundaries, COCO's unlabelled
# pixels, padding). Train ids are uint8, so a data set has at most 255 classes (0..254).
IGNORE_LABEL = 255
