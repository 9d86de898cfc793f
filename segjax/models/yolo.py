"""YOLO v1 (Redmon, Divvala, Girshick and Farhadi, "You Only Look Once", CVPR 2016) and Fast YOLO.

The image is divided into an S x S grid; each cell predicts B boxes (x, y offsets in the cell, square roots of
the width and height relative to the image) with a confidence Pr(object) x IoU, and one set of C class
probabilities Pr(class | object): an S x S x (5B + C) tensor, 7 x 7 x 30 on VOC. The network (paper Fig. 3):
24 convolutions (Fast YOLO: 9, fewer filters) with leaky ReLU 0.1, then two fully connected layers (4096 units,
dropout 0.5, and the linear output layer). The output layer's 1470 values are laid out as Darknet's detection
layer reads them: S*S*C class probabilities, then S*S*B confidences, then S*S*B*4 coordinates, cell index
row * S + col, so Darknet `.weights` load unchanged (segjax/weights/darknet.py).

`head="convolutional"` (not the paper's; for small networks trained from scratch) replaces the two fully connected
layers by a 3x3 convolution of `hidden_units` filters and a linear 1x1 convolution to 5B + C values per cell, on
the last convolution's map, which must then be S x S: YOLOv2's change (Redmon and Farhadi, "YOLO9000", CVPR 2017,
Sec. 2, "Convolutional With Anchor Boxes", here without anchors). A cell's prediction then comes from the features
around it, shared by all cells, rather than from S*S separately learned rows of a dense layer. Each cell's values
are laid out as the dense layer's: C class probabilities, B confidences, B*4 coordinates.

Loss: the paper's Eq. 3, a sum of squared errors per image (mean over the batch, as Darknet divides its summed
gradient by the batch), see `loss`. Inference: class-specific confidence Pr(class | object) x confidence per
box and class, a score threshold, then per-class greedy NMS (segjax.ops.box_nms).

Convolutions are padded by size // 2 on each side, as Darknet's `pad=1`, so a stride-2 convolution sees the
same windows as Darknet's (not XLA's "SAME", which pads 0 before and 1 after there). Layers tables follow
Darknet's cfg files: yolov1.cfg up to its last convolution (the paper's network; the 2016 cfg then replaced
the first fully connected layer by a locally connected one, not done here), and for Fast YOLO the 2015
tiny-yolo filters 16..1024 with 9 convolutions as the paper counts them.
"""
import jax
import jax.numpy as jnp
import ml_collections
from flax import linen as nn

from segjax.layers.conv import Conv
from segjax.models.validation import validated
from segjax.ops.box_nms import batched_nms
from segjax.ops.pooling import max_pool_2x2

TASK = "detection"
BATCH_KEYS = ("image", "boxes", "classes", "instance_valid")

# (filters, size, stride) of a convolution, or "M": 2x2 max pooling, stride 2.
YOLO_V1_LAYERS = (
    (64, 7, 2), "M", (192, 3, 1), "M",
    (128, 1, 1), (256, 3, 1), (256, 1, 1), (512, 3, 1), "M",
    *((256, 1, 1), (512, 3, 1)) * 4, (512, 1, 1), (1024, 3, 1), "M",
    *((512, 1, 1), (1024, 3, 1)) * 2, (1024, 3, 1), (1024, 3, 2),
    (1024, 3, 1), (1024, 3, 1))
FAST_YOLO_LAYERS = (
    (16, 3, 1), "M", (32, 3, 1), "M", (64, 3, 1), "M", (128, 3, 1), "M", (256, 3, 1), "M", (512, 3, 1), "M",
    (1024, 3, 1), (1024, 3, 1), (1024, 3, 1))
ARCHITECTURES = {"yolo_v1": YOLO_V1_LAYERS, "fast_yolo": FAST_YOLO_LAYERS}
HEADS = ("fully_connected", "convolutional")
INFERENCE_KEYS = frozenset({"score_threshold", "nms_iou_threshold", "detections_per_image"})


