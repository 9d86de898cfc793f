"""The loop's panoptic path: PanopticEvaluator against pq_compute on the same predictions written as COCO panoptic
files, its mapping back to the source image, and a tiny Panoptic FPN run through train_and_evaluate that writes PQ
to metrics.jsonl and a panoptic picture."""
import dataclasses
import json
import os

import numpy as np
import pytest

from segjax.data import pipeline
from segjax.evaluation import panoptic, panoptic_io
from segjax.evaluation.panoptic_evaluator import PanopticEvaluator, to_source_map
from segjax.train.loop import train_and_evaluate
from test_models_panoptic_fpn import tiny_config as tiny_model_config
from train_util import FAST_OPTIMIZER, read_metrics, tiny_config

SEGMENTS = 24  # prediction rows per image, padded


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  config = tiny_config(tmp_path_factory.mktemp("panoptic_data") / "data")
  return config, pipeline.dataset_info(config)


def _predictions(info, local_batch, corrupt, things_only=False):
  """The ground truth of each row as a prediction in the model's contract (ids renumbered 1.., thing labels and
  stuff classes); with `corrupt`, the first segment is erased and the last one gets the next category; with
  `things_only`, the stuff segments are left out."""
  with open(info.eval_panoptic_json) as f:
    annotations = {a["image_id"]: a for a in json.load(f)["annotations"]}
  stuff = list(info.stuff_category_ids)
  rows = {k: [] for k in ("panoptic", "segment_id", "segment_category", "segment_is_thing", "segment_valid")}
  files = []
  for image_id in local_batch["image_id"]:
    pred = np.zeros(local_batch["image"].shape[1:3], np.int32)
    ids, categories, is_thing, coco_segments = [np.zeros(SEGMENTS, t) for t in (np.int32, np.int32, bool)] + [[]]
    if image_id >= 0:
      annotation = annotations[int(image_id)]
      gt = panoptic_io.read_panoptic_png(os.path.join(info.eval_panoptic_dir, annotation["file_name"]))
      segments = annotation["segments_info"][1:] if corrupt else annotation["segments_info"]
      if things_only:
        segments = [s for s in segments if s["category_id"] in info.category_to_thing_label]
      for k, segment in enumerate(segments):
        category = segment["category_id"]
        if corrupt and k == len(segments) - 1:
          category = info.categories[(info.semantic_category_ids.index(category) + 1) % len(info.categories)].id
        pred[gt == segment["id"]] = k + 1
        ids[k], is_thing[k] = k + 1, category in info.category_to_thing_label
        categories[k] = info.category_to_thing_label[category] if is_thing[k] else stuff.index(category) + 1
        coco_segments.append({"id": k + 1, "category_id": category})
      files.append((int(image_id), annotation["file_name"], pred, coco_segments))
    for key, value in zip(rows, (pred, ids, categories, is_thing, ids > 0)):
      rows[key].append(value)
  return {k: np.stack(v) for k, v in rows.items()}, files


@pytest.mark.parametrize("corrupt,things_only", [(False, False), (True, False), (True, True)])
def test_evaluator_equals_pq_compute_on_the_written_predictions(data, tmp_path, corrupt, things_only):
  """With things_only (predictions without stuff), only PQ_th, SQ_th and RQ_th are reported, pq_compute's Things."""
  config, info = data
  evaluator = PanopticEvaluator(dataclasses.replace(info, eval_instances_json=None), str(tmp_path),  # PQ only
                                things_only=things_only)
  files = []
  for local_batch in pipeline.make_eval_iterator(config):
    predictions, batch_files = _predictions(info, local_batch, corrupt, things_only)
    files += batch_files
    evaluator.update((), predictions, local_batch)
  metrics = evaluator.result()
  assert len(files) == info.num_eval
  with open(info.eval_panoptic_json) as f:
    categories = json.load(f)["categories"]
  pred_json, _ = panoptic_io.save_panoptic_predictions(str(tmp_path), "pred.json", files, categories)
  expected = panoptic.pq_compute(info.eval_panoptic_json, pred_json, gt_folder=info.eval_panoptic_dir,
                                 num_workers=1)
  splits = (("Things", "_th"),) if things_only else (("All", ""), ("Things", "_th"), ("Stuff", "_st"))
  assert set(metrics) == {f"{name}{suffix}" for _, suffix in splits for name in ("PQ", "SQ", "RQ")}
  for split, suffix in splits:
    for name in ("pq", "sq", "rq"):
      assert metrics[f"{name.upper()}{suffix}"] == pytest.approx(expected[split][name], abs=1e-12)
  if things_only:
    assert 0.2 < metrics["PQ_th"] < 0.95
  elif corrupt:
    assert 0.2 < metrics["PQ"] < 0.95
  else:  # crowd segments predicted as themselves are neither matched nor false positives
    assert metrics["PQ"] == metrics["SQ"] == metrics["RQ"] == 1.0


