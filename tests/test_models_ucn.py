"""The Unseen Clustering Network (Xiang et al. 2020): unit embeddings, its loss is the intra/inter cluster losses of
ops over the instances and the background, predict recovers instances from ideal embeddings and leaves the largest
cluster as background, training compiles once for any instance counts and beats the best constant embedding,
8 devices train as 1, the RGB-D variant adds a depth trunk on the backprojected point cloud and learns objects only
depth separates, and the configs build."""
import importlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from scipy import ndimage
from test_models_embedding import H, M, W, _batch  # rectangles of random colours, padded to M instances
from train_util import counting_jit, fit_on_batches, train_through_loop

from segjax.models import get_model, ucn
from segjax.models.unet import UNet
from segjax.ops import depth as depth_ops
from segjax.ops import embedding_losses

CONFIG = {"name": "ucn", "width": 4, "embedding_dim": 4, "dtype": "float32"}


def _assert_normalised(out, raw):
  """`out` is raw / ||raw|| per pixel wherever the 1e-12 under the square root is immaterial (most pixels); returns
  ||raw||."""
  norm = np.linalg.norm(raw, axis=-1)
  clear = norm > 1e-3
  assert clear.mean() > 0.5
  np.testing.assert_allclose(out[clear], raw[clear] / norm[clear][:, None], atol=1e-5)
  return norm


def test_embeddings_are_the_trunks_outputs_normalised():
  """Unit vectors in the trunk's output directions; a pixel where the trunk outputs 0 stays 0 (as F.normalize)."""
  module = ucn.build(ml_collections.ConfigDict(CONFIG), None)
  images = np.random.default_rng(0).uniform(0, 1, (2, H, W, 3)).astype(np.float32)
  variables = module.init(jax.random.key(0), images)
  out = np.asarray(module.apply(variables, images)["embeddings"], np.float64)
  trunk = UNet(num_classes=4, width=4, padding="same")
  raw = np.asarray(trunk.apply({"params": variables["params"]["trunk"]}, images)["logits"], np.float64)
  norm = _assert_normalised(out, raw)
  np.testing.assert_array_equal(out[norm == 0], 0.0)


def test_loss_is_the_cluster_losses_over_instances_and_background():
  rng = np.random.default_rng(0)
  batch = _batch(rng, [3, 0])
  batch["is_crowd"][0, 2] = True  # a crowd: neither an instance nor background
  x = rng.normal(0, 1, (2, H, W, 4))
  outputs = {"embeddings": jnp.asarray(x / np.linalg.norm(x, axis=-1, keepdims=True), jnp.float32)}
  config = ml_collections.ConfigDict({**CONFIG, "lambda_intra": 2.0, "lambda_inter": 3.0})
  value, aux = ucn.loss(outputs, batch, config)
  intra, inter = [], []
  for i in range(2):
    masks = batch["masks"][i] > 0
    valid = batch["instance_valid"][i] & ~batch["is_crowd"][i]
    background = ~(masks & batch["instance_valid"][i][:, None, None]).any(0)
    groups = np.concatenate([masks, background[None]])
    group_valid = np.concatenate([valid, [True]])
    intra.append(embedding_losses.intra_cluster_loss(outputs["embeddings"][i], groups, group_valid))
    inter.append(embedding_losses.inter_cluster_loss(outputs["embeddings"][i], groups, group_valid))
  assert inter[1] == 0  # the empty image has one cluster, the background
  np.testing.assert_allclose(aux["loss_intra"], np.mean(intra), rtol=1e-5)
  np.testing.assert_allclose(aux["loss_inter"], np.mean(inter), rtol=1e-5)
  np.testing.assert_allclose(value, 2.0 * np.mean(intra) + 3.0 * np.mean(inter), rtol=1e-5)


def test_predict_recovers_instances_and_drops_the_largest_cluster():
  """Orthogonal unit embeddings per object and for the background (the largest cluster): the objects come back with
  exactly their pixels, the background in none."""
  rng = np.random.default_rng(1)
  batch = _batch(rng, [3, 1])
  centres = np.eye(4)
  emb = np.tile(centres[3], (2, H, W, 1)).astype(np.float32)  # background
  truth = [[], []]
  for i in range(2):
    for k in range(M):
      if batch["instance_valid"][i, k]:
        m = batch["masks"][i, k] > 0
        e = centres[k] + rng.normal(0, 0.02, (m.sum(), 4))
        emb[i][m] = e / np.linalg.norm(e, axis=1, keepdims=True)
        truth[i].append(m)
  config = ml_collections.ConfigDict({**CONFIG, "num_seeds": 8})
  out = jax.jit(lambda o: ucn.predict(o, config))({"embeddings": emb})
  assert out["masks"].shape == (2, 8, H, W)
  for i in range(2):
    valid = np.asarray(out["valid"][i])
    predicted = [np.asarray(out["masks"][i, k]) > 0.5 for k in range(8) if valid[k]]
    assert sorted(m.tobytes() for m in predicted) == sorted(m.tobytes() for m in truth[i])
    assert np.all(np.asarray(out["labels"][i])[valid] == 1)
    assert np.all(np.asarray(out["scores"][i])[valid] > 0.99)  # tight clusters: cosine distance ~0 to the mode


