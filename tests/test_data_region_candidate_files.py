"""MCG candidate files: read back as masks in score order, truncated and padded to a count, bad fields named; and in
the batches of a synthetic set, moved with each row's augmentation, at one static shape."""
import os

import jax
import ml_collections
import numpy as np
import pytest
from scipy import io

from segjax.data import DatasetError
from segjax.data import coco
from segjax.data import compact
from segjax.data import config as config_lib
from segjax.data import pipeline
from segjax.data import region_candidate_files
from segjax.models import sds

H, W = 40, 48
P = 6


def _cell(vectors, row=True):
  """A K x 1 MATLAB cell of id vectors (rows or columns), as im2mcg's labels."""
  cell = np.empty((len(vectors), 1), object)
  for k, v in enumerate(vectors):
    cell[k, 0] = np.asarray(v, np.float64).reshape((1, -1) if row else (-1, 1))
  return cell


def _mcg_file(path, superpixels, labels, scores, struct=False, drop=None):
  """MCG's layout (jponttuset/mcg, pre-trained/scripts/im2mcg_all.m: superpixels, labels, scores, bboxes as
  variables), or SDS's struct `candidates` holding them."""
  data = {"superpixels": np.asarray(superpixels, np.float64), "labels": _cell(labels),
          "scores": np.asarray(scores, np.float64).reshape(-1, 1), "bboxes": np.zeros((len(labels), 4))}
  data.pop(drop, None)
  io.savemat(path, {"candidates": data} if struct else data)


def _scene(rng, h=9, w=11, s=7, k=5):
  superpixels = rng.integers(1, s + 1, (h, w))
  superpixels.flat[:s] = np.arange(1, s + 1)  # every label present
  labels = [np.sort(rng.choice(np.arange(1, s + 1), rng.integers(1, s), replace=False)) for _ in range(k)]
  scores = rng.permutation(k) / k
  return superpixels, labels, scores


@pytest.mark.parametrize("struct", [False, True])
def test_masks_come_back_in_score_order_truncated_and_padded(tmp_path, struct):
  rng = np.random.default_rng(3)
  superpixels, labels, scores = _scene(rng)
  _mcg_file(tmp_path / "a.mat", superpixels, labels, scores, struct=struct)
  read_map, candidates, read_scores = region_candidate_files.read(tmp_path / "a.mat", (9, 11))
  np.testing.assert_array_equal(read_map, superpixels)
  order = np.argsort(-scores)
  np.testing.assert_array_equal(read_scores, scores[order])
  expected = np.stack([np.isin(superpixels, labels[i]) for i in order]).astype(np.uint8)  # union of superpixels
  for count in (3, 5, 8):
    masks, valid = region_candidate_files.masks(read_map, candidates, count)
    assert masks.shape == (count, 9, 11) and masks.dtype == np.uint8
    np.testing.assert_array_equal(masks[:min(count, 5)], expected[:count])
    assert not masks[5:].any()
    np.testing.assert_array_equal(valid, np.arange(count) < 5)


def test_equal_scores_keep_the_files_order_and_write_mat_round_trips(tmp_path):
  rng = np.random.default_rng(4)
  superpixels, labels, _ = _scene(rng)
  region_candidate_files.write_mat(tmp_path / "w.mat", superpixels, labels, np.ones(len(labels)))
  read_map, candidates, scores = region_candidate_files.read(tmp_path / "w.mat")
  np.testing.assert_array_equal(read_map, superpixels)
  assert [c.tolist() for c in candidates] == [list(v) for v in labels] and (scores == 1).all()


@pytest.mark.parametrize("width", [16, 13])
def test_pack_masks_is_packbits_of_the_gathered_masks(width):
  rng = np.random.default_rng(width)
  superpixels = rng.integers(0, 30, (70, width))  # 0: padding, in no candidate
  table = rng.random((9, 30)) < 0.4
  table[:, 0] = False
  np.testing.assert_array_equal(region_candidate_files.pack_masks(superpixels, table),
                                np.packbits(table[:, superpixels], axis=-1))


