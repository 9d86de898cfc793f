"""segjax.ops.platform: the XLA:CPU kernels (convolutions as dots, optimization barriers, the chunked gather, Mask
R-CNN's mask-head loop, U-Net's up-convolution as a dot and its pooling as a reshape) only in programs lowered for
CPU; TPU and GPU programs, lowered here from this CPU host, hold plain lax only; and both implementations give the
same outputs and gradients."""
import sys
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from segjax.models import deeplab, mask_rcnn, unet
from segjax.ops import platform
from segjax.ops.gather import weighted_gather

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from test_models_mask_rcnn import _batch, tiny_config  # pylint: disable=g-import-not-at-top,wrong-import-position


def _deeplab(head, train=True):
  """DeepLab v3 (ASPP) or torchvision's FCN head on a ResNet-50 of width 8, output stride 8 on 48x48 images: the
  bottlenecks' 1x1 convolutions and (ASPP rates 12, 24 on a 6x6 map) mostly-padding atrous kernels take the CPU
  paths. train=False: batch norm by its running statistics (a loss that is linear in each norm's input)."""
  config = ml_collections.ConfigDict({"name": "deeplab_v3", "depth": 50, "width": 8, "output_stride": 8,
                                      "multi_grid": (1, 2, 4), "head": head, "rates": (12, 24, 36), "aux": True,
                                      "aux_weight": 0.4, "dtype": "float32"})
  module = deeplab.build(config, ml_collections.ConfigDict({"num_semantic_classes": 3}))
  rng = np.random.default_rng(0)
  batch = {"image": rng.uniform(size=(2, 48, 48, 3)).astype(np.float32),
           "semantic": rng.integers(0, 3, size=(2, 48, 48)).astype(np.int32)}

  def loss(params, batch_stats, batch, key):
    outputs, _ = module.apply({"params": params, "batch_stats": batch_stats}, batch["image"], train=train,
                              mutable=["batch_stats"], rngs={"dropout": key})
    return deeplab.loss(outputs, batch, config)[0]

  return module, loss, batch


def _mask_rcnn(norm="batch"):
  """Mask R-CNN on a ResNet-50-FPN of width 8, 64x64 images (the RoIAlign gather, the mask head and its loop)."""
  config = tiny_config()
  config.depth = 50
  config.norm = norm
  module = mask_rcnn.build(config, ml_collections.ConfigDict({"num_thing_classes": 1}))
  batch = _batch(3)

  def loss(params, batch_stats, batch, key):
    outputs, _ = module.apply({"params": params, "batch_stats": batch_stats}, batch["image"], train=True,
                              mutable=["batch_stats"], rngs={"sampling": key},
                              targets={k: batch[k] for k in mask_rcnn.FORWARD_KEYS})
    return mask_rcnn.loss(outputs, batch, config)[0]

  return module, loss, batch


def _unet():
  """The padded U-Net of width 4 on 32x32 images (its 2x2 up-convolutions and max pools, the 1x1 score conv); it
  has no batch statistics."""
  config = ml_collections.ConfigDict({"name": "unet", "width": 4, "padding": "same", "dtype": "float32"})
  module = unet.build(config, ml_collections.ConfigDict({"num_semantic_classes": 3}))
  rng = np.random.default_rng(0)
  batch = {"image": rng.uniform(size=(2, 32, 32, 3)).astype(np.float32),
           "semantic": rng.integers(0, 3, size=(2, 32, 32)).astype(np.int32)}

  def loss(params, batch_stats, batch, key):
    del batch_stats, key
    return unet.loss(module.apply({"params": params}, batch["image"], train=True), batch, config)[0]

  return module, loss, batch


MODELS = {"fcn_resnet50": lambda: _deeplab("fcn"), "deeplab_v3_resnet50": lambda: _deeplab("aspp"),
          "mask_rcnn_resnet50_fpn": _mask_rcnn, "unet": _unet}


def _train_step(name):
  """(jitted value-and-gradient of the model's training loss, abstract variables, batch)."""
  module, loss, batch = MODELS[name]()
  variables = jax.eval_shape(lambda: module.init(jax.random.key(0), batch["image"][:1], train=False))
  return jax.jit(jax.value_and_grad(loss)), variables, batch


@pytest.mark.parametrize("name", MODELS)
def test_training_step_for_tpu_and_gpu_holds_no_cpu_kernel(name):
  step, variables, batch = _train_step(name)
  traced = step.trace(variables["params"], variables.get("batch_stats", {}), batch, jax.random.key(0))
  texts = {p: traced.lower(lowering_platforms=(p,)).as_text(debug_info=True) for p in ("cpu", "tpu", "cuda")}
  # The CPU program holds the CPU kernels (else this test could not fail) ...
  assert platform.CPU_SCOPE in texts["cpu"] and "optimization_barrier" in texts["cpu"]
  for p in ("tpu", "cuda"):  # ... the accelerators' none of them, and lax's convolutions instead.
    assert platform.CPU_SCOPE not in texts[p], p
    assert "optimization_barrier" not in texts[p], p
    assert texts[p].count("stablehlo.convolution") > texts["cpu"].count("stablehlo.convolution"), p
    assert name != "unet" or "reduce_window" in texts[p], p  # the pooling (select-and-scatter in the gradient)