def test_training_and_predict_compile_once_for_any_instance_counts():
  rng = np.random.default_rng(4)
  config = ml_collections.ConfigDict(CONFIG)
  batches = [_batch(rng, c) for c in ([3, 1], [0, 5], [2, 4], [6, 0])]
  params, module, history, traces = fit_on_batches(ucn, config, batches, 4, 0)

  @counting_jit
  def predict(params, images):
    return ucn.predict(module.apply({"params": params}, images), config)

  for b in batches:
    assert predict(params, b["image"])["masks"].shape == (2, 32, H, W)
  assert traces["train"] == 1 and predict.traces == 1
  assert all(np.isfinite(h["loss_inter"]) for h in history)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tiny_model_beats_the_best_constant_embedding(seed):
  """On four fixed batches the loss falls below a quarter of the best constant embedding's: one vector everywhere
  has l_intra = 0 and l_inter = delta^2 wherever an image has two clusters or more (every constant is as good)."""
  rng = np.random.default_rng(seed)
  config = ml_collections.ConfigDict({**CONFIG, "width": 8})
  batches = [_batch(rng, c) for c in ([3, 1], [0, 5], [2, 4], [4, 2])]
  _, _, history, _ = fit_on_batches(ucn, config, batches, 150, seed)
  defaults = ucn.LOSS_DEFAULTS
  constant = np.mean([defaults["lambda_inter"] * defaults["delta"] ** 2 * np.mean(b["instance_valid"].sum(1) >= 1)
                      for b in batches])
  trained = np.mean([defaults["lambda_intra"] * h["loss_intra"] + defaults["lambda_inter"] * h["loss_inter"]
                     for h in history[-8:]])
  assert trained < 0.25 * constant, (trained, constant)


def test_eight_device_training_gives_the_losses_of_one_device():
  from segjax.train import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from segjax.train.state import TrainState  # pylint: disable=g-import-not-at-top
  from segjax.train.steps import make_train_step  # pylint: disable=g-import-not-at-top
  assert jax.device_count() == 8
  config = ml_collections.ConfigDict(CONFIG)
  module = ucn.build(config, None)
  rng = np.random.default_rng(3)
  batches = [_batch(rng, [3, 0, 6, 1, 2, 5, 4, 6]), _batch(rng, [1, 1, 0, 2, 6, 3, 3, 4])]
  variables = jax.device_get(jax.jit(module.init)(jax.random.key(0), batches[0]["image"]))
  # Adam: plain SGD steps through the normalisation of the untrained trunk's near-zero outputs (gradients ~1 / ||x||)
  # collapse it to one direction at once (l_intra 0), and the test would no longer exercise l_intra. The directions
  # of those near-zero outputs are ill-conditioned, so rounding differences between the two programs grow over
  # later steps: the losses are compared over the first update.
  optimizer, schedule = optax.adam(1e-3), optax.constant_schedule(1e-3)
  losses = {}
  for devices in (jax.devices()[:1], jax.devices()):
    mesh = mesh_lib.make_mesh(devices)
    state = jax.device_put(TrainState.create(variables, optimizer), mesh_lib.replicated(mesh))
    shardings = jax.tree.map(lambda _: mesh_lib.replicated(mesh), state)
    step = make_train_step(module, ucn, config, optimizer, schedule, mesh, shardings)
    losses[len(devices)] = []
    for i, batch in enumerate(batches):
      state, metrics = step(state, jax.device_put(batch, mesh_lib.batch_sharding(mesh)), jax.random.key(i))
      losses[len(devices)].append([float(metrics[k]) for k in ("loss", "loss_intra", "loss_inter")])
  assert np.all(np.array(losses[1])[:, 1:3] > 0)
  np.testing.assert_allclose(losses[8], losses[1], rtol=1e-4, atol=1e-6)


RGBD = {**CONFIG, "input": "rgbd"}


