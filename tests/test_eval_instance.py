"""InstanceEvaluator on the eval pipeline: ground-truth masks as detections score AP 1 at the source size, and
the mapping back from a resized, padded batch to the source image is right."""
import json
import os

import numpy as np
import pytest

from segjax.data import compact
from segjax.data import pipeline
from segjax.data import synthetic
from segjax.evaluation.instance import InstanceEvaluator, to_source_image
from train_util import tiny_config


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
  """The synthetic set written at 64x64 and read as a COCO folder, so batches may have another size."""
  root = tmp_path_factory.mktemp("instance_eval") / "data"
  synthetic.write_dataset(str(root), num_train=4, num_val=6, image_size=(64, 64))
  return root


def _config(root, image_size):
  config = tiny_config(root, **{"dataset.image_size": image_size, "dataset.max_instances": 32})
  config.dataset.name = "coco"
  config.dataset.data_dir = f"{root}_tfds_{image_size[0]}x{image_size[1]}"
  return config


def _ground_truth_as_detections(evaluator, config, class_agnostic=False):
  """Feeds each eval batch's own ground-truth masks (non-crowd) back as score-1 detections (all labelled 1 when
  class_agnostic)."""
  for batch in map(compact.expand, pipeline.make_eval_iterator(config)):
    keep = batch["instance_valid"] & ~batch["is_crowd"]
    labels = np.ones_like(batch["classes"]) if class_agnostic else batch["classes"]
    predictions = {"boxes": batch["boxes"], "scores": np.ones(keep.shape, np.float32),
                   "labels": labels, "masks": batch["masks"].astype(np.float32), "valid": keep}
    evaluator.update((), predictions, batch)


def test_ground_truth_at_source_size_scores_one(coco_root, tmp_path):
  config = _config(coco_root, (64, 64))
  evaluator = InstanceEvaluator(pipeline.dataset_info(config), str(tmp_path))
  _ground_truth_as_detections(evaluator, config)
  metrics = evaluator.result()
  assert metrics["mask_AP"] == pytest.approx(1.0)
  assert metrics["mask_AP50"] == pytest.approx(1.0) and metrics["box_AP50"] == pytest.approx(1.0)
  with open(os.path.join(tmp_path, "coco_results_segm.json")) as f:
    results = json.load(f)
  assert results and {"image_id", "category_id", "segmentation", "score"} <= set(results[0])
  assert metrics["mask_AP_agnostic"] == pytest.approx(1.0)
  assert metrics["boundary_AP"] == pytest.approx(1.0)


def test_boundary_ap_can_be_left_out(coco_root, tmp_path):
  """config.eval.boundary_ap False reaches the evaluator through make_evaluator: no boundary_* metrics, the rest
  unchanged."""
  from segjax.train.loop import make_evaluator  # pylint: disable=g-import-not-at-top
  config = _config(coco_root, (64, 64))
  evaluator = make_evaluator("instance", pipeline.dataset_info(config), str(tmp_path), boundary_ap=False)
  _ground_truth_as_detections(evaluator, config)
  metrics = evaluator.result()
  assert metrics["mask_AP"] == pytest.approx(1.0) and not any(k.startswith("boundary_") for k in metrics)


def test_class_agnostic_mask_ap(coco_root, tmp_path):
  """Every detection labelled 1: the class-aware mask AP drops, the class-agnostic one (categories merged) is 1."""
  config = _config(coco_root, (64, 64))
  evaluator = InstanceEvaluator(pipeline.dataset_info(config), str(tmp_path))
  _ground_truth_as_detections(evaluator, config, class_agnostic=True)
  metrics = evaluator.result()
  assert metrics["mask_AP"] < 0.9
  assert metrics["mask_AP_agnostic"] == pytest.approx(1.0) and metrics["mask_AP50_agnostic"] == pytest.approx(1.0)


def test_ground_truth_from_a_smaller_padded_batch(coco_root, tmp_path):
  """Batches of 40x48 hold the 64x64 images scaled by 0.625 and padded; masks come back resized."""
  config = _config(coco_root, (40, 48))
  evaluator = InstanceEvaluator(pipeline.dataset_info(config), str(tmp_path))
  _ground_truth_as_detections(evaluator, config)
  metrics = evaluator.result()
  assert metrics["mask_AP50"] > 0.9 and metrics["box_AP50"] > 0.9  # down then up: boundaries move a pixel
  assert metrics["mask_AP"] < 1.0


def test_to_source_image_unscales_and_unpads():
  masks = np.zeros((1, 40, 48), np.float32)
  masks[0, 5:15, 10:30] = 1.0  # the 64x80 source shrunk by 0.5 fills the top-left 32x40 of the batch
  boxes, resized = to_source_image(np.array([[10, 5, 30, 15]], np.float32), masks, 0.5, (64, 80))
  np.testing.assert_allclose(boxes, [[20, 10, 60, 30]])
  assert resized.shape == (1, 64, 80)
  inside = resized[0] > 0.5
  rows, cols = np.flatnonzero(inside.any(1)), np.flatnonzero(inside.any(0))
  assert abs(rows[0] - 10) <= 1 and abs(rows[-1] - 29) <= 1 and abs(cols[0] - 20) <= 1 and abs(cols[-1] - 59) <= 1


def test_refuses_a_split_without_instances():
  info = type("Info", (), {"eval_instances_json": None, "name": "voc"})()
  with pytest.raises(ValueError, match="no instances JSON"):
    InstanceEvaluator(info)
