"""Proposals from files: Fast R-CNN's selective-search .mat layout and scripts/selective_search.py's .npz, read back
as pixel-edge boxes, checked against the split's list, moved with each row's augmentation, and in the batches of a
VOC devkit the test writes."""
import importlib.util
import os

import numpy as np
import pytest
from scipy import io

from segjax.data import DatasetError
from segjax.data import augment_detection
from segjax.data import pipeline
from segjax.data import proposal_files
from segjax.data.tf_env import tf
from references import requires_opencv
from test_data_voc_detection import VOC2007, _config, write_devkit
from train_util import REPO


def _write_mat(path, names, boxes_edges, with_names=True):
  """Fast R-CNN's layout (rbgirshick/fast-rcnn, lib/datasets/pascal_voc.py, _load_selective_search_roidb: boxes
  read as raw[:, (1, 0, 3, 2)] - 1): a cell of (y1, x1, y2, x2) 1-based inclusive boxes and the image names."""
  cells = np.empty((1, len(boxes_edges)), object)
  for i, b in enumerate(boxes_edges):
    b = np.asarray(b, np.float64).reshape(-1, 4)
    cells[0, i] = np.stack([b[:, 1] + 1, b[:, 0] + 1, b[:, 3], b[:, 2]], 1)  # edges -> 1-based inclusive
  data = {"boxes": cells}
  if with_names:
    images = np.empty((len(names), 1), object)
    for i, n in enumerate(names):
      images[i, 0] = n
    data["images"] = images
  io.savemat(path, data)


def test_mat_and_npz_give_the_same_pixel_edge_boxes(tmp_path):
  rng = np.random.default_rng(0)
  boxes = []
  for k in (5, 0, 3):
    xy = rng.integers(0, 30, (k, 2))
    boxes.append(np.concatenate([xy, xy + rng.integers(1, 20, (k, 2))], 1).astype(np.float32))
  names = ["000005", "000007", "000009"]
  _write_mat(tmp_path / "p.mat", names, boxes)
  proposal_files.write_npz(tmp_path / "p.npz", names, boxes)
  for path in ("p.mat", "p.npz"):
    read_names, read_boxes = proposal_files.read(tmp_path / path)
    assert read_names == names
    assert [b.shape for b in read_boxes] == [(5, 4), (0, 4), (3, 4)]
    for a, b in zip(read_boxes, boxes):
      np.testing.assert_array_equal(a, b)


def test_bad_files_are_named_with_their_field(tmp_path):
  io.savemat(tmp_path / "no_boxes.mat", {"images": np.array(["a"], object)})
  with pytest.raises(DatasetError, match=r"no_boxes.mat: no field 'boxes'"):
    proposal_files.read(tmp_path / "no_boxes.mat")
  _write_mat(tmp_path / "two.mat", ["000005", "000007"], [np.zeros((1, 4)), np.zeros((1, 4))])
  with pytest.raises(DatasetError, match=r"hold 2 images; the split lists 3"):
    proposal_files.SplitProposals([tmp_path / "two.mat"], 4, ["VOC2007/000005", "VOC2007/000007", "VOC2007/000009"])
  with pytest.raises(DatasetError, match=r"two.mat: field 'images' does not follow the split's list: entry 1 is "
                     r"'000007', the list has '000009'"):
    proposal_files.SplitProposals([tmp_path / "two.mat"], 4, ["VOC2007/000005", "VOC2007/000009"])
  with pytest.raises(DatasetError, match="unknown format '.txt'"):
    (tmp_path / "p.txt").write_text("")
    proposal_files.read(tmp_path / "p.txt")


def test_proposals_move_with_the_rows_augmentation():
  """A proposal equal to a ground-truth box stays equal to it through the training augmentation (scale, translation,
  flip) and the eval fit: for_image applies augment_detection's box_transform as preprocess moves the boxes."""
  source = np.array([[30.0, 10, 50, 20], [2, 3, 20, 38]], np.float32)
  split = proposal_files.SplitProposals.__new__(proposal_files.SplitProposals)
  split.count, split.boxes, split.valid = 3, np.zeros((1, 3, 4), np.float32), np.array([[True, True, False]])
  split.boxes[0, :2] = source
  example = {"image": tf.zeros((40, 60, 3), tf.uint8), "image_id": tf.constant(0, tf.int64),
             "objects": {"bbox": tf.constant(source), "label": tf.constant([2, 1], tf.int32),
                         "difficult": tf.constant([False, False]), "truncated": tf.constant([False, False])}}
  flips = set()
  for seed, train in [(s, True) for s in range(6)] + [(0, False)]:
    out = augment_detection.preprocess(example, tf.constant([seed, 1], tf.int64), tf.constant(True),
                                       image_size=(64, 64), max_instances=2, train=train, scale_range=(0.8, 1.2),
                                       translate=0.1, flip=True, box_transform=True)
    transform = out["box_transform"].numpy()
    flips.add(bool(transform[3]))
    proposals, valid = split.for_image(0, transform, (64, 64))
    np.testing.assert_array_equal(valid, [True, True, False])
    np.testing.assert_allclose(proposals[:2], out["boxes"].numpy(), atol=1e-4)
  assert flips == {False, True}
  _, valid = split.for_image(-1, transform, (64, 64))  # a padding row
  assert not valid.any()