def _depth_batch(rng, counts):
  """_batch's rectangles, all of one colour on a background of that colour: only the depth tells them apart (each
  rectangle a plane of its own depth, 1-2.5 m, before a background at 3 m), with the intrinsics of a 90 degree
  camera."""
  batch = _batch(rng, counts)
  batch["image"][:] = 0.5
  depth = np.full((len(counts), H, W), 3.0, np.float32)
  for i in range(len(counts)):
    for k in np.flatnonzero(batch["instance_valid"][i]):
      depth[i][batch["masks"][i, k] > 0] = rng.uniform(1.0, 2.5)
  batch["depth"] = depth
  batch["intrinsics"] = np.tile(np.float32([W / 2, H / 2, W / 2, H / 2]), (len(counts), 1))
  return batch


def test_rgbd_embeddings_fuse_the_image_and_point_cloud_trunks_by_addition():
  """input 'rgbd' (the authors' FUSION_TYPE 'add'): normalise(trunk(image) + trunk_depth(XYZ)), the XYZ the
  backprojected depth; the forward pass reads the batch's depth and intrinsics."""
  config = ml_collections.ConfigDict(RGBD)
  assert ucn.input_keys(config) == ("depth", "intrinsics") and ucn.input_keys(ml_collections.ConfigDict(CONFIG)) == ()
  module = ucn.build(config, None)
  rng = np.random.default_rng(0)
  batch = _depth_batch(rng, [3, 2])
  batch["image"] = rng.uniform(0, 1, batch["image"].shape).astype(np.float32)
  variables = module.init(jax.random.key(0), batch["image"])
  assert set(variables["params"]) == {"trunk", "trunk_depth"}
  out = np.asarray(module.apply(variables, batch["image"], depth=batch["depth"], intrinsics=batch["intrinsics"])
                   ["embeddings"], np.float64)
  trunk = UNet(num_classes=4, width=4, padding="same")
  xyz = depth_ops.backproject(batch["depth"], batch["intrinsics"])
  raw = sum(np.asarray(trunk.apply({"params": variables["params"][name]}, x)["logits"], np.float64)
            for name, x in (("trunk", batch["image"]), ("trunk_depth", xyz)))
  _assert_normalised(out, raw)
  with pytest.raises(ValueError, match="dataset.depth"):
    module.apply(variables, batch["image"])
  with pytest.raises(ValueError, match="model.input"):
    ucn.build(ml_collections.ConfigDict({**CONFIG, "input": "xyz"}), None)


