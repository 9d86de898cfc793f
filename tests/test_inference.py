"""Predictor: the model's own `predict` per image (DenseCRF labels after the CRF, not the unaries' argmax), images of
any size and dtype mapped back to source pixels, exact flip equivariance of flip-averaged inference, normalised
multi-scale probabilities, valid-only instance detections, clear errors; a panoptic Predictor's map and
segments_info, written as COCO panoptic files, give through pq_compute the PQ the loop's evaluator reports."""
import json
import os

import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image

from segjax import models
from segjax.data import pipeline, synthetic
from segjax.evaluation import panoptic, panoptic_io
from segjax.evaluation.panoptic_evaluator import PanopticEvaluator
from segjax.inference import Predictor
from segjax.train import loop
from segjax.train import mesh as mesh_lib
from segjax.train.steps import make_eval_step
from train_util import tiny_config

SEMANTIC = ml_collections.ConfigDict({"name": "deeplab_v3", "depth": 18, "width": 8, "output_stride": 16,
                                      "multi_grid": None, "head": "aspp", "rates": (2, 4, 6), "aux": False,
                                      "aux_weight": 0.5, "dtype": "float32"})
INFO = ml_collections.ConfigDict({"num_semantic_classes": 4, "num_thing_classes": 3})


@pytest.fixture(scope="module")
def semantic():
  module = models.get_model("deeplab_v3").build(SEMANTIC, INFO)
  images = np.random.default_rng(0).uniform(size=(2, 40, 56, 3)).astype(np.float32)
  variables = module.init(jax.random.key(0), images[:1], train=False)
  return module, variables, images


