"""Darknet `.weights` files (pjreddie/darknet, parser.c load_weights) -> YOLO variables.

File layout: int32 major, minor, revision; the images seen, uint64 when major * 10 + minor >= 2 (and both below
1000), else int32; then one float32 blob in layer order. A convolution with batch norm stores its biases (the BN
shift), scales, rolling mean, rolling variance, then weights [out, in, k, k]; without batch norm, biases then
weights. A connected layer stores biases then weights [outputs, inputs]. Darknet's activations are CHW, so the
first connected layer's inputs are permuted to the NHWC flattening of segjax.models.yolo; its output layer already
has Darknet's detection layout.
"""
import jax
import jax.numpy as jnp
import numpy as np

from segjax.data.coco import DatasetError
from segjax.models import yolo


def read_weights(path) -> tuple[tuple[int, int, int, int], np.ndarray]:
  """((major, minor, revision, seen), float32 blob) of a Darknet .weights file."""
  with open(path, "rb") as f:
    data = f.read()
  if len(data) < 16:
    raise DatasetError(f"{path}: {len(data)} bytes, shorter than a Darknet weights header")
  major, minor, revision = np.frombuffer(data[:12], "<i4").tolist()
  wide = major * 10 + minor >= 2 and major < 1000 and minor < 1000
  seen = int(np.frombuffer(data[12:20] if wide else data[12:16], "<u8" if wide else "<i4")[0])
  offset = 20 if wide else 16
  if (len(data) - offset) % 4:
    raise DatasetError(f"{path}: {len(data) - offset} bytes after the header, not a whole number of float32")
  return (major, minor, revision, seen), np.frombuffer(data[offset:], "<f4")


def convert_yolo(path, model_config, num_classes, image_size=(448, 448)) -> dict:
  """The variables {"params", "batch_stats"} of yolo.build(model_config) (images of `image_size`) from `path`."""
  if model_config.get("head", "fully_connected") != "fully_connected":  # the v1 cfgs end in connected layers
    raise ValueError(f"convert_yolo: Darknet's YOLO v1 files hold the fully connected head; config.model.head is "
                     f"{model_config.head!r}")
  module = yolo.build(model_config, type("Info", (), {"num_thing_classes": num_classes}))
  shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, *image_size, 3))))
  params, stats = shapes["params"], shapes.get("batch_stats", {})
  _, blob = read_weights(path)
  position = 0

  def take(shape, what):
    nonlocal position
    count = int(np.prod(shape))
    if position + count > blob.size:
      raise DatasetError(f"{path}: ends at float {blob.size} inside {what} (needs {count} from float {position}); "
                         f"the file does not match config.model ({model_config.name}, image {image_size})")
    value = blob[position:position + count].reshape(shape)
    position += count
    return value

  out_params, out_stats = {}, {}
  convs = sorted((k for k in params if k.startswith("conv")), key=lambda k: int(k[4:]))
  for name in convs:
    kernel = params[name]["kernel"].shape  # (k, k, in, out)
    out = kernel[-1]
    if model_config.batch_norm:
      bn = name.replace("conv", "bn")
      bias, scale = take((out,), f"{bn} biases"), take((out,), f"{bn} scales")
      mean, var = take((out,), f"{bn} rolling mean"), take((out,), f"{bn} rolling variance")
      out_params[bn] = {"bias": bias, "scale": scale}
      out_stats[bn] = {"mean": mean, "var": var}
      out_params[name] = {}
    else:
      out_params[name] = {"bias": take((out,), f"{name} biases")}
    weights = take((out, kernel[2], kernel[0], kernel[1]), f"{name} weights")  # OIHW
    out_params[name]["kernel"] = weights.transpose(2, 3, 1, 0)
  # The last feature map's (H, W, C), for the CHW -> HWC permutation of fc0's inputs.
  features = jax.eval_shape(lambda v, x: module.apply(v, x, capture_intermediates=lambda m, _: m.name == convs[-1],
                                                      mutable=["intermediates"])[1],
                            shapes, jnp.zeros((1, *image_size, 3)))
  h, w, c = jax.tree.leaves(features)[0].shape[1:]
  hidden = params["fc0"]["kernel"].shape[1]
  bias = take((hidden,), "fc0 biases")
  weights = take((hidden, c, h, w), "fc0 weights")
  out_params["fc0"] = {"bias": bias, "kernel": weights.transpose(2, 3, 1, 0).reshape(h * w * c, hidden)}
  outputs = params["fc1"]["kernel"].shape[1]
  bias = take((outputs,), "fc1 biases")
  out_params["fc1"] = {"bias": bias, "kernel": take((outputs, hidden), "fc1 weights").T}
  if position != blob.size:
    raise DatasetError(f"{path}: {blob.size - position} floats left after the last layer; the file does not match "
                       f"config.model ({model_config.name}, image {image_size})")
  as_arrays = lambda tree: jax.tree.map(lambda x: np.ascontiguousarray(x, np.float32), tree)
  variables = {"params": as_arrays(out_params)}
  if out_stats:
    variables["batch_stats"] = as_arrays(out_stats)
  return variables