def test_depth_input_reads_the_point_cloud_trunk_alone():
  """input 'depth' (the authors' INPUT 'DEPTH'): normalise(trunk_depth(XYZ)), no image trunk; the image does not
  change the embeddings."""
  config = ml_collections.ConfigDict({**CONFIG, "input": "depth"})
  assert ucn.input_keys(config) == ("depth", "intrinsics")
  module = ucn.build(config, None)
  rng = np.random.default_rng(1)
  batch = _depth_batch(rng, [2, 3])
  variables = module.init(jax.random.key(0), batch["image"])
  assert set(variables["params"]) == {"trunk_depth"}
  outs = [np.asarray(module.apply(variables, rng.uniform(0, 1, batch["image"].shape).astype(np.float32),
                                  depth=batch["depth"], intrinsics=batch["intrinsics"])["embeddings"], np.float64)
          for _ in range(2)]
  xyz = depth_ops.backproject(batch["depth"], batch["intrinsics"])
  raw = np.asarray(UNet(num_classes=4, width=4, padding="same").apply(
      {"params": variables["params"]["trunk_depth"]}, xyz)["logits"], np.float64)
  for out in outs:
    _assert_normalised(out, raw)
  with pytest.raises(ValueError, match="dataset.depth"):
    module.apply(variables, batch["image"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rgbd_learns_objects_only_depth_separates_without_recompiling(seed):
  """One colour everywhere, the objects apart in depth only: the RGB-D model's loss falls below a quarter of the
  best constant embedding's (l_intra = 0, l_inter = delta^2 wherever an image has two clusters or more), in one
  compiled step for any instance counts."""
  rng = np.random.default_rng(seed)
  config = ml_collections.ConfigDict({**RGBD, "width": 8})
  batches = [_depth_batch(rng, c) for c in ([3, 1], [0, 5], [2, 4], [4, 2])]
  _, _, history, traces = fit_on_batches(ucn, config, batches, 150, seed)
  assert traces["train"] == 1
  defaults = ucn.LOSS_DEFAULTS
  constant = np.mean([defaults["lambda_inter"] * defaults["delta"] ** 2 * np.mean(b["instance_valid"].sum(1) >= 1)
                      for b in batches])
  trained = np.mean([defaults["lambda_intra"] * h["loss_intra"] + defaults["lambda_inter"] * h["loss_inter"]
                     for h in history[-8:]])
  assert trained < 0.25 * constant, (trained, constant)


@pytest.mark.parametrize("name", ["demo_ucn", "ucn_ocid", "ucn_osd"])
def test_experiment_configs_build(name):
  config = importlib.import_module(f"experiments.{name}").get_config()
  model_lib = get_model(config.model.name)
  assert model_lib is ucn
  module = model_lib.build(config.model, None)
  x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
  inputs = {"depth": jax.ShapeDtypeStruct((1, 64, 64), jnp.float32),
            "intrinsics": jax.ShapeDtypeStruct((1, 4), jnp.float32)}
  inputs = {k: inputs[k] for k in ucn.input_keys(config.model)}
  assert bool(inputs) == bool(config.dataset.get("depth"))  # an RGB-D model reads the depth the data set gives
  shapes = jax.eval_shape(lambda x: module.init(jax.random.key(0), x), x)
  out = jax.eval_shape(lambda v, x, kw: module.apply(v, x, **kw), shapes, x, inputs)
  assert out["embeddings"].shape == (1, 64, 64, config.model.embedding_dim)


@pytest.mark.slow
def test_runs_through_the_training_loop_on_held_out_shapes(tmp_path):
  """The loop trains on circles and squares and evaluates on triangles and stars: class-agnostic metrics only."""
  model = ml_collections.ConfigDict({**CONFIG, "num_seeds": 8})
  metrics, train_rows = train_through_loop(tmp_path, model, steps=2, **{
      "dataset.train_shapes": ("circle", "square"), "dataset.val_shapes": ("triangle", "star")})
  assert {"mask_AP_agnostic", "overlap_F", "overlap_precision", "overlap_recall", "objects_detected_075",
          "boundary_F"} <= set(metrics)
  assert {"loss_intra", "loss_inter"} <= set(train_rows[-1])


@pytest.mark.parametrize("name", ["demo_ucn", "ucn_ocid", "ucn_osd"])
def test_experiment_configs_merge_modes_within_twice_alpha(name):
  """The authors merge mean-shift modes within cosine distance 2 alpha (github.com/NVlabs/UnseenObjectClustering,
  lib/utils/mean_shift.py, commit f5a00c78f61eff70a2477ab77475c12ef821d739: connected_components(Z, 2 *
  cfg.TRAIN.EMBEDDING_ALPHA)); our bandwidth is the Euclidean distance of unit vectors, ||a - b||^2 = 2 - 2 a.b =
  4 d(a, b), so at d = 2 alpha it is 2 sqrt(2 alpha): two unit vectors at that cosine distance sit on the radius."""
  model = importlib.import_module(f"experiments.{name}").get_config().model
  alpha = model.get("alpha", ucn.LOSS_DEFAULTS["alpha"])
  bandwidth = model.get("bandwidth", ucn.PREDICT_DEFAULTS["bandwidth"])
  angle = np.arccos(1 - 2 * (2 * alpha))  # unit vectors at cosine distance 2 alpha
  a, b = np.array([1.0, 0.0]), np.array([np.cos(angle), np.sin(angle)])
  np.testing.assert_allclose(0.5 * (1 - a @ b), 2 * alpha, rtol=1e-9)
  np.testing.assert_allclose(bandwidth, np.linalg.norm(a - b), rtol=2e-3)


def test_split_components_separates_apart_objects_of_one_cluster():
  """Two squares with one embedding, apart, on a background of another: one instance of both squares' pixels
  without split_components, the two squares (as scipy.ndimage.label finds them) with it, each scored by the mean
  cosine distance of its pixels to the cluster's mode."""
  emb = np.zeros((1, 16, 16, 4), np.float32)
  emb[..., 0] = 1.0  # background
  objects = np.zeros((16, 16), bool)
  objects[2:6, 2:6] = objects[9:14, 8:12] = True
  emb[0][objects] = [0.0, 1.0, 0.0, 0.0]
  reference, n = ndimage.label(objects)
  assert n == 2
  for split, expected in ((False, [objects]), (True, [reference == 1, reference == 2])):
    config = ml_collections.ConfigDict({**CONFIG, "num_seeds": 4, "split_components": split})
    out = jax.device_get(jax.jit(lambda o: ucn.predict(o, config))({"embeddings": emb}))
    predicted = [out["masks"][0, k] > 0.5 for k in range(4) if out["valid"][0, k]]
    assert sorted(m.tobytes() for m in predicted) == sorted(m.tobytes() for m in expected)
    np.testing.assert_allclose(out["scores"][0][out["valid"][0]], 1.0, atol=1e-6)