def model_config(name="yolo_v1") -> ml_collections.ConfigDict:
  """Architecture keys (the checkpoint's identity), loss weights, and inference keys."""
  if name not in ARCHITECTURES:
    raise ValueError(f"config.model.name: {name!r} is not a YOLO model; known: {sorted(ARCHITECTURES)}")
  return ml_collections.ConfigDict({
      "name": name,
      "grid_size": 7,  # S
      "boxes_per_cell": 2,  # B
      "num_classes": 0,  # C; 0 = the data set's thing classes
      "head": "fully_connected",  # the paper's; "convolutional": YOLOv2's (see the module docstring)
      "hidden_units": 4096,  # the first fully connected layer (the convolutional head's 3x3 filters)
      "width_multiplier": 1.0,  # scales every convolution's filters (small demo networks)
      "skip_pools": 0,  # leaves out the first max-pooling layers: small images keep a final map near S x S
      "dropout_rate": 0.5,
      "batch_norm": False,  # the paper has none; Darknet's later yolov1.cfg normalises every convolution
      "batch_norm_momentum": 0.99,  # of the running statistics, Darknet's (0.99 old + 0.01 batch)
      "dtype": "float32",
      # Eq. 3
      "lambda_coord": 5.0,
      "lambda_noobj": 0.5,
      # Inference
      "score_threshold": 0.001,  # on Pr(class | object) x confidence
      "nms_iou_threshold": 0.5,
      "detections_per_image": 100,
  })


def leaky_relu(x):
  return jnp.where(x > 0, x, 0.1 * x)


