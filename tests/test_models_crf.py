"""The CRF models: CRF-as-RNN on a tiny FCN trains end to end without recompiling; DenseCRF post-processing leaves
training to its base and labels from the CRF's marginals; and the CRF's effect on the synthetic scenes with coarse
unaries (as from a stride-8 head), measured against the ground truth."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from segjax.data import synthetic
from segjax.evaluation.semantic import confusion_matrix, semantic_metrics
from segjax.layers.crf_rnn import CRFasRNN
from segjax.models import crf_rnn, dense_crf as dense_crf_model, fcn, get_model
from segjax.ops.crf import dense_crf

INFO = ml_collections.ConfigDict({"num_semantic_classes": 3})
TINY_FCN = {"name": "fcn", "backbone": "resnet", "depth": 18, "width": 8, "output_stride": 32, "skips": ("C4", "C3"),
            "dtype": "float32"}
DEEPLAB_CRF = {"num_iterations": 10, "w_bilateral": 4.0, "theta_alpha": 121.0, "theta_beta": 5.0, "w_spatial": 3.0,
               "theta_gamma": 3.0}  # DeepLab v1 LargeFOV's cross-validated values (Chen et al. 2015, Sec. 4)


def _batch(rng, n=2, size=64):
  """Two-colour scenes: a disc of class 1 or 2 on a background of class 0."""
  ys, xs = np.mgrid[:size, :size]
  semantic = np.zeros((n, size, size), np.int32)
  for b in range(n):
    cy, cx, r = rng.uniform(20, 44), rng.uniform(20, 44), rng.uniform(8, 16)
    semantic[b][(ys - cy) ** 2 + (xs - cx) ** 2 < r * r] = 1 + b % 2
  colours = np.array([(0.2, 0.5, 0.2), (0.9, 0.2, 0.2), (0.2, 0.2, 0.9)], np.float32)
  image = np.clip(colours[semantic] + rng.normal(0, 0.01, semantic.shape + (3,)), 0, 1).astype(np.float32)
  return {"image": image, "semantic": semantic}


def test_crf_rnn_trains_end_to_end_without_recompiling():
  config = ml_collections.ConfigDict({"name": "crf_rnn", "base": TINY_FCN, "crf": {"theta_alpha": 20.0}})
  module = get_model("crf_rnn").build(config, INFO)
  rng = np.random.default_rng(0)
  batch = _batch(rng)
  variables = module.init(jax.random.key(0), batch["image"])
  assert set(variables["params"]) == {"base", "crf"}
  assert set(variables["params"]["crf"]) == {"spatial_ker_weights", "bilateral_ker_weights", "compatibility"}
  optimizer = optax.adam(3e-3)
  traces = []

  @jax.jit
  def step(params, batch_stats, opt_state, batch):
    traces.append(1)

    def loss_fn(params):
      outputs, updates = module.apply({"params": params, "batch_stats": batch_stats}, batch["image"], train=True,
                                      mutable=["batch_stats"])
      value, aux = crf_rnn.loss(outputs, batch, config)
      return value, (aux, updates["batch_stats"])

    (value, (aux, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    deltas, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, deltas), batch_stats, opt_state, value, aux, grads

  params, batch_stats, opt_state = variables["params"], variables["batch_stats"], optimizer.init(variables["params"])
  losses = []
  for i in range(10):
    params, batch_stats, opt_state, value, aux, grads = step(params, batch_stats, opt_state,
                                                             batch if i < 9 else _batch(rng))
    losses.append(float(value))
    assert float(aux["crf_overflow"]) == 0
  assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads["crf"]))  # gradients reach the CRF
  assert np.isfinite(losses).all() and np.mean(losses[6:9]) < 0.7 * losses[0], losses
  assert len(traces) == 1
  crf_images = []

  def record_crf_image(call, args, kwargs, context):
    if isinstance(context.module, CRFasRNN):
      crf_images.append(args[1])
    return call(*args, **kwargs)

  with nn.intercept_methods(record_crf_image):
    outputs = module.apply({"params": params, "batch_stats": batch_stats}, batch["image"])
  assert outputs["logits"].shape == outputs["unary_logits"].shape == (2, 64, 64, 3)
  # The base normalises its input by ImageNet's mean and std; the CRF's bilateral kernel reads the image in 0..255.
  np.testing.assert_allclose(crf_images[0], 255 * batch["image"], rtol=1e-6)
  assert crf_rnn.predict(outputs, config)["labels"].dtype == jnp.int32
  # Uniform colour noise holds more lattice points than the default capacity: the loss says so.
  noise = dict(batch, image=np.random.default_rng(2).uniform(0, 1, batch["image"].shape).astype(np.float32))
  assert float(step(params, batch_stats, opt_state, noise)[4]["crf_overflow"]) == 1


def test_dense_crf_postprocessing_trains_the_base_and_labels_from_the_marginals():
  config = ml_collections.ConfigDict({"name": "dense_crf", "base": TINY_FCN, "crf": DEEPLAB_CRF})
  module = dense_crf_model.build(config, INFO)
  batch = _batch(np.random.default_rng(1))
  variables = module.init(jax.random.key(0), batch["image"])
  base = fcn.build(ml_collections.ConfigDict(TINY_FCN), INFO)
  train_outputs, _ = module.apply(variables, batch["image"], train=True, mutable=["batch_stats"])
  assert set(train_outputs) == {"logits"}  # no CRF in training
  base_outputs, _ = base.apply({k: v["base"] for k, v in variables.items()}, batch["image"], train=True,
                               mutable=["batch_stats"])
  np.testing.assert_allclose(dense_crf_model.loss(train_outputs, batch, config)[0],
                             fcn.loss(base_outputs, batch, config.base)[0], rtol=1e-6)
  outputs = jax.jit(lambda v, x: module.apply(v, x))(variables, batch["image"])
  expected = dense_crf(outputs["logits"], 255 * batch["image"], **DEEPLAB_CRF)
  np.testing.assert_allclose(outputs["crf_probabilities"], expected, atol=1e-5)
  np.testing.assert_array_equal(dense_crf_model.predict(outputs, config)["labels"], np.argmax(expected, -1))


def _coarse_unaries(labels, num_classes, factor):
  """log of the label frequencies in factor x factor cells, bilinearly upsampled (a stride-`factor` head that is
  right about every cell), mixed with 10% uniform; VOID pixels count for no class."""
  one_hot = np.eye(num_classes + 1)[np.where(labels == 255, num_classes, labels)][..., :num_classes]
  n, h, w, _ = one_hot.shape
  cells = one_hot.reshape(n, h // factor, factor, w // factor, factor, num_classes).mean((2, 4))
  upsampled = np.asarray(jax.image.resize(jnp.asarray(cells), (n, h, w, num_classes), "linear"))
  return np.log(0.9 * upsampled + 0.1 / num_classes).astype(np.float32)


def test_dense_crf_sharpens_coarse_unaries_on_the_synthetic_scenes():
  """DenseCRF with DeepLab's parameters lifts the mIoU of coarse unaries (the ground truth seen at stride 8) by more
  than 0.05 on 4 synthetic scenes of 128 x 128."""
  rng = np.random.default_rng(0)
  scenes = [synthetic.render_scene(rng, 128, 128) for _ in range(4)]
  images = np.stack([s[0] for s in scenes]).astype(np.float32)
  labels = np.stack([synthetic._TRAIN_ID[s[1] // 1000] for s in scenes]).astype(np.int32)
  num_classes = len(synthetic.CATEGORIES)
  unaries = _coarse_unaries(labels, num_classes, 8)
  q = jax.jit(lambda u, i: dense_crf(u, i, **DEEPLAB_CRF))(unaries, images)
  miou = {name: semantic_metrics(np.asarray(confusion_matrix(labels, prediction, num_classes)))["mIoU"]
          for name, prediction in (("coarse", unaries.argmax(-1)), ("crf", np.asarray(q).argmax(-1)))}
  print(f"mIoU coarse unaries {miou['coarse']:.4f}, with DenseCRF {miou['crf']:.4f}")
  assert miou["crf"] > miou["coarse"] + 0.05
