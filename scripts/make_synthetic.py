r"""Writes the embedded synthetic segmentation set (COCO 2017 layout) and prints how long it took.

  python scripts/make_synthetic.py --root=/tmp/synthetic --num_train=1000 --num_val=200 \
      --height=128 --width=128 --seed=0
"""
import time

from absl import app
from absl import flags

from segjax.data import synthetic

_ROOT = flags.DEFINE_string("root", None, "Folder to write (created).", required=True)
_NUM_TRAIN = flags.DEFINE_integer("num_train", 1000, "Train images.")
_NUM_VAL = flags.DEFINE_integer("num_val", 200, "Val images.")
_HEIGHT = flags.DEFINE_integer("height", 128, "Image height.")
_WIDTH = flags.DEFINE_integer("width", 128, "Image width.")
_SEED = flags.DEFINE_integer("seed", 0, "Same seed, same bytes.")


def main(argv):
  del argv
  start = time.perf_counter()
  root = synthetic.write_dataset(_ROOT.value, num_train=_NUM_TRAIN.value, num_val=_NUM_VAL.value,
                                 image_size=(_HEIGHT.value, _WIDTH.value), seed=_SEED.value)
  count = _NUM_TRAIN.value + _NUM_VAL.value
  print(f"wrote {count} images to {root} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
  app.run(main)
