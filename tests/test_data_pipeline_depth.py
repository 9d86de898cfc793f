"""Depth through the input pipeline (config.dataset.depth): the batches carry the source's depth maps, moved with the
image by resize, flip and crop, and intrinsics moved with them, so that each batch pixel backprojects to the point
its source pixel sees; without the option there is no depth."""
import itertools

import ml_collections
import numpy as np
import pytest

from segjax.data import compact
from segjax.data import config as config_lib
from segjax.data import pipeline
from segjax.data import synthetic

H, W = 40, 48


@pytest.fixture(scope="module")
def config(tmp_path_factory):
  base = tmp_path_factory.mktemp("pipeline_depth")
  config = ml_collections.ConfigDict({"seed": 5, "batch_size": 4, "dataset": config_lib.default_dataset_config()})
  config.dataset.update(dict(root=str(base / "synthetic"), data_dir=str(base / "tfds"), image_size=(H, W),
                             num_train=10, num_val=5, depth=True))
  return config


def _source_depth(config, split):
  """Depth in millimetres of every example of a split, by image id, from the TFDS build."""
  return {int(e["image_id"]): e["depth"][..., 0] for e in pipeline.prepare(config).as_data_source(split)}


def test_eval_batches_carry_the_source_depth_and_camera(config):
  source = _source_depth(config, "val2017")
  seen = 0
  for batch in pipeline.make_eval_iterator(config):
    batch = compact.expand(batch)
    assert batch["depth"].dtype == np.float32 and batch["depth"].shape == (4, H, W)
    for row in range(4):
      if batch["valid_image"][row]:
        np.testing.assert_allclose(batch["depth"][row], source[int(batch["image_id"][row])] / 1000, rtol=1e-6)
        np.testing.assert_array_equal(batch["intrinsics"][row], synthetic.intrinsics(H, W))
        seen += 1
      else:
        assert not batch["depth"][row].any()
  assert seen == 5


def test_augmented_pixels_backproject_to_their_source_pixels(config):
  """Each train pixel with depth, projected into the source camera through the batch's intrinsics (u_s = fx X / Z +
  cx with X = (u - cx') Z / fx'), lands on a source pixel of the same depth (where the example was flipped: on column
  2 cx - u_s = W - u_s, the flipped image being the scene mirrored about the optical axis): scale, flip and crop
  moved the intrinsics as they moved the pixels."""
  source = _source_depth(config, "train2017")
  fx, fy, cx, cy = synthetic.intrinsics(H, W)
  v, u = np.mgrid[:H, :W].astype(np.float64)
  matched, flips, scaled = [], 0, 0
  iterator = pipeline.make_train_iterator(config)
  for _ in range(4):
    batch = compact.expand(next(iterator))
    for row in range(4):
      depth = np.rint(batch["depth"][row] * 1000)  # millimetres again
      fx2, fy2, cx2, cy2 = batch["intrinsics"][row].astype(np.float64)
      has = depth > 0
      # The source coordinate, exact up to float32 intrinsics: where it falls on a pixel edge (a tie of the nearest
      # resize, decided by TensorFlow's float32 rounding), either neighbour is the source pixel.
      x = ((u - cx2) / fx2 * fx + cx + 0.5)[has]
      y = ((v - cy2) / fy2 * fy + cy + 0.5)[has]
      src = source[int(batch["image_id"][row])]
      fractions = []
      for mirrored in (False, True):  # as is; mirrored about the optical axis (X -> -X: column 2 cx - u = W - u)
        hit = np.zeros(x.shape, bool)
        for dx, dy in itertools.product((-1e-3, 1e-3), repeat=2):
          columns, rows = np.floor(x + dx).astype(int), np.floor(y + dy).astype(int)
          columns = W - columns if mirrored else columns
          inside = (columns >= 0) & (columns < W) & (rows >= 0) & (rows < H)
          hit |= inside & (src[np.clip(rows, 0, H - 1), np.clip(columns, 0, W - 1)] == depth[has])
        fractions.append(hit.mean())
      same, mirror = fractions
      matched.append(max(same, mirror))
      flips += mirror > same
      scaled += abs(fx2 / fx - 1) > 0.02
  assert min(matched) > 0.99, [round(m, 3) for m in matched]
  assert 0 < flips < 16 and scaled > 0


def test_no_depth_unless_asked(config):
  plain = ml_collections.ConfigDict(config.to_dict())
  plain.dataset.depth = False
  plain.dataset.root = config.dataset.root + "_plain"
  batch = next(pipeline.make_train_iterator(plain))
  assert "depth" not in batch and "intrinsics" not in batch
