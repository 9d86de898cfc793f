"""ADE20K SceneParsing (ADEChallengeData2016, Zhou et al. 2017), 150 classes.

config.dataset.root is ADEChallengeData2016:
  images/{training,validation}/NAME.jpg
  annotations/{training,validation}/NAME.png     uint8: 0 = other objects (ignored), k = class k of objectInfo150
Train ids are the annotation values minus 1 (0 -> 255), as the benchmark scores 150 classes.
"""
import os

from segjax.constants import IGNORE_LABEL
from segjax.data import semantic

# The first name of each row of objectInfo150.txt (the benchmark's class list), in its order (values 1..150).
CLASS_NAMES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path",
    "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase",
    "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm",
    "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus", "towel",
    "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television", "airplane",
    "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster",
    "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool",
    "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture",
    "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor",
    "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)


def examples(dataset_config, split) -> list[semantic.Example]:
  root = os.path.expanduser(dataset_config.root)
  images = semantic.require(os.path.join(root, "images", split), "ADE20K image folder")
  labels = semantic.require(os.path.join(root, "annotations", split), "ADE20K annotation folder")
  names = sorted(os.path.splitext(f)[0] for f in os.listdir(images) if f.endswith(".jpg"))
  return [semantic.Example(name, os.path.join(images, name + ".jpg"), os.path.join(labels, name + ".png"))
          for name in names]


READER = semantic.Reader(
    name="ade20k", class_names=CLASS_NAMES, category_ids=tuple(range(1, 151)),
    train_ids=semantic.table({0: IGNORE_LABEL, **{k: k - 1 for k in range(1, 151)}}),
    examples=examples, read_label=semantic.read_png_label)
