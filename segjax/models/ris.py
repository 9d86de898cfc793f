"""Recurrent Instance Segmentation (Romera-Paredes & Torr, ECCV 2016).

A fully convolutional trunk gives features of the image; a ConvLSTM reads the same features at every step and
its hidden state remembers what it has already segmented; at each step the spatial inhibition module turns the
hidden state into one instance mask (1x1 convolution, sigmoid) and a confidence s_t (max over space, a fully
connected layer, sigmoid). Training runs n + 2 steps against the n ground-truth instances with the loss of
Eq. 3 (`segjax.ops.set_losses.recurrent_instance_loss`: Hungarian-matched relaxed IoU + lambda x BCE of the
stop score); inference stops at the first step whose confidence is below 0.5. With static shapes the network
always runs `num_steps` steps (at least max_instances + 2) and the steps after the stop are marked invalid.

The trunk is segjax's ResNet at output stride 8 (the paper uses FCN-8s features of a pretrained VGG-16); masks
are predicted at 1/8 of the input, bilinearly upsampled for inference, and the loss compares them with the
ground truth averaged over 8 x 8 cells. Class-agnostic: every instance has label 1.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from segjax.backbones.resnet import ResNet
from segjax.layers.conv import Conv
from segjax.layers.conv_lstm import ConvLSTM
from segjax.models import pixel_normalization
from segjax.models.validation import validated
from segjax.ops.image import IMAGENET_MEAN, IMAGENET_STD, normalize_images
from segjax.ops.masks import stepwise_detections
from segjax.ops.set_losses import recurrent_instance_loss

TASK = "instance"
BATCH_KEYS = ("image", "masks", "instance_valid", "is_crowd")
STRIDE = 8
INFERENCE_KEYS = frozenset({"score_threshold", "mask_threshold"})


class RecurrentInstanceSegmentation(nn.Module):
  num_steps: int
  depth: int = 18
  width: int = 16
  norm: str = "batch"
  lstm_features: int = 32
  lstm_layers: int = 2
  pixel_mean: tuple = IMAGENET_MEAN
  pixel_std: tuple = IMAGENET_STD

  @nn.compact
  def __call__(self, images, train: bool = False):
    x = normalize_images(images, self.pixel_mean, self.pixel_std)
    features = ResNet(depth=self.depth, width=self.width, norm=self.norm, output_stride=STRIDE,
                      name="backbone")(x, train=train)["C5"]
    features = nn.relu(Conv(self.lstm_features, (1, 1), name="reduce")(features))
    hidden = ConvLSTM(self.lstm_features, self.num_steps, self.lstm_layers, name="conv_lstm")(features)
    # Spatial inhibition module: a mask and a confidence per step.
    mask_logits = Conv(1, (1, 1), name="mask")(hidden)[..., 0]  # [B, T, h, w]
    score_logits = nn.Dense(1, name="score")(hidden.max(axis=(2, 3)))[..., 0]  # [B, T]
    return {"mask_logits": mask_logits, "score_logits": score_logits}


def model_config() -> ml_collections.ConfigDict:
  """A narrow ResNet-18 trunk, two ConvLSTM layers of 32 channels, 10 steps; lambda 1, n + 2 training steps; the
  paper's stop at confidence 0.5."""
  return ml_collections.ConfigDict({
      "name": "ris", "depth": 18, "width": 16, "norm": "batch", "num_steps": 10, "lstm_features": 32,
      "lstm_layers": 2, "bce_weight": 1.0, "extra_steps": 2, "score_threshold": 0.5, "mask_threshold": 0.5,
      "pixel_mean": IMAGENET_MEAN, "pixel_std": IMAGENET_STD})


def build(config, info):
  del info  # class-agnostic
  c = validated(config, model_config())
  return RecurrentInstanceSegmentation(
      num_steps=c.num_steps, depth=c.depth, width=c.width, norm=c.norm, lstm_features=c.lstm_features,
      lstm_layers=c.lstm_layers, **pixel_normalization(c))


def cell_average(masks, stride=STRIDE):
  """[..., H, W] -> [..., H / stride, W / stride]: the fraction of each cell that the mask covers."""
  *lead, h, w = masks.shape
  return masks.reshape(*lead, h // stride, stride, w // stride, stride).mean(axis=(-3, -1))


def loss(outputs, batch, config):
  """Eq. 3 per image, averaged over the batch."""
  mask_logits = outputs["mask_logits"]
  b, t = mask_logits.shape[:2]
  if t < batch["masks"].shape[1]:
    raise ValueError(f"config.model.num_steps ({t}) must be at least dataset.max_instances "
                     f"({batch['masks'].shape[1]}), better max_instances + 2: every instance needs a step")
  probs = jax.nn.sigmoid(mask_logits).reshape(b, t, -1)
  targets = cell_average(batch["masks"].astype(jnp.float32)).reshape(b, batch["masks"].shape[1], -1)
  valid = batch["instance_valid"] & ~batch["is_crowd"]
  c = validated(config, model_config())
  per_image = jax.vmap(lambda p, s, y, v: recurrent_instance_loss(p, s, y, v, c.bce_weight, c.extra_steps))
  total, terms = per_image(probs, outputs["score_logits"], targets, valid)
  return total.mean(), {"loss_iou": terms["iou"].mean(), "loss_score": terms["score"].mean()}


def predict(outputs, config):
  """Masks at the input size; a step is a detection until the first confidence under the threshold (0.5)."""
  c = validated(config, model_config())
  mask_logits, score_logits = outputs["mask_logits"], outputs["score_logits"]
  b, t, h, w = mask_logits.shape
  masks = jax.image.resize(jax.nn.sigmoid(mask_logits), (b, t, h * STRIDE, w * STRIDE), "linear")
  return stepwise_detections(masks, jax.nn.sigmoid(score_logits), c.score_threshold, c.mask_threshold)
