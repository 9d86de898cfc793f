"""The synthetic writer: determinism, agreement of its three label formats, content, learnability."""
import hashlib
import json
import os

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from segjax.data import synthetic

SIZE = (48, 64)


def _tree_hash(root):
  digest = hashlib.sha256()
  for folder, _, files in sorted(os.walk(root)):
    for name in sorted(files):
      path = os.path.join(folder, name)
      digest.update(os.path.relpath(path, root).encode())
      with open(path, "rb") as f:
        digest.update(f.read())
  return digest.hexdigest()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  return synthetic.write_dataset(tmp_path_factory.mktemp("syn") / "set", num_train=40, num_val=8,
                                 image_size=SIZE, seed=3)


def _load(root, split):
  with open(os.path.join(root, "annotations", f"instances_{split}.json")) as f:
    instances = json.load(f)
  with open(os.path.join(root, "annotations", f"panoptic_{split}.json")) as f:
    panoptic = json.load(f)
  return instances, panoptic


def _png(path):
  return np.asarray(Image.open(path))


def test_same_seed_gives_identical_files_and_another_seed_does_not(tmp_path):
  args = dict(num_train=5, num_val=2, image_size=(32, 32))
  a = _tree_hash(synthetic.write_dataset(tmp_path / "a", seed=7, **args))
  b = _tree_hash(synthetic.write_dataset(tmp_path / "b", seed=7, **args))
  c = _tree_hash(synthetic.write_dataset(tmp_path / "c", seed=8, **args))
  assert a == b
  assert a != c


def test_layout_and_categories(root):
  instances, panoptic = _load(root, "train2017")
  assert len(instances["images"]) == 40
  assert {c["id"] for c in instances["categories"]} == {1, 2, 3, 4}
  assert all(c["isthing"] == 1 and c["supercategory"] for c in instances["categories"])
  assert [(c["id"], c["isthing"]) for c in panoptic["categories"]] == [
      (1, 1), (2, 1), (3, 1), (4, 1), (101, 0), (102, 0), (103, 0)]
  for image in instances["images"]:
    for folder in ("train2017", "semantic_train2017", "annotations/panoptic_train2017"):
      assert Image.open(os.path.join(root, folder, image["file_name"])).size == SIZE[::-1]
  val, _ = _load(root, "val2017")
  assert not {i["id"] for i in val["images"]} & {i["id"] for i in instances["images"]}


