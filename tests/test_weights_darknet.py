"""Darknet .weights -> YOLO: a file written here in Darknet's layout (pjreddie/darknet, src/parser.c at commit
5e73447fa8948e4b64a726d45c1b4e0f0bd0304b: load_weights_upto's header, load_convolutional_weights,
load_connected_weights) loads into segjax, and the model then gives the outputs of the same numbers run through
torch in Darknet's layout: NCHW, weights [out, in, k, k], padding size // 2, connected weights [outputs, inputs]
over CHW-flattened inputs, batch norm as src/blas.c normalize_cpu, (x - mean) / (sqrt(var) + 1e-6), then scale and
bias."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segjax.data.coco import DatasetError
from segjax.models import yolo
from segjax.weights import darknet

SIZE = (64, 64)


def _config(batch_norm):
  config = yolo.model_config("fast_yolo")
  config.update({"width_multiplier": 0.125, "hidden_units": 32, "batch_norm": batch_norm, "grid_size": 3})
  return config


def _darknet_layers(rng, config, num_classes):
  """Random Darknet tensors for each layer, in file order."""
  layers, channels = [], 3
  for layer in yolo.ARCHITECTURES[config.name]:
    if layer == "M":
      layers.append(("maxpool",))
      continue
    filters, size, stride = layer
    filters = max(int(filters * config.width_multiplier), 1)
    entry = {"bias": rng.normal(0, 0.1, filters)}
    if config.batch_norm:
      entry.update(scale=rng.uniform(0.5, 1.5, filters), mean=rng.normal(0, 0.1, filters),
                   var=rng.uniform(0.5, 1.5, filters))
    entry["weights"] = rng.normal(0, np.sqrt(2 / (size * size * channels)), (filters, channels, size, size))
    layers.append(("conv", stride, entry))
    channels = filters
  s, b = config.grid_size, config.boxes_per_cell
  flat = channels * (SIZE[0] // 64) * (SIZE[1] // 64)
  layers.append(("connected", {"bias": rng.normal(0, 0.1, config.hidden_units),
                               "weights": rng.normal(0, np.sqrt(2 / flat), (config.hidden_units, flat))}))
  out = s * s * (5 * b + num_classes)
  layers.append(("connected", {"bias": rng.normal(0, 0.1, out),
                               "weights": rng.normal(0, 0.1, (out, config.hidden_units))}))
  return layers


def _write(path, layers, batch_norm, header=(0, 2, 0)):
  parts = [np.array(header, "<i4").tobytes(),
           np.array([12345], "<u8" if header[0] * 10 + header[1] >= 2 else "<i4").tobytes()]
  for layer in layers:
    if layer[0] == "conv":
      e = layer[2]
      order = ("bias", "scale", "mean", "var", "weights") if batch_norm else ("bias", "weights")
      parts += [np.asarray(e[k], "<f4").tobytes() for k in order]
    elif layer[0] == "connected":
      parts += [np.asarray(layer[1][k], "<f4").tobytes() for k in ("bias", "weights")]
  with open(path, "wb") as f:
    f.write(b"".join(parts))


def _torch_forward(layers, images, batch_norm):
  import torch  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top
  t = lambda a: torch.as_tensor(np.asarray(a, np.float32))
  x = t(images).permute(0, 3, 1, 2)
  leaky = lambda v: F.leaky_relu(v, 0.1)
  for layer in layers:
    if layer[0] == "maxpool":
      x = F.max_pool2d(x, 2, 2)
    elif layer[0] == "conv":
      _, stride, e = layer
      k = e["weights"].shape[-1]
      x = F.conv2d(x, t(e["weights"]), None if batch_norm else t(e["bias"]), stride=stride, padding=k // 2)
      if batch_norm:
        shape = (1, -1, 1, 1)
        x = (x - t(e["mean"]).view(shape)) / (t(e["var"]).sqrt().view(shape) + 1e-6)
        x = x * t(e["scale"]).view(shape) + t(e["bias"]).view(shape)
      x = leaky(x)
  x = x.flatten(1)  # CHW order, as Darknet's memory
  connected = [layer[1] for layer in layers if layer[0] == "connected"]
  x = leaky(F.linear(x, t(connected[0]["weights"]), t(connected[0]["bias"])))
  return F.linear(x, t(connected[1]["weights"]), t(connected[1]["bias"])).numpy()


@pytest.mark.parametrize("batch_norm,header", [(True, (0, 2, 0)), (False, (0, 1, 0))])
def test_converted_weights_give_darknet_outputs(tmp_path, batch_norm, header):
  rng = np.random.default_rng(0)
  config, num_classes = _config(batch_norm), 4
  layers = _darknet_layers(rng, config, num_classes)
  path = tmp_path / "tiny.weights"
  _write(path, layers, batch_norm, header)
  variables = darknet.convert_yolo(str(path), config, num_classes, SIZE)
  module = yolo.build(config, type("Info", (), {"num_thing_classes": num_classes}))
  images = rng.uniform(0, 1, (2, *SIZE, 3)).astype(np.float32)
  outputs = module.apply(variables, jnp.asarray(images))
  expected = _torch_forward(layers, images, batch_norm)
  s, b, c = config.grid_size, config.boxes_per_cell, num_classes
  np.testing.assert_allclose(outputs["class_probs"].reshape(2, -1), expected[:, :s * s * c], rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(outputs["confidence"].reshape(2, -1), expected[:, s * s * c:s * s * (c + b)],
                             rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(outputs["coords"].reshape(2, -1), expected[:, s * s * (c + b):], rtol=1e-4, atol=1e-4)


def test_a_file_that_does_not_match_the_model_is_named(tmp_path):
  rng = np.random.default_rng(1)
  config = _config(True)
  layers = _darknet_layers(rng, config, 4)
  path = tmp_path / "short.weights"
  _write(path, layers[:-1], True)
  with pytest.raises(DatasetError, match=rf"{path}: ends at float .* inside fc1"):
    darknet.convert_yolo(str(path), config, 4, SIZE)
  path = tmp_path / "long.weights"
  _write(path, layers + [("connected", {"bias": np.zeros(3), "weights": np.zeros(3)})], True)
  with pytest.raises(DatasetError, match=rf"{path}: 6 floats left after the last layer"):
    darknet.convert_yolo(str(path), config, 4, SIZE)