def test_bad_fields_are_named(tmp_path):
  superpixels, labels, scores = _scene(np.random.default_rng(5))
  for field in ("superpixels", "labels", "scores"):
    _mcg_file(tmp_path / f"no_{field}.mat", superpixels, labels, scores, drop=field)
    with pytest.raises(DatasetError, match=rf"no_{field}.mat: no field '{field}'"):
      region_candidate_files.read(tmp_path / f"no_{field}.mat")
  for bad in (0, 8):  # the labels are 1..7
    _mcg_file(tmp_path / f"id{bad}.mat", superpixels, labels[:2] + [[1, bad]], scores[:3])
    with pytest.raises(DatasetError, match=rf"id{bad}.mat: field 'labels', candidate 3: superpixel id {bad} is "
                       r"outside 1..7, the labels of field 'superpixels'"):
      region_candidate_files.read(tmp_path / f"id{bad}.mat")
  _mcg_file(tmp_path / "size.mat", superpixels, labels, scores)
  with pytest.raises(DatasetError, match=r"size.mat: field 'superpixels' is 9 x 11; the image is 11 x 9"):
    region_candidate_files.read(tmp_path / "size.mat", (11, 9))
  _mcg_file(tmp_path / "scores.mat", superpixels, labels, scores[:-1])
  with pytest.raises(DatasetError, match=r"scores.mat: field 'scores' holds 4 values; field 'labels' 5"):
    region_candidate_files.read(tmp_path / "scores.mat")
  with pytest.raises(DatasetError, match=r"missing.mat does not exist"):
    region_candidate_files.read(tmp_path / "missing.mat")


@pytest.fixture(scope="module")
def candidate_set(tmp_path_factory):
  """A tiny synthetic set whose candidate files hold, per image, the source's semantic labels as superpixels and
  as candidates each label present but 255 (the batch's padding), then random unions of two, so that a candidate's
  moved mask must be the moved semantic map's pixels of its labels; images get 3 to 9 candidates (P = 6: some
  padded, some cut)."""
  base = tmp_path_factory.mktemp("region_candidates")
  config = ml_collections.ConfigDict({"seed": 5, "batch_size": 4, "dataset": config_lib.default_dataset_config()})
  config.dataset.update(dict(root=str(base / "synthetic"), data_dir=str(base / "tfds"), image_size=(H, W),
                             max_instances=8, num_train=8, num_val=4, num_region_proposals=P))
  files = {}
  builder = pipeline.prepare(config)
  expected = {}
  for split in ("train2017", "val2017"):
    directory = base / f"mcg_{split}"
    directory.mkdir()
    names = coco.image_file_names(config.dataset.root, split)
    for example in builder.as_data_source(split):
      image_id = int(example["image_id"])
      semantic = example["semantic"][..., 0].astype(np.int64)
      values = np.unique(semantic)  # label v is superpixel index(v) + 1
      superpixels = np.searchsorted(values, semantic) + 1
      rng = np.random.default_rng(image_id)
      count = 3 + image_id % 7
      usable = np.flatnonzero(values != 255) + 1
      labels = [[i] for i in usable]
      labels += [sorted(rng.choice(usable, 2, replace=False)) for _ in range(count)]
      labels = labels[:count]
      scores = np.linspace(1, 0, count)
      _mcg_file(directory / (names[image_id].rsplit(".", 1)[0] + ".mat"), superpixels, labels, scores)
      expected[image_id] = (values, labels, example["image"])
    files[split] = str(directory)
  config.dataset.region_proposal_dirs = files
  return config, expected


def _check_rows(batch, expected):
  """Each valid row's candidates are the unions of its moved semantic labels their files list, in file order."""
  checked = 0
  for row, image_id in enumerate(batch["image_id"]):
    if image_id < 0:
      assert not batch["region_valid"][row].any() and not batch["region_masks"][row].any()
      continue
    values, labels, _ = expected[int(image_id)]
    for k in range(P):
      mask = batch["region_masks"][row, k]
      if k >= len(labels):
        assert not mask.any() and not batch["region_valid"][row, k]
        continue
      wanted = np.isin(batch["semantic"][row], values[np.asarray(labels[k]) - 1])
      np.testing.assert_array_equal(mask, wanted.astype(np.uint8), err_msg=f"image {image_id} candidate {k}")
      assert batch["region_valid"][row, k] == wanted.any()
      checked += 1
  return checked