def test_semantic_panoptic_and_instances_agree(root):
  """Per image: panoptic ids -> semantic PNG; each instance mask == its panoptic segment."""
  instances, panoptic = _load(root, "train2017")
  train_id = {1: 0, 2: 1, 3: 2, 4: 3, 101: 4, 102: 5, 103: 6}
  by_image = {}
  for ann in instances["annotations"]:
    by_image.setdefault(ann["image_id"], []).append(ann)
  h, w = SIZE
  for pan in panoptic["annotations"]:
    rgb = _png(os.path.join(root, "annotations/panoptic_train2017", pan["file_name"])).astype(np.int64)
    ids = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
    semantic = _png(os.path.join(root, "semantic_train2017", pan["file_name"]))
    expected = np.full(SIZE, 255)
    for seg in pan["segments_info"]:
      region = ids == seg["id"]
      assert region.sum() == seg["area"] > 0
      ys, xs = np.nonzero(region)
      assert seg["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
      expected[region] = train_id[seg["category_id"]]
    assert set(np.unique(ids)) <= {0} | {s["id"] for s in pan["segments_info"]}
    np.testing.assert_array_equal(semantic, expected)
    things = [s for s in pan["segments_info"] if s["category_id"] < 100]
    anns = by_image.get(pan["image_id"], [])
    assert len(anns) == len(things)
    for ann, seg in zip(anns, things):
      seg_field = ann["segmentation"]
      rle = (mask_utils.merge(mask_utils.frPyObjects(seg_field, h, w)) if isinstance(seg_field, list)
             else {"size": seg_field["size"], "counts": seg_field["counts"].encode()})
      np.testing.assert_array_equal(mask_utils.decode(rle).astype(bool), ids == seg["id"])
      assert (ann["category_id"], ann["iscrowd"], ann["area"]) == (
          seg["category_id"], seg["iscrowd"], seg["area"])
      assert ann["bbox"] == seg["bbox"]


def test_content_has_crowds_void_border_tiny_occlusion(root):
  instances, panoptic = _load(root, "train2017")
  anns = instances["annotations"]
  h, w = SIZE
  polygons = [a for a in anns if isinstance(a["segmentation"], list)]
  rles = [a for a in anns if isinstance(a["segmentation"], dict)]
  assert len(polygons) > len(anns) / 2  # polygons for most
  assert any(not a["iscrowd"] for a in rles)  # RLE for occluded instances too
  assert all(isinstance(a["segmentation"]["counts"], str) for a in rles)
  crowds = [a for a in anns if a["iscrowd"]]
  assert crowds and all(isinstance(a["segmentation"], dict) for a in crowds)
  crowd_segments = [s for p in panoptic["annotations"] for s in p["segments_info"] if s["iscrowd"]]
  assert len(crowd_segments) == len(crowds)
  assert any(a["bbox"][0] == 0 or a["bbox"][1] == 0 or a["bbox"][0] + a["bbox"][2] == w
             or a["bbox"][1] + a["bbox"][3] == h for a in anns)
  assert any(a["area"] <= 12 for a in anns)  # tiny: a few pixels
  void = [(_png(os.path.join(root, "semantic_train2017", i["file_name"])) == 255).mean()
          for i in instances["images"]]
  assert 0 < np.mean(void) < 0.05 and sum(v > 0 for v in void) >= 10


def test_learnable_by_pixel_colour(root):
  """A nearest-class-mean colour classifier (a 1x1 'network') already reaches mIoU >= 0.8."""
  instances, _ = _load(root, "train2017")
  names = [i["file_name"] for i in instances["images"]]

  def load(name):
    image = _png(os.path.join(root, "train2017", name)).astype(np.float64)
    return image, _png(os.path.join(root, "semantic_train2017", name))

  sums, counts = np.zeros((7, 3)), np.zeros(7)
  for name in names[:25]:
    image, semantic = load(name)
    for c in range(7):
      sums[c] += image[semantic == c].sum(0)
      counts[c] += (semantic == c).sum()
  means = sums / counts[:, None]
  confusion = np.zeros((7, 7))
  for name in names[25:]:
    image, semantic = load(name)
    pred = np.argmin(((image[:, :, None] - means) ** 2).sum(-1), -1)
    keep = semantic != 255
    np.add.at(confusion, (semantic[keep], pred[keep]), 1)
  iou = np.diag(confusion) / (confusion.sum(0) + confusion.sum(1) - np.diag(confusion))
  assert np.nanmean(iou) >= 0.8, iou


def test_ensure_synthetic_rewrites_unfinished_or_other_and_refuses_foreign(tmp_path, caplog):
  args = dict(num_train=3, num_val=1, image_size=(24, 24))
  root = str(tmp_path / "set")
  os.makedirs(os.path.join(root, "train2017"))  # a half-written set: no marker
  with open(os.path.join(root, "train2017", "000000000001.png"), "wb") as f:
    f.write(b"truncated")
  synthetic.ensure_synthetic(root, **args)
  assert synthetic.is_complete(root, **args)
  assert Image.open(os.path.join(root, "train2017", "000000000001.png")).size == (24, 24)
  stamp = os.stat(os.path.join(root, synthetic.MARKER)).st_mtime_ns
  synthetic.ensure_synthetic(root, **args)  # complete: left alone
  assert os.stat(os.path.join(root, synthetic.MARKER)).st_mtime_ns == stamp
  assert "replacing" not in caplog.text  # an unfinished set is no one's data
  synthetic.ensure_synthetic(root, **dict(args, num_train=4))  # other arguments: rewritten, with a warning
  assert len(os.listdir(os.path.join(root, "train2017"))) == 4
  assert f"replacing the set in {root}" in caplog.text and '"num_train": 3' in caplog.text
  assert not [p for p in os.listdir(tmp_path) if ".partial-" in p]
  foreign = tmp_path / "mine"
  foreign.mkdir()
  (foreign / "thesis.tex").write_text("keep me")
  with pytest.raises(ValueError, match="is not a synthetic set"):
    synthetic.ensure_synthetic(str(foreign), **args)
  assert (foreign / "thesis.tex").read_text() == "keep me"


def test_write_dataset_rejects_bad_arguments(tmp_path):
  with pytest.raises(ValueError, match="image_size"):
    synthetic.write_dataset(tmp_path, num_train=1, num_val=1, image_size=(8, 8))


def test_unseen_object_split_draws_held_out_shapes_only_in_val(tmp_path):
  """train_shapes / val_shapes: no train pixel, instance or crowd is a held-out shape, and every val one is; the
  split's sets are told apart by their marker."""
  args = dict(num_train=30, num_val=12, image_size=SIZE, seed=3, train_shapes=("circle", "square"),
              val_shapes=("star", "triangle"))
  root = synthetic.write_dataset(tmp_path / "unseen", **args)
  assert synthetic.is_complete(root, **args)
  assert not synthetic.is_complete(root, num_train=30, num_val=12, image_size=SIZE, seed=3)
  train_ids = {c["id"]: k for k, c in enumerate(synthetic.CATEGORIES)}  # category id -> semantic train id
  for split, allowed in (("train2017", {1, 2}), ("val2017", {3, 4})):
    instances, panoptic = _load(root, split)
    drawn = {a["category_id"] for a in instances["annotations"]}
    assert drawn == allowed  # both classes occur, and only they
    assert any(a["iscrowd"] for a in instances["annotations"])
    things = {s["category_id"] for p in panoptic["annotations"] for s in p["segments_info"] if s["category_id"] < 100}
    assert things == allowed
    held_out = {train_ids[c] for c in {1, 2, 3, 4} - allowed}
    for image in instances["images"]:
      semantic = np.asarray(Image.open(os.path.join(root, f"semantic_{split}", image["file_name"])))
      assert not np.isin(semantic, sorted(held_out)).any()
  with pytest.raises(ValueError, match="unknown shape"):
    synthetic.write_dataset(tmp_path / "bad", num_train=1, num_val=1, image_size=SIZE, train_shapes=("hexagon",))
