"""Multi-scale inputs (DeepLab-MSC max fusion, attention to scale): fusion by hand in NumPy, and DeepLab v1/v2 with
several scales: the scale-1 stream is the single-scale network, each scale is supervised, nothing recompiles."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from segjax.layers.multiscale import fuse_scales, scaled_size
from segjax.models import get_model


def test_fusion_equals_the_equations():
  rng = np.random.default_rng(0)
  scores = [rng.normal(size=(2, 5, 6, 4)).astype(np.float32) for _ in range(3)]
  h = rng.normal(size=(2, 5, 6, 3)).astype(np.float32)
  fused, weights = fuse_scales(scores, "attention", h)
  w = np.exp(h) / np.exp(h).sum(-1, keepdims=True)  # Eq. 2: softmax over scales
  expected = sum(w[..., s:s + 1] * scores[s] for s in range(3))  # Eq. 1: g = sum_s w^s f^s
  np.testing.assert_allclose(np.asarray(fused), expected, atol=1e-5)
  np.testing.assert_allclose(np.asarray(weights).sum(-1), 1, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(fuse_scales(scores, "max")[0]), np.max(scores, axis=0))
  assert scaled_size(321, 321, 0.75) == (241, 241) and scaled_size(321, 321, 0.5) == (161, 161)  # DeepLab's


CONFIGS = {
    "deeplab_v1": {"name": "deeplab_v1", "variant": "largefov", "width": 8, "dtype": "float32"},
    "deeplab_v2": {"name": "deeplab_v2", "depth": 18, "width": 8, "norm": "batch", "output_stride": 8,
                   "rates": (6, 12, 18, 24), "dtype": "float32"},
}


@pytest.mark.parametrize("name, fusion", [("deeplab_v1", "attention"), ("deeplab_v2", "max")])
def test_multiscale_models(name, fusion):
  model_lib = get_model(name)
  info = ml_collections.ConfigDict({"num_semantic_classes": 3})
  single = model_lib.build(ml_collections.ConfigDict(CONFIGS[name]), info)
  multi = model_lib.build(ml_collections.ConfigDict({**CONFIGS[name], "scales": (1.0, 0.75, 0.5),
                                                     "scale_fusion": fusion}), info)
  images = jax.random.uniform(jax.random.key(0), (2, 41, 49, 3))
  variables = multi.init(jax.random.key(1), images)
  outputs = jax.jit(multi.apply)(variables, images)
  assert outputs["logits"].shape == (2, 41, 49, 3) and len(outputs["scale_logits"]) == 3
  assert ("attention" in variables["params"]) == (fusion == "attention")
  if fusion == "attention":
    np.testing.assert_allclose(np.asarray(outputs["scale_weights"]).sum(-1), 1, atol=1e-5)
  # The scale-1 stream shares every weight with the single-scale network and computes the same scores.
  single_variables = {k: ({n: p for n, p in v.items() if n != "attention"} if k == "params" else v)
                      for k, v in variables.items()}
  np.testing.assert_allclose(np.asarray(outputs["scale_logits"][0]),
                             np.asarray(single.apply(single_variables, images)["logits"]), atol=1e-5)
  batch = {"semantic": jnp.zeros((2, 41, 49), jnp.int32)}
  value, metrics = model_lib.loss(outputs, batch, ml_collections.ConfigDict({}))
  assert set(metrics) == {"scale0_loss", "scale1_loss", "scale2_loss"}
  main, _ = model_lib.loss({"logits": outputs["logits"]}, batch, ml_collections.ConfigDict({}))
  np.testing.assert_allclose(float(value), float(main) + sum(float(v) for v in metrics.values()), rtol=1e-5)


def test_bad_scales_are_named():
  info = ml_collections.ConfigDict({"num_semantic_classes": 3})
  with pytest.raises(ValueError, match="scale_fusion"):
    get_model("deeplab_v1").build(ml_collections.ConfigDict({**CONFIGS["deeplab_v1"], "scales": (1.0, 0.5)}), info)
  with pytest.raises(ValueError, match="config.model.scales"):
    get_model("deeplab_v2").build(ml_collections.ConfigDict({**CONFIGS["deeplab_v2"], "scales": (0.5, 1.0),
                                                             "scale_fusion": "max"}), info)