def test_batches_carry_the_files_candidates_moved_with_the_augmentation(candidate_set):
  config, expected = candidate_set
  augmented = ml_collections.ConfigDict(config.to_dict())
  augmented.dataset.augment.update(scale_range=(0.6, 1.8), flip=True)
  batches = [compact.expand(next(it)) for it in [pipeline.make_train_iterator(augmented)] for _ in range(4)]
  batches += [compact.expand(b) for b in pipeline.make_eval_iterator(config)]
  assert sum(_check_rows(b, expected) for b in batches) > 4 * 4 * 3
  scales = np.concatenate([b["scale"] for b in batches[:4]])
  assert scales.min() < 0.9 and scales.max() > 1.2  # resized both ways, cropped and padded


def test_a_flipped_rows_candidates_are_the_flipped_masks(candidate_set):
  config, expected = candidate_set
  flip_only = ml_collections.ConfigDict(config.to_dict())
  flip_only.dataset.augment.update(scale_range=(1.0, 1.0), flip=True)
  split = config.dataset.region_proposal_dirs["train2017"]
  names = coco.image_file_names(config.dataset.root, "train2017")
  flipped = []
  for batch in [compact.expand(next(it)) for it in [pipeline.make_train_iterator(flip_only)] for _ in range(3)]:
    for row, image_id in enumerate(batch["image_id"]):
      path = f"{split}/{names[int(image_id)].rsplit('.', 1)[0]}.mat"
      masks, valid = region_candidate_files.masks(*region_candidate_files.read(path)[:2], P)
      image = expected[int(image_id)][2]
      mirror = not np.array_equal(np.rint(batch["image"][row] * 255), image)
      if mirror:
        np.testing.assert_array_equal(np.rint(batch["image"][row] * 255), image[:, ::-1])
      np.testing.assert_array_equal(batch["region_masks"][row], masks[..., ::-1] if mirror else masks)
      np.testing.assert_array_equal(batch["region_valid"][row], valid)
      flipped.append(mirror)
  assert 0 < sum(flipped) < len(flipped)


def test_one_compile_for_any_candidate_count(candidate_set):
  """Images with 3 to 9 candidates (P = 6) give batches of one shape: a jitted function of them traces once."""
  config, _ = candidate_set
  traces = []

  @jax.jit
  def boxes(masks, valid):
    traces.append(masks.shape)
    return sds.region_boxes(masks) * valid[..., None]

  counts = set()
  for batch in [compact.expand(next(it)) for it in [pipeline.make_train_iterator(config)] for _ in range(4)]:
    assert batch["region_masks"].shape == (4, P, H, W) and batch["region_valid"].shape == (4, P)
    boxes(batch["region_masks"], batch["region_valid"]).block_until_ready()
    counts |= set(batch["region_valid"].sum(1).tolist())
  assert len(traces) == 1 and len(counts) > 1


def test_a_relative_directory_is_in_the_root_and_the_count_is_required(candidate_set):
  config, _ = candidate_set
  relative = ml_collections.ConfigDict(config.to_dict())
  absolute = relative.dataset.region_proposal_dirs["val2017"]
  relative.dataset.region_proposal_dirs["val2017"] = "../mcg_val2017"
  regions = pipeline._region_candidates(relative, "val2017")  # pylint: disable=protected-access
  assert os.path.samefile(regions.__self__.directory, absolute)
  relative.dataset.num_region_proposals = 0
  with pytest.raises(ValueError, match="region_proposal_dirs: .* set dataset.num_region_proposals"):
    pipeline._region_candidates(relative, "val2017")  # pylint: disable=protected-access
  relative.dataset.region_proposal_dirs["val2017"] = ""
  assert pipeline._region_candidates(relative, "val2017") is None  # pylint: disable=protected-access
