"""Predictor: the model's own outputs per image, exact flip equivariance of flip-averaged inference,
normalised multi-scale probabilities, valid-only instance detections, clear errors."""
import jax
import ml_collections
import numpy as np
import pytest

from segjax import models
from segjax.inference import Predictor

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


def test_errors_name_the_problem(semantic):
  _, variables, images = semantic
  with pytest.raises(ValueError, match=r"\[N, H, W, 3\]"):
    Predictor(SEMANTIC, variables, INFO)(images[0])
  with pytest.raises(ValueError, match="pass `info`"):
    Predictor(SEMANTIC, variables)
  with pytest.raises(ValueError, match="positive"):
    Predictor(SEMANTIC, variables, INFO, scales=(0.0,))