# Batch statistics over these tiny batches amplify float32 rounding through 50 layers: the comparison runs the norms
# on fixed statistics (DeepLab in eval mode, Mask R-CNN with frozen norms, as torchvision trains it).
LINEAR_NORM_MODELS = {"deeplab_v3_resnet50": lambda: _deeplab("aspp", train=False),
                      "mask_rcnn_resnet50_fpn": lambda: _mask_rcnn(norm="frozen"), "unet": _unet}


@pytest.mark.parametrize("name", ["deeplab_v3_resnet50", "unet",
                                  pytest.param("mask_rcnn_resnet50_fpn", marks=pytest.mark.slow)])
def test_cpu_and_plain_kernels_give_the_same_loss_and_gradients(name):
  module, loss, batch = LINEAR_NORM_MODELS[name]()
  variables = jax.jit(lambda: module.init(jax.random.key(0), batch["image"][:1], train=False))()
  results = {}
  for mode in ("cpu", "xla"):
    with platform.kernels(mode):  # a fresh jit per mode: the choice is made when tracing
      step = jax.jit(jax.value_and_grad(loss))
      results[mode] = step(variables["params"], variables.get("batch_stats", {}), batch, jax.random.key(1))
  (loss_cpu, grads_cpu), (loss_xla, grads_xla) = results["cpu"], results["xla"]
  np.testing.assert_allclose(loss_cpu, loss_xla, rtol=1e-5)
  for (path, g), r in zip(jax.tree_util.tree_leaves_with_path(grads_cpu), jax.tree.leaves(grads_xla)):
    np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4 * float(np.abs(r).max()) + 1e-9,
                               err_msg=jax.tree_util.keystr(path))
  assert any(float(np.abs(g).max()) > 0 for g in jax.tree.leaves(grads_xla))


def test_weighted_gather_implementations_agree_with_numpy():
  """out[u] = sum_k w[u, k] table[i[u, k]] (float64 NumPy), and the same gradients from both implementations."""
  rng = np.random.default_rng(0)
  table, weight = rng.normal(size=(50, 6)).astype(np.float32), rng.normal(size=(300, 4)).astype(np.float32)
  index = rng.integers(0, 50, size=(300, 4)).astype(np.int32)
  expected = np.einsum("uk,ukc->uc", weight.astype(np.float64), table.astype(np.float64)[index])
  cotangent = rng.normal(size=expected.shape).astype(np.float32)
  gradients = []
  for mode in ("cpu", "xla"):
    with platform.kernels(mode):
      value, vjp = jax.vjp(lambda t, w: weighted_gather(t, jnp.asarray(index), w), table, weight)
    np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-5)
    gradients.append(vjp(cotangent))
  for ours, theirs in zip(*gradients):
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


def test_auto_lowers_each_implementation_for_its_platform():
  """A tiny select: its CPU branch is the only one in a CPU program, the plain one in TPU and GPU programs."""
  f = jax.jit(lambda x: platform.select(x, cpu=lambda x: jax.lax.optimization_barrier(x) * 2, xla=lambda x: x + x))
  traced = f.trace(jnp.ones(3))
  assert "optimization_barrier" in traced.lower(lowering_platforms=("cpu",)).as_text()
  for p in ("tpu", "cuda"):
    assert "optimization_barrier" not in traced.lower(lowering_platforms=(p,)).as_text()
  np.testing.assert_array_equal(f(jnp.ones(3)), 2.0)
  with pytest.raises(ValueError, match="config.kernels must be one of"):
    with platform.kernels("gpu"):
      pass


def test_for_devices_resolves_auto_by_the_devices_platform():
  """A program jitted for known devices traces that platform's implementation only: "auto" on CPU devices is
  "cpu" (its jaxpr holds the CPU branch and no platform_dependent cond), on TPU or GPU devices "xla"; a forced mode
  stays, and devices of several platforms leave the choice to platform_dependent."""
  tpu, gpu = types.SimpleNamespace(platform="tpu"), types.SimpleNamespace(platform="gpu")
  assert platform.for_devices("auto", jax.devices()) == "cpu"
  assert platform.for_devices("auto", [tpu, tpu]) == platform.for_devices("auto", [gpu]) == "xla"
  assert platform.for_devices("auto", [tpu, gpu]) == "auto"
  assert platform.for_devices("xla", jax.devices()) == "xla" and platform.for_devices("cpu", [tpu]) == "cpu"

  def f(x):
    return platform.select(x, cpu=lambda x: jax.lax.optimization_barrier(x) * 2, xla=lambda x: x + x)

  with platform.kernels(platform.for_devices("auto", jax.devices())):
    jaxpr = str(jax.make_jaxpr(jax.grad(lambda x: f(x).sum()))(jnp.ones(3)))
  assert "optimization_barrier" in jaxpr and "cond" not in jaxpr and "platform_index" not in jaxpr