class YOLO(nn.Module):
  """images [N, H, W, 3] in [0, 1] -> class_probs [N, S, S, C], confidence [N, S, S, B], coords [N, S, S, B, 4]
  (x, y in the cell, sqrt w, sqrt h of the image), and the decoded boxes [N, S, S, B, 4] in input pixels."""
  layers: tuple
  num_classes: int
  grid_size: int = 7
  boxes_per_cell: int = 2
  head: str = "fully_connected"
  hidden_units: int = 4096
  width_multiplier: float = 1.0
  skip_pools: int = 0
  dropout_rate: float = 0.5
  batch_norm: bool = False
  batch_norm_momentum: float = 0.99
  dtype: str = "float32"

  @nn.compact
  def __call__(self, images, train: bool = False):
    n, height, width, _ = images.shape
    s, b, c = self.grid_size, self.boxes_per_cell, self.num_classes
    x = images.astype(self.dtype)
    conv_index = pool_index = 0
    for layer in self.layers:
      if layer == "M":
        if pool_index >= self.skip_pools:
          x = max_pool_2x2(x)
        pool_index += 1
        continue
      filters, size, stride = layer
      x = Conv(max(int(filters * self.width_multiplier), 1), (size, size), (stride, stride),
               padding=[(size // 2, size // 2)] * 2, use_bias=not self.batch_norm, dtype=self.dtype,
               name=f"conv{conv_index}")(x)
      if self.batch_norm:  # Darknet: normalise, scale, then add the bias
        x = nn.BatchNorm(use_running_average=not train, momentum=self.batch_norm_momentum, epsilon=1e-6, dtype=self.dtype,
                         name=f"bn{conv_index}")(x)
      x = leaky_relu(x)
      conv_index += 1
    if self.head == "convolutional":
      if x.shape[1:3] != (s, s):
        raise ValueError(f"YOLO: the convolutional head needs the last convolution's map to be S x S = {s} x {s}; "
                         f"got {x.shape[1]} x {x.shape[2]} from {height} x {width} inputs (set skip_pools or the "
                         f"input size)")
      x = Conv(self.hidden_units, (3, 3), padding=[(1, 1)] * 2, use_bias=not self.batch_norm, dtype=self.dtype,
               name="head_conv")(x)
      if self.batch_norm:
        x = nn.BatchNorm(use_running_average=not train, momentum=self.batch_norm_momentum, epsilon=1e-6,
                         dtype=self.dtype, name="head_bn")(x)
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(leaky_relu(x))
      x = Conv(5 * b + c, (1, 1), dtype=self.dtype, name="head_out")(x).astype(jnp.float32)  # [N, S, S, 5B + C]
      class_probs, confidence = x[..., :c], x[..., c:c + b]
      coords = x[..., c + b:].reshape(n, s, s, b, 4)
    else:
      x = x.reshape(n, -1)
      x = leaky_relu(nn.Dense(self.hidden_units, dtype=self.dtype, name="fc0")(x))
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
      x = nn.Dense(s * s * (5 * b + c), dtype=self.dtype, name="fc1")(x).astype(jnp.float32)
      class_probs = x[:, :s * s * c].reshape(n, s, s, c)
      confidence = x[:, s * s * c:s * s * (c + b)].reshape(n, s, s, b)
      coords = x[:, s * s * (c + b):].reshape(n, s, s, b, 4)
    return {"class_probs": class_probs, "confidence": confidence, "coords": coords,
            "boxes": decode_boxes(coords, (height, width))}


def _cell_origins(s):
  """(col, row) float32 [S, S, 1] of each cell."""
  row, col = jnp.meshgrid(jnp.arange(s, dtype=jnp.float32), jnp.arange(s, dtype=jnp.float32), indexing="ij")
  return col[..., None], row[..., None]


def decode_boxes(coords, image_size, clip=True):
  """coords [..., S, S, B, 4] (x, y in the cell, sqrt w, sqrt h) -> boxes (x1, y1, x2, y2) in pixels of an
  image of `image_size` (H, W), clipped to it (Darknet's detection boxes)."""
  s = coords.shape[-3]
  height, width = image_size
  col, row = _cell_origins(s)
  cx = (col + coords[..., 0]) / s * width
  cy = (row + coords[..., 1]) / s * height
  w = coords[..., 2] ** 2 * width
  h = coords[..., 3] ** 2 * height
  boxes = jnp.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)
  return jnp.clip(boxes, 0.0, jnp.array([width, height, width, height], boxes.dtype)) if clip else boxes


def encode_targets(boxes, classes, valid, image_size, grid_size, num_classes):
  """One image's ground truth -> the grid targets of Eq. 3, static shapes for any number of boxes.

  The cell holding a box's centre is responsible for it. When several centres fall into one cell, that cell
  keeps the last of them in input order (Darknet's fill_truth overwrites earlier ones): a cell has one class.

  Args:
    boxes: float [M, 4] (x1, y1, x2, y2) pixels; classes: int [M] 1..C; valid: bool [M] (padding False).
    image_size: (H, W) of the network input.
  Returns:
    has_object bool [S, S], coords float32 [S, S, 4] (x, y in the cell, sqrt w, sqrt h), class_one_hot
    float32 [S, S, C].
  """
  s = grid_size
  height, width = image_size
  boxes = boxes.astype(jnp.float32)
  cx = (boxes[:, 0] + boxes[:, 2]) / 2 / width
  cy = (boxes[:, 1] + boxes[:, 3]) / 2 / height
  w = jnp.maximum(boxes[:, 2] - boxes[:, 0], 0.0) / width
  h = jnp.maximum(boxes[:, 3] - boxes[:, 1], 0.0) / height
  col = jnp.clip(jnp.floor(cx * s), 0, s - 1)
  row = jnp.clip(jnp.floor(cy * s), 0, s - 1)
  cell = (row * s + col).astype(jnp.int32)
  index = jnp.arange(boxes.shape[0])
  owner = jnp.max(jnp.where(valid[None] & (cell[None] == jnp.arange(s * s)[:, None]), index[None], -1), axis=1)
  has_object = owner >= 0
  safe = jnp.maximum(owner, 0)
  coords = jnp.stack([cx * s - col, cy * s - row, jnp.sqrt(w), jnp.sqrt(h)], axis=-1)[safe]
  class_one_hot = jax.nn.one_hot(classes[safe] - 1, num_classes)
  mask = has_object[:, None].astype(jnp.float32)
  return (has_object.reshape(s, s), (coords * mask).reshape(s, s, 4),
          (class_one_hot * mask).reshape(s, s, num_classes))


def decode_targets(has_object, coords, class_one_hot, image_size):
  """Inverse of encode_targets: (boxes [S*S, 4] pixels, classes [S*S] 1..C, valid [S*S]) in cell order."""
  boxes = decode_boxes(coords[..., None, :], image_size, clip=False)[..., 0, :]
  return (boxes.reshape(-1, 4), (jnp.argmax(class_one_hot, -1) + 1).reshape(-1).astype(jnp.int32),
          has_object.reshape(-1))


def _iou(boxes1, boxes2):
  """Elementwise IoU of (x1, y1, x2, y2) boxes [..., 4]."""
  iw = jnp.maximum(jnp.minimum(boxes1[..., 2], boxes2[..., 2]) - jnp.maximum(boxes1[..., 0], boxes2[..., 0]), 0)
  ih = jnp.maximum(jnp.minimum(boxes1[..., 3], boxes2[..., 3]) - jnp.maximum(boxes1[..., 1], boxes2[..., 1]), 0)
  inter = iw * ih
  area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
  union = area(boxes1) + area(boxes2) - inter
  return jnp.where(union > 0, inter / jnp.where(union > 0, union, 1.0), 0.0)


def image_loss(outputs, has_object, coords, class_one_hot, lambda_coord, lambda_noobj):
  """Eq. 3 of the paper for one image; returns its five terms.

  1^obj_ij: predictor j of a cell holding an object whose box has the highest current IoU with the ground
  truth (the first on ties) is responsible for it; 1^noobj_ij is every other predictor. The responsible
  predictor's confidence target is that IoU (treated as a constant); the others' is 0. Class probabilities are
  penalised only in cells that hold an object (1^obj_i).
  """
  pred = outputs["coords"]  # [S, S, B, 4]
  unit = (1.0, 1.0)  # boxes in image-relative units for the IoU
  pred_boxes = decode_boxes(pred, unit, clip=False)
  truth_boxes = decode_boxes(coords[:, :, None, :], unit, clip=False)
  iou = jax.lax.stop_gradient(_iou(pred_boxes, truth_boxes))  # [S, S, B]
  responsible = jax.nn.one_hot(jnp.argmax(iou, -1), pred.shape[-2]) * has_object[..., None]
  noobj = 1.0 - responsible
  squared = (pred - coords[:, :, None, :]) ** 2
  loss_xy = lambda_coord * jnp.sum(responsible * (squared[..., 0] + squared[..., 1]))
  loss_wh = lambda_coord * jnp.sum(responsible * (squared[..., 2] + squared[..., 3]))
  confidence = outputs["confidence"]
  loss_obj = jnp.sum(responsible * (confidence - iou) ** 2)
  loss_noobj = lambda_noobj * jnp.sum(noobj * confidence ** 2)
  loss_class = jnp.sum(has_object[..., None] * (outputs["class_probs"] - class_one_hot) ** 2)
  mean_iou = jnp.sum(responsible * iou) / jnp.maximum(jnp.sum(responsible), 1.0)
  return {"loss_xy": loss_xy, "loss_wh": loss_wh, "loss_obj": loss_obj, "loss_noobj": loss_noobj,
          "loss_class": loss_class}, mean_iou


def _checked(config):
  config = validated(config, model_config(config.get("name", "yolo_v1")))
  if config.head not in HEADS:
    raise ValueError(f"config.model.head: {config.head!r}; known: {HEADS}")
  return config


def build(config, info):
  config = _checked(config)
  return YOLO(layers=ARCHITECTURES[config.name], num_classes=config.num_classes or info.num_thing_classes,
              grid_size=config.grid_size, boxes_per_cell=config.boxes_per_cell, head=config.head,
              hidden_units=config.hidden_units,
              width_multiplier=config.width_multiplier, skip_pools=config.skip_pools,
              dropout_rate=config.dropout_rate,
              batch_norm=config.batch_norm, batch_norm_momentum=config.batch_norm_momentum, dtype=config.dtype)


def loss(outputs, batch, config):
  """Eq. 3 summed over each image's cells and predictors, averaged over the batch's images."""
  model_config = _checked(config)
  s = outputs["coords"].shape[1]
  c = outputs["class_probs"].shape[-1]
  image_size = batch["image"].shape[1:3]
  targets = jax.vmap(lambda b, k, v: encode_targets(b, k, v, image_size, s, c))(
      batch["boxes"], batch["classes"], batch["instance_valid"])
  per_image = {k: outputs[k] for k in ("coords", "confidence", "class_probs")}
  terms, mean_iou = jax.vmap(
      lambda o, *t: image_loss(o, *t, model_config.lambda_coord, model_config.lambda_noobj))(per_image, *targets)
  metrics = {k: v.mean() for k, v in terms.items()}
  metrics["mean_iou"] = mean_iou.mean()
  return sum(metrics[k] for k in terms), metrics


def predict(outputs, config):
  """Detections padded to K = detections_per_image: boxes [N, K, 4] (input pixels), scores [N, K] (class-specific
  confidence), labels [N, K] (1..C), valid [N, K]."""
  model_config = _checked(config)
  n, s, _, b, _ = outputs["boxes"].shape
  c = outputs["class_probs"].shape[-1]
  k = model_config.detections_per_image
  scores = outputs["confidence"][..., :, None] * outputs["class_probs"][..., None, :]  # [N, S, S, B, C]
  scores = scores.reshape(n, s * s * b * c)
  boxes = jnp.broadcast_to(outputs["boxes"][..., None, :], (n, s, s, b, c, 4)).reshape(n, -1, 4)
  labels = jnp.broadcast_to(jnp.arange(1, c + 1, dtype=jnp.int32), (n, s * s * b, c)).reshape(n, -1)
  above = scores > model_config.score_threshold
  ranked = jnp.where(above, scores, -1.0)

  def one(boxes, ranked, labels, above):
    keep = batched_nms(boxes, ranked, labels, model_config.nms_iou_threshold, k)
    safe = jnp.maximum(keep, 0)
    valid = (keep >= 0) & above[safe]
    return {"boxes": jnp.where(valid[:, None], boxes[safe], 0.0), "scores": jnp.where(valid, ranked[safe], 0.0),
            "labels": jnp.where(valid, labels[safe], 0), "valid": valid}

  return jax.vmap(one)(boxes, ranked, labels, above)
