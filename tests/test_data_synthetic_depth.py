"""The synthetic writer's depth maps: opt-in (the other files stay byte-identical), a ground plane behind the shapes,
every shape nearer than what it occludes, no depth at VOID pixels; and their reader: a bad or missing depth PNG fails
naming the file."""
import dataclasses
import os

import numpy as np
import pytest
from PIL import Image

from segjax.data import coco
from segjax.data import coco_example
from segjax.data import config as config_lib
from segjax.data import synthetic

SIZE = (48, 64)
ARGS = dict(num_train=12, num_val=4, image_size=SIZE, seed=3)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  return synthetic.write_dataset(tmp_path_factory.mktemp("depth") / "set", depth=True, **ARGS)


def _files(root, skip=()):
  """{relative path: bytes} of every file under root, folders in `skip` left out."""
  out = {}
  for folder, _, names in os.walk(root):
    for name in names:
      path = os.path.relpath(os.path.join(folder, name), root)
      if path.split(os.sep)[0] not in skip:
        with open(os.path.join(folder, name), "rb") as f:
          out[path] = f.read()
  return out


def _depth(root, split, index):
  first = 1 if split == "train2017" else 1_000_001
  path = os.path.join(root, config_lib.DEPTH_DIR.format(split=split), f"{first + index:012d}.png")
  image = Image.open(path)
  assert image.mode == "I;16"
  return np.asarray(image).astype(np.float64) / 1000


def test_depth_is_opt_in_and_leaves_the_other_files_as_they_are(root, tmp_path):
  plain = synthetic.write_dataset(tmp_path / "plain", **ARGS)
  with_depth = _files(root, skip=("depth_train2017", "depth_val2017"))
  without = _files(plain)
  assert not any(p.startswith("depth_") for p in without)
  marker = synthetic.MARKER
  assert with_depth.pop(marker) != without.pop(marker)  # the marker says whether depth was written
  assert with_depth == without
  assert synthetic.is_complete(root, depth=True, **ARGS) and not synthetic.is_complete(root, **ARGS)
  for split, count in (("train2017", 12), ("val2017", 4)):
    assert len(os.listdir(os.path.join(root, f"depth_{split}"))) == count


def _background(sky):
  """The background's depth of the module docstring: the ground plane Z = f h / (v - v_h) (f = the width, the camera
  1.5 m above it, the horizon a quarter of the height above the image), at most 10 m, and the sky at 10 m."""
  height, width = sky.shape
  v = np.arange(height, dtype=np.float64)[:, None] + np.zeros((1, width))
  return np.where(sky, 10.0, np.minimum(width * 1.5 / (v + 0.25 * height), 10.0))


def _scene(split, index):
  """The writer's scene of one image, re-rendered from its seed: the index of the topmost shape / crowd layer at each
  pixel (-1: background), each layer's pixels, the sky and the VOID pixels."""
  rng = np.random.default_rng([ARGS["seed"], synthetic.SPLITS.index(split), index])
  things = synthetic.shape_ids(())
  _, canvas = synthetic._render(rng, *SIZE, things)  # pylint: disable=protected-access
  top = np.full(SIZE, -1)
  for k, layer in enumerate(canvas.layers):
    top[layer] = k
  return top, canvas.layers, canvas.sky, canvas.ids == 0


@pytest.mark.parametrize("split, index", [("train2017", i) for i in range(12)] + [("val2017", i) for i in range(4)])
def test_shapes_are_nearer_than_the_background_and_what_they_occlude(root, split, index):
  depth = _depth(root, split, index)
  top, layers, sky, void = _scene(split, index)
  assert np.all(depth[void] == 0) and np.all(depth[~void] > 0)  # no depth exactly where the labels say VOID
  background = _background(sky)
  np.testing.assert_allclose(depth[top < 0], background[top < 0], rtol=0.015)  # 0.2% noise: within 7 sigma
  assert np.all(depth[top >= 0] < 0.97 * background[top >= 0])  # every shape is in front of the background
  # Each 4-neighbour pair across an occlusion edge: the later layer (on top) is nearer than the earlier one beside it.
  pairs = 0
  for a, b in (((slice(None), slice(1, None)), (slice(None), slice(None, -1))),
               ((slice(1, None), slice(None)), (slice(None, -1), slice(None)))):
    for p, q in ((a, b), (b, a)):
      ta, tb = top[p], top[q]
      occluding = ta > tb
      # q's layer lies under p too (p hides it) or q is background: then p must be nearer than q.
      hidden = np.zeros_like(occluding)
      for k in np.unique(tb[occluding]):
        hidden |= (tb == k) & (layers[k][p] if k >= 0 else True)
      check = occluding & hidden & ~void[p] & ~void[q]
      pairs += check.sum()
      assert np.all(depth[p][check] < depth[q][check]), (split, index)
  assert pairs > 0


def _record(root, split="val2017"):
  return coco.load_split(root, split, depth=True).images[0]


def test_reader_gives_the_depth_back_and_names_a_bad_file(root, tmp_path):
  record = _record(root)
  assert record.depth_path.endswith(os.path.join("depth_val2017", record.file_name))
  depth = coco_example.read_depth(record)
  assert depth.dtype == np.uint16 and depth.shape == SIZE + (1,)
  np.testing.assert_array_equal(depth[..., 0] / 1000, _depth(root, "val2017", 0))
  assert coco.load_split(root, "val2017").images[0].depth_path is None  # not asked for: not read

  bad = tmp_path / "bad.png"
  Image.fromarray(np.zeros(SIZE, np.uint8)).save(bad)  # 8-bit
  with pytest.raises(coco.DatasetError, match=f"{bad}.*16-bit"):
    coco_example.read_depth(dataclasses.replace(record, depth_path=str(bad)))
  bad.write_bytes(b"not a png")
  with pytest.raises(coco.DatasetError, match=f"{bad}.*fails to decode"):
    coco_example.read_depth(dataclasses.replace(record, depth_path=str(bad)))
  Image.fromarray(np.zeros((SIZE[0], SIZE[1] + 1), np.uint16)).save(bad)
  with pytest.raises(coco.DatasetError, match=f"{bad}.*height x width"):
    coco_example.read_depth(dataclasses.replace(record, depth_path=str(bad)))
  missing = str(tmp_path / "missing.png")
  with pytest.raises(coco.DatasetError, match=missing):
    coco_example.read_depth(dataclasses.replace(record, depth_path=missing))