def test_voc_batches_carry_the_files_proposals(tmp_path):
  root = write_devkit(tmp_path / "VOCdevkit")
  test_boxes = [np.array([[4, 5, 24, 20], [0, 0, 44, 30], [10, 10, 11, 12]], np.float32)]  # 000009 (30 x 44)
  _write_mat(tmp_path / "voc_2007_test.mat", ["000009"], test_boxes)
  train_names = ["VOC2007/000005", "VOC2007/000007", "VOC2012/2008_000002"]
  proposal_files.write_npz(tmp_path / "trainval.npz", train_names,
                           [np.array([[2, 3, 20, 30]], np.float32), np.zeros((0, 4), np.float32),
                            np.array([[3, 4, 28, 30], [0, 0, 32, 32]], np.float32)])
  config = _config("voc", root, tmp_path / "tfds", "0712_trainval", "2007_test", num_proposals=2)
  config.dataset.proposal_files = {"2007_test": (str(tmp_path / "voc_2007_test.mat"),),
                                   "0712_trainval": (str(tmp_path / "trainval.npz"),)}
  batch = next(iter(pipeline.make_eval_iterator(config)))
  scale = min(48 / 30, 48 / 44)
  assert batch["proposals"].shape == (2, 2, 4)
  np.testing.assert_allclose(batch["proposals"][0], scale * test_boxes[0][:2], rtol=1e-5)  # the first 2, fitted
  np.testing.assert_array_equal(batch["proposal_valid"], [[True, True], [False, False]])  # row 1 pads the split
  train = next(pipeline.make_train_iterator(config))
  assert train["proposals"].shape == (2, 2, 4) and "box_transform" not in train
  counts = {0: 1, 1: 0, 2: 2}  # proposals per image id (position in the list) in the file
  for image_id, valid in zip(train["image_id"], train["proposal_valid"]):
    assert valid.sum() <= counts[int(image_id)]
  config.dataset.name = "synthetic"  # image ids are COCO ids there, not positions in a list
  with pytest.raises(ValueError, match="config.dataset.proposal_files"):
    pipeline._proposal_files(config, "2007_test")  # pylint: disable=protected-access


def _selective_search_script():
  spec = importlib.util.spec_from_file_location("selective_search", os.path.join(REPO, "scripts",
                                                                                 "selective_search.py"))
  script = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(script)
  return script


@requires_opencv
def test_selective_search_script_writes_a_split_the_reader_takes(tmp_path, monkeypatch):
  """scripts/selective_search.py's main on a devkit the test writes: one entry per image of the split, in its list
  order, every box inside its image, read back by proposal_files."""
  root = tmp_path / "VOCdevkit"
  write_devkit(str(root))
  out = tmp_path / "proposals" / "2007_trainval.npz"
  monkeypatch.setattr("sys.argv", ["selective_search.py", "--root", str(root), "--split", "2007_trainval",
                                   "--out", str(out), "--max_boxes", "50"])
  _selective_search_script().main()
  names, boxes = proposal_files._read_npz(str(out))  # pylint: disable=protected-access
  assert names == ["VOC2007/000005", "VOC2007/000007"]  # the split's list order, as voc_detection names them
  for name, image_boxes in zip(names, boxes):
    h, w = VOC2007[name.split("/")[1]][0]
    assert 0 < len(image_boxes) <= 50
    assert (image_boxes[:, :2] >= 0).all() and (image_boxes[:, 2] <= w).all() and (image_boxes[:, 3] <= h).all()


@requires_opencv
def test_selective_search_finds_the_object(tmp_path):
  """scripts/selective_search.py on an image with one object: some box fits it at IoU >= 0.8, and every box lies in
  the image as pixel edges."""
  script = _selective_search_script()
  rng = np.random.default_rng(0)
  image = rng.integers(0, 40, (96, 128, 3)).astype(np.uint8)
  image[20:60, 30:90] = (200, 180, 20)
  boxes = script.selective_search(image)
  assert boxes.shape[1] == 4 and len(boxes) > 5
  assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 128).all() and (boxes[:, 3] <= 96).all()
  assert (boxes[:, 2:] > boxes[:, :2]).all()
  target = np.array([30, 20, 90, 60], np.float32)
  inter = np.prod(np.clip(np.minimum(boxes[:, 2:], target[2:]) - np.maximum(boxes[:, :2], target[:2]), 0, None), 1)
  union = np.prod(boxes[:, 2:] - boxes[:, :2], 1) + 60 * 40 - inter
  assert (inter / union).max() >= 0.8