def test_plain_prediction_is_the_model_output(semantic):
  module, variables, images = semantic
  results = Predictor(SEMANTIC, variables, INFO)(images)
  logits = module.apply(variables, images, train=False)["logits"]
  assert len(results) == 2 and results[0]["logits"].shape == (40, 56, 4)
  np.testing.assert_allclose(results[1]["logits"], logits[1], rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(results[1]["labels"], np.argmax(logits[1], -1))


def test_semantic_results_are_in_source_pixels(semantic):
  """A 20 x 28 image fitted into 40 x 56 is the model's input at 2x (bilinear); a 40 x 50 one is padded to 56 wide:
  labels and logits come back at the source's size, the padded one's equal to the model's on the padded input."""
  module, variables, images = semantic
  predictor = Predictor(SEMANTIC, variables, INFO, image_size=(40, 56))
  small = (255 * images[0, ::2, ::2]).round().astype(np.uint8)
  narrow = images[1, :, :50]
  small_result, narrow_result = predictor([small, narrow])
  assert small_result["labels"].shape == (20, 28) and small_result["logits"].shape == (20, 28, 4)
  padded = np.pad(narrow, ((0, 0), (0, 6), (0, 0)))[None]
  logits = np.asarray(module.apply(variables, padded, train=False)["logits"])[0, :, :50]
  np.testing.assert_allclose(narrow_result["logits"], logits, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(narrow_result["labels"], logits.argmax(-1))
  enlarged = jax.image.resize(small.astype(np.float32) / 255, (40, 56, 3), "linear")[None]
  labels = np.asarray(module.apply(variables, enlarged, train=False)["logits"]).argmax(-1)[0]
  np.testing.assert_array_equal(small_result["labels"], labels[1::2, 1::2])  # nearest: the centre of each 2 x 2


def test_flip_averaged_prediction_is_flip_equivariant(semantic):
  _, variables, images = semantic
  predictor = Predictor(SEMANTIC, variables, INFO, flip=True)
  direct, mirrored = predictor(images)[0], predictor(images[:, :, ::-1])[0]
  np.testing.assert_allclose(mirrored["logits"], direct["logits"][:, ::-1], atol=1e-5)


def test_multi_scale_gives_normalised_probabilities(semantic):
  _, variables, images = semantic
  (result, _) = Predictor(SEMANTIC, variables, INFO, scales=(0.75, 1.0, 1.25))(images)
  assert result["logits"].shape == (40, 56, 4)
  np.testing.assert_allclose(np.exp(result["logits"]).sum(-1), 1.0, rtol=1e-5)
  plain = Predictor(SEMANTIC, variables, INFO)(images)[0]
  assert not np.allclose(result["logits"], plain["logits"])


def test_dense_crf_predictor_labels_come_after_the_crf():
  """DeepLab's DenseCRF on a tiny random FCN: the Predictor's labels are `dense_crf.predict`'s (the argmax of the
  CRF's marginals) and differ from the argmax of the unaries, which the CRF smooths towards the image's edges."""
  fcn = {"name": "fcn", "backbone": "resnet", "depth": 18, "width": 8, "output_stride": 32, "skips": ("C4", "C3"),
         "dtype": "float32"}
  crf = {"num_iterations": 10, "w_bilateral": 4.0, "theta_alpha": 121.0, "theta_beta": 5.0, "w_spatial": 3.0,
         "theta_gamma": 3.0}
  config = ml_collections.ConfigDict({"name": "dense_crf", "base": fcn, "crf": crf})
  model_lib = models.get_model("dense_crf")
  info = ml_collections.ConfigDict({"num_semantic_classes": 3})
  module = model_lib.build(config, info)
  ys, xs = np.mgrid[:48, :64]
  image = np.where(((ys - 24) ** 2 + (xs - 30) ** 2 < 15 ** 2)[..., None], [0.9, 0.2, 0.2], [0.2, 0.5, 0.2])
  image = image.astype(np.float32)[None]
  variables = module.init(jax.random.key(0), image, train=False)
  (result,) = Predictor(config, variables, info)(image)
  outputs = module.apply(variables, image, train=False)
  expected = np.asarray(model_lib.predict(outputs, config)["labels"][0])
  np.testing.assert_array_equal(result["labels"], expected)
  unaries = np.asarray(outputs["logits"][0]).argmax(-1)
  assert (expected != unaries).mean() > 0.01


def test_instance_predictor_returns_valid_detections_only(monkeypatch):
  monkeypatch.setitem(models._MODELS, "per_class_masks", "per_class_instance_model")
  config = ml_collections.ConfigDict({"name": "per_class_masks"})
  module = models.get_model("per_class_masks").build(config, INFO)
  images = np.random.default_rng(1).uniform(size=(2, 24, 32, 3)).astype(np.float32)
  variables = module.init(jax.random.key(3), images[:1])
  results = Predictor(config, variables, INFO)(images)
  expected = models.get_model("per_class_masks").predict(module.apply(variables, images), config)
  for i, result in enumerate(results):
    keep = np.asarray(expected["valid"][i])
    assert result["masks"].shape == (keep.sum(), 24, 32) and result["boxes"].shape == (keep.sum(), 4)
    np.testing.assert_array_equal(result["labels"], np.asarray(expected["labels"][i])[keep])


def test_instance_results_are_in_source_pixels(monkeypatch):
  """An image fitted into the test size at 2x: boxes are the model's / 2, masks at the source size; a uint8 image
  gives the results of the same image as floats / 255."""
  monkeypatch.setitem(models._MODELS, "per_class_masks", "per_class_instance_model")
  config = ml_collections.ConfigDict({"name": "per_class_masks"})
  model_lib = models.get_model("per_class_masks")
  module = model_lib.build(config, INFO)
  image = np.random.default_rng(2).integers(0, 256, (12, 14, 3)).astype(np.uint8)
  variables = module.init(jax.random.key(3), image[None] / 255.0)
  predictor = Predictor(config, variables, INFO, image_size=(24, 32))
  ours, as_float = predictor([image, image / 255.0])
  enlarged = np.round(255 * np.asarray(jax.image.resize(image / 255.0, (24, 28, 3), "linear"))) / 255  # uint8 levels
  enlarged = np.pad(enlarged, ((0, 0), (0, 4), (0, 0)))[None]
  expected = jax.device_get(model_lib.predict(module.apply(variables, enlarged), config))
  keep = expected["valid"][0]
  assert keep.any() and ours["masks"].shape == (keep.sum(), 12, 14)
  np.testing.assert_allclose(ours["boxes"], np.minimum(expected["boxes"][0][keep] / 2, [14, 12, 14, 12]), atol=1e-5)
  np.testing.assert_allclose(ours["scores"], expected["scores"][0][keep], atol=1e-6)
  for key in ("boxes", "scores", "labels", "masks"):
    np.testing.assert_allclose(ours[key], as_float[key], atol=1e-5)


def test_errors_name_the_problem(semantic):
  _, variables, images = semantic
  predictor = Predictor(SEMANTIC, variables, INFO)
  with pytest.raises(ValueError, match=r"\[N, H, W, 3\]"):
    predictor(images[0])
  with pytest.raises(ValueError, match=r"image 1 must be \[H, W, 3\]"):
    predictor([images[0], images[1, :, :, :2]])
  with pytest.raises(ValueError, match="image 0 is float.*\\[0, 1\\]"):
    predictor([255 * images[0]])
  with pytest.raises(ValueError, match="image 0 has dtype int64"):
    predictor([np.zeros((8, 8, 3), np.int64)])
  with pytest.raises(ValueError, match="pass `info`"):
    Predictor(SEMANTIC, variables)
  with pytest.raises(ValueError, match="positive"):
    Predictor(SEMANTIC, variables, INFO, scales=(0.0,))


def test_panoptic_predictor_gives_the_pq_of_the_loops_evaluator(tmp_path, monkeypatch):
  """Synthetic 64 x 64 images read as a COCO-format folder at a test size of 96 x 80 (fitted at 1.25x to 80 x 80,
  padded): the loop's eval step and PanopticEvaluator on one side; on the other, the Predictor on the image files,
  its panoptic maps and segments_info written by save_panoptic_predictions and scored by pq_compute."""
  monkeypatch.setitem(models._MODELS, "colour_panoptic", "colour_panoptic_model")
  root = tmp_path / "data"
  synthetic.ensure_synthetic(str(root), num_train=2, num_val=6, image_size=(64, 64))
  config = tiny_config(root, **{"dataset.name": "coco", "dataset.image_size": (96, 80)})
  config.model = ml_collections.ConfigDict({"name": "colour_panoptic"})
  info = pipeline.dataset_info(config)
  model_lib = models.get_model("colour_panoptic")
  module = model_lib.build(config.model, info)
  variables = module.init(jax.random.key(0), np.zeros((1, 96, 80, 3), np.float32))
  mesh = mesh_lib.make_mesh()
  evaluator = PanopticEvaluator(info, str(tmp_path / "workdir"))
  eval_step = make_eval_step(module, model_lib, config.model, evaluator, mesh, mesh_lib.replicated(mesh))
  metrics = loop.evaluate(eval_step, variables, config, evaluator, mesh, {"image", "valid_image"}, "panoptic")

  with open(info.eval_panoptic_json) as f:
    ground_truth = json.load(f)
  images = {i["id"]: i["file_name"] for i in ground_truth["images"]}
  predictor = Predictor(config, variables)
  files = []
  for annotation in ground_truth["annotations"]:
    with Image.open(os.path.join(root, "val2017", images[annotation["image_id"]])) as image:
      (result,) = predictor([np.asarray(image.convert("RGB"))])
    assert result["panoptic"].shape == (64, 64)
    assert {s["id"] for s in result["segments_info"]} == set(np.unique(result["panoptic"])) - {0}
    files.append((annotation["image_id"], annotation["file_name"], result["panoptic"], result["segments_info"]))
  pred_json, _ = panoptic_io.save_panoptic_predictions(str(tmp_path), "pred.json", files, ground_truth["categories"])
  expected = panoptic.pq_compute(info.eval_panoptic_json, pred_json, gt_folder=info.eval_panoptic_dir, num_workers=1)
  assert metrics["PQ"] > 0.3  # the comparison has something to compare
  for split, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
    for name in ("pq", "sq", "rq"):
      assert metrics[f"{name.upper()}{suffix}"] == pytest.approx(expected[split][name], abs=1e-9)