def test_things_panoptic_instance_models_get_pq_where_the_split_has_a_panoptic_json(data, tmp_path):
  """An instance model with THINGS_PANOPTIC (the instance CRF) is scored by PQ over the things and its AP; without
  a panoptic JSON, by its AP alone."""
  from segjax.evaluation.instance import InstanceEvaluator  # pylint: disable=g-import-not-at-top
  from segjax.train.loop import make_evaluator  # pylint: disable=g-import-not-at-top
  _, info = data
  evaluator = make_evaluator("instance", info, str(tmp_path), things_panoptic=True)
  assert isinstance(evaluator, PanopticEvaluator) and evaluator.things_only and evaluator.instances is not None
  assert isinstance(make_evaluator("instance", info, str(tmp_path)), InstanceEvaluator)
  no_panoptic = dataclasses.replace(info, eval_panoptic_json=None)
  assert isinstance(make_evaluator("instance", no_panoptic, str(tmp_path), things_panoptic=True), InstanceEvaluator)


def test_to_source_map_crops_the_padding_and_resizes_by_nearest():
  blocks = np.arange(12, dtype=np.int32).reshape(3, 4)
  batch_map = np.full((8, 10), 99, np.int32)  # a 3 x 4 source scaled 2x into 6 x 8, padded to 8 x 10
  batch_map[:6, :8] = blocks.repeat(2, 0).repeat(2, 1)
  np.testing.assert_array_equal(to_source_map(batch_map, 2.0, (3, 4)), blocks)
  np.testing.assert_array_equal(to_source_map(batch_map[:6, :8], 1.0, (6, 8)), batch_map[:6, :8])


def test_evaluator_needs_panoptic_annotations(data):
  _, info = data
  with pytest.raises(ValueError, match="no panoptic JSON.*config.dataset.eval_split"):
    PanopticEvaluator(dataclasses.replace(info, eval_panoptic_json=None))


def _image_blind_semantic_ce(data_root):
  """The entropy (nats) of the training split's semantic-branch label frequencies (things as one "other" class, then
  the stuff classes; segjax.ops.panoptic.semantic_targets): the cross-entropy of the best predictor that ignores the
  image and gives every pixel the same distribution."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from segjax.ops.panoptic import semantic_targets  # pylint: disable=g-import-not-at-top
  with open(os.path.join(data_root, "annotations", "panoptic_train2017.json")) as f:
    is_thing = [bool(c["isthing"]) for c in json.load(f)["categories"]]
  folder = os.path.join(data_root, "semantic_train2017")
  labels = np.concatenate([np.asarray(semantic_targets(np.asarray(Image.open(os.path.join(folder, name))), is_thing))
                           .ravel() for name in sorted(os.listdir(folder))])
  counts = np.bincount(labels[labels != 255])
  shares = counts[counts > 0] / counts.sum()
  return float(-(shares * np.log(shares)).sum())


@pytest.mark.slow
def test_tiny_panoptic_fpn_run_writes_pq_and_pictures(tmp_path):
  """20 steps of FAST_OPTIMIZER: the semantic branch's cross-entropy (loss_sem_seg / semantic_loss_weight) ends below
  0.75 x that of the best image-blind predictor (the entropy of the training split's semantic-branch label shares,
  _image_blind_semantic_ce); PQ and the pictures are written."""
  steps = 20
  config = tiny_config(tmp_path / "data", total_steps=steps, eval_every_steps=steps, checkpoint_every_steps=steps,
                       **{"dataset.num_train": 16, "dataset.num_val": 8, **FAST_OPTIMIZER})
  config.model = tiny_model_config()
  metrics = train_and_evaluate(config, str(tmp_path / "workdir"))
  evaluation = read_metrics(tmp_path / "workdir", "eval")
  assert [r["step"] for r in evaluation] == [steps]
  for name in ("PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st", "box_AP", "mask_AP"):
    assert evaluation[0][name] == pytest.approx(metrics[name])
    assert -1.0 <= metrics[name] <= 1.0
  assert 0.0 <= metrics["PQ"] <= 1.0
  train = read_metrics(tmp_path / "workdir")
  assert all(np.isfinite(r["loss_sem_seg"]) and r["loss_sem_seg"] > 0 for r in train)
  semantic_losses = [r["loss_sem_seg"] for r in train]
  image_blind = _image_blind_semantic_ce(tmp_path / "data")
  assert np.mean(semantic_losses[-3:]) / config.model.semantic_loss_weight < 0.75 * image_blind, semantic_losses
  assert os.path.getsize(tmp_path / "workdir" / "pictures" / f"eval_step{steps:06d}.png") > 0
