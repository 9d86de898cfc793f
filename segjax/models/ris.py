"""Recurrent Instance Segmentation (Romera-Paredes & Torr, ECCV 2016).

A fully convolutional trunk gives features of the image; a ConvLSTM reads the same features at every step and
its hidden state remembers what it has already segmented; at each step the spatial inhibition module turns the
hidden state into one instance mask (1x1 convolution, sigmoid) and a confidence s_t (max over space, a fully
connected layer, sigmoid). Training runs n + 2 steps against the n ground-truth instances with the loss of
Eq. 3 (`segjax.ops.set_losses.recurrent_instance_loss`: Hungarian-matched relaxed IoU + lambda x BCE of the
stop score); inference stops at the first step whose confidence is below 0.5. With static shapes the network
always runs `num_steps` steps (at least max_instances + 2) and the steps after the stop are marked invalid.

The trunk is segjax's ResNet at output stride 8 (the paper uses FCN-8s features of a pretrained VGG-16), which is
the ConvLSTM's resolution. The masks are predicted at `mask_stride` 8 (the spatial inhibition module's 1 x 1
convolution of the hidden state) or 4 (those logits upsampled bilinearly and refined by the trunk's stride-4 C2, as
FCN-8s refines its coarse scores with finer layers: the paper's masks are at its FCN's output resolution, which a
stride-8 grid leaves coarse for small objects); the loss compares them with the ground truth averaged over
`mask_stride` cells, and inference upsamples them bilinearly to the input. With `mask_scoring`, a detection's score
is its confidence times its mask's mean probability over its pixels (SOLOv2's maskness): the confidence is trained
only to say whether a step holds an instance, AP also needs the steps ranked by how good their masks are.
With `crf`'s num_iterations > 0, evaluation refines each step's mask at the input size by a two-label DenseCRF over
the image, the paper's post-processing (its "with CRF" rows, CVPPP A1 SBD 56.8 -> 66.6).
Class-agnostic: every instance has label 1.

Options not in the paper, off by default: `global_context` (the ConvLSTM's gates also read the spatial max of its
previous hidden state, `segjax.layers.conv_lstm`), `coordinates` (the ConvLSTM's input holds each cell's normalised
(x, y)) and `inhibition` (the mask logits of a step are lowered where a second channel, a salience, is below its
maximum over the map: the most salient region wins). A 3 x 3 recurrence decides locally; these let a step choose
one instance over the whole map, where without them a step's mask tends to cover parts of several. At inference,
`nms` "matrix" decays each step's score by the masks of the steps scored above it (SOLOv2's Matrix NMS,
`segjax.ops.mask_nms`): where every step is reported (score_threshold 0), the steps that segment an instance again
rank below the first.
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
from segjax.ops.crf import dense_crf, dense_crf_defaults
from segjax.ops.image import IMAGENET_MEAN, IMAGENET_STD, coord_features, normalize_images
from segjax.ops.mask_nms import KERNELS, matrix_nms_in_place
from segjax.ops.masks import stepwise_detections
from segjax.ops.set_losses import recurrent_instance_loss

TASK = "instance"
BATCH_KEYS = ("image", "masks", "instance_valid", "is_crowd")
STRIDE = 8  # the trunk's output stride: the ConvLSTM's resolution
MASK_STRIDES = (8, 4)
INFERENCE_KEYS = frozenset({"score_threshold", "mask_threshold", "mask_scoring", "crf", "nms", "nms_kernel",
                            "nms_sigma"})
NMS = ("none", "matrix")
# The DenseCRF refinement's settings: dense_crf's keyword arguments; num_iterations 0 leaves the masks as predicted.
CRF_DEFAULTS = {**dense_crf_defaults(), "num_iterations": 0}


class RecurrentInstanceSegmentation(nn.Module):
  num_steps: int
  depth: int = 18
  width: int = 16
  norm: str = "batch"
  lstm_features: int = 32
  lstm_layers: int = 2
  mask_stride: int = 8
  skip_features: int = 16
  global_context: bool = False
  coordinates: bool = False
  inhibition: bool = False
  crf: tuple = ()
  pixel_mean: tuple = IMAGENET_MEAN
  pixel_std: tuple = IMAGENET_STD

  @nn.compact
  def __call__(self, images, train: bool = False):
    x = normalize_images(images, self.pixel_mean, self.pixel_std)
    if self.mask_stride not in MASK_STRIDES:
      raise ValueError(f"config.model.mask_stride: one of {MASK_STRIDES}; got {self.mask_stride}")
    trunk = ResNet(depth=self.depth, width=self.width, norm=self.norm, output_stride=STRIDE,
                   name="backbone")(x, train=train)
    features = nn.relu(Conv(self.lstm_features, (1, 1), name="reduce")(trunk["C5"]))
    if self.coordinates:
      features = coord_features(features)
    hidden = ConvLSTM(self.lstm_features, self.num_steps, self.lstm_layers, global_context=self.global_context,
                      name="conv_lstm")(features)
    # Spatial inhibition module: a mask and a confidence per step.
    if self.mask_stride == STRIDE:
      mask_logits = self.coarse_masks(hidden)[..., 0]  # [B, T, h, w]
    else:
      mask_logits = self.refined_masks(hidden, trunk["C2"])
    score_logits = nn.Dense(1, name="score")(hidden.max(axis=(2, 3)))[..., 0]  # [B, T]
    outputs = {"mask_logits": mask_logits, "score_logits": score_logits}
    crf = dict(self.crf)
    if not train and crf.get("num_iterations", 0) > 0:
      outputs["crf_masks"] = refined_by_crf(input_size_masks(mask_logits, self.mask_stride), images, crf)
    return outputs

  def coarse_masks(self, hidden):
    """The spatial inhibition module's mask logits [B, T, h, w, 1] at the ConvLSTM's stride: a 1 x 1 convolution of
    the hidden state; with `inhibition`, a second channel z of it is a salience whose maximum over the map wins,
    m(p) = s(p) + z(p) - max_q z(q), so that a step's mask keeps the most salient region and suppresses those less
    salient."""
    if not self.inhibition:
      return Conv(1, (1, 1), name="mask")(hidden)
    return inhibited(Conv(2, (1, 1), name="mask")(hidden))

  def refined_masks(self, hidden, skip):
    """Stride-4 mask logits [B, T, 2h, 2w] from the hidden states [B, T, h, w, C] and the trunk's C2 [B, 2h, 2w, C2],
    as FCN-8s refines its coarse scores with a finer layer (Long et al. 2015, Sec. 4.2): the spatial inhibition
    module's stride-8 mask logits (1 x 1 convolution of the hidden state), upsampled bilinearly, plus a correction
    from the step's hidden state (1 x 1 convolution, upsampled) and a 3 x 3 convolution of C2 (shared by the steps),
    through a ReLU and a 3 x 3 convolution to one channel. That last convolution starts at zero, so training starts
    from the upsampled stride-8 masks and the finer layer only moves their edges."""
    b, t, h, w, _ = hidden.shape
    f = self.skip_features
    up = lambda x: jax.image.resize(x, (b, t, 2 * h, 2 * w, x.shape[-1]), "linear")
    coarse = up(self.coarse_masks(hidden))
    embed = up(Conv(f, (1, 1), name="mask_embed")(hidden))
    fine = Conv(f, (3, 3), name="mask_skip")(skip)[:, None]
    fused = nn.relu(embed + fine).reshape(b * t, 2 * h, 2 * w, f)
    correction = Conv(1, (3, 3), kernel_init=nn.initializers.zeros, name="mask_refine")(fused)
    return (coarse + correction.reshape(b, t, 2 * h, 2 * w, 1))[..., 0]


def model_config() -> ml_collections.ConfigDict:
  """A narrow ResNet-18 trunk, two ConvLSTM layers of 32 channels, 10 steps, masks at stride 8; lambda 1, n + 2
  training steps; the paper's stop at confidence 0.5, the confidence as the score; no NMS, no CRF."""
  return ml_collections.ConfigDict({
      "name": "ris", "depth": 18, "width": 16, "norm": "batch", "num_steps": 10, "lstm_features": 32,
      "lstm_layers": 2, "mask_stride": 8, "skip_features": 16, "global_context": False, "coordinates": False,
      "inhibition": False, "bce_weight": 1.0, "extra_steps": 2,
      "score_threshold": 0.5, "mask_threshold": 0.5, "mask_scoring": False, "nms": "none", "nms_kernel": "gaussian",
      "nms_sigma": 2.0, "crf": dict(CRF_DEFAULTS),
      "pixel_mean": IMAGENET_MEAN, "pixel_std": IMAGENET_STD})


def build(config, info):
  del info  # class-agnostic
  c = validated(config, model_config())
  if c.nms not in NMS or c.nms_kernel not in KERNELS:
    raise ValueError(f"config.model.nms: one of {NMS} (got {c.nms!r}); config.model.nms_kernel: one of {KERNELS} "
                     f"(got {c.nms_kernel!r})")
  return RecurrentInstanceSegmentation(
      num_steps=c.num_steps, depth=c.depth, width=c.width, norm=c.norm, lstm_features=c.lstm_features,
      lstm_layers=c.lstm_layers, mask_stride=c.mask_stride, skip_features=c.skip_features,
      global_context=c.global_context, coordinates=c.coordinates, inhibition=c.inhibition,
      crf=tuple(sorted(c.crf.items())), **pixel_normalization(c))


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
  c = validated(config, model_config())
  probs = jax.nn.sigmoid(mask_logits).reshape(b, t, -1)
  targets = cell_average(batch["masks"].astype(jnp.float32), c.mask_stride)
  targets = targets.reshape(b, batch["masks"].shape[1], -1)
  valid = batch["instance_valid"] & ~batch["is_crowd"]
  per_image = jax.vmap(lambda p, s, y, v: recurrent_instance_loss(p, s, y, v, c.bce_weight, c.extra_steps))
  total, terms = per_image(probs, outputs["score_logits"], targets, valid)
  return total.mean(), {"loss_iou": terms["iou"].mean(), "loss_score": terms["score"].mean()}


def predict(outputs, config):
  """Masks at the input size (the CRF's refined masks where the outputs hold them); a step is a detection until the
  first confidence under score_threshold (0.5); its score is the confidence, times its mask's quality
  (`mask_quality`) with mask_scoring, decayed by Matrix NMS over the steps with nms "matrix"."""
  c = validated(config, model_config())
  if "crf_masks" in outputs:
    masks = outputs["crf_masks"]
  else:
    masks = input_size_masks(outputs["mask_logits"], c.mask_stride)
  score_logits = outputs["score_logits"]
  detections = stepwise_detections(masks, jax.nn.sigmoid(score_logits), c.score_threshold, c.mask_threshold)
  if c.mask_scoring:
    detections["scores"] = detections["scores"] * mask_quality(masks, c.mask_threshold)
  if c.nms == "matrix":
    binary = (masks > c.mask_threshold) & detections["valid"][..., None, None]
    detections["scores"] = matrix_nms_in_place(binary, detections["scores"], kernel=c.nms_kernel, sigma=c.nms_sigma)
  return detections


def inhibited(channels):
  """[B, T, h, w, 2] shape logits s and saliences z -> [B, T, h, w, 1] mask logits s(p) + z(p) - max_q z(q): at each
  step the most salient cell keeps its shape logit and the others lose how much less salient they are."""
  shape, salience = jnp.split(channels, 2, axis=-1)
  return shape + salience - salience.max(axis=(2, 3), keepdims=True)


def input_size_masks(mask_logits, mask_stride):
  """Mask probabilities [B, T, H, W] at the input size from the logits [B, T, H / stride, W / stride], upsampled
  bilinearly."""
  b, t, h, w = mask_logits.shape
  return jax.image.resize(jax.nn.sigmoid(mask_logits), (b, t, h * mask_stride, w * mask_stride), "linear")


def refined_by_crf(masks, images, crf):
  """Each step's mask probabilities [B, T, H, W] refined by a two-label DenseCRF over its image [B, H, W, 3] in
  [0, 1] (the CRF post-processing of Romera-Paredes & Torr 2016): the unaries are the mask's log
  odds against the background, the marginals' instance label is the refined mask."""
  b, t, h, w = masks.shape
  p = jnp.clip(masks, 1e-4, 1 - 1e-4).reshape(b * t, h, w)
  unary = jnp.stack([jnp.zeros_like(p), jnp.log(p) - jnp.log1p(-p)], axis=-1)
  image = jnp.broadcast_to(255.0 * images[:, None], (b, t, h, w, 3)).reshape(b * t, h, w, 3)
  return dense_crf(unary, image, **crf)[..., 1].reshape(b, t, h, w)


def mask_quality(masks, mask_threshold):
  """[..., H, W] probabilities -> [...]: the mean probability over the pixels above mask_threshold (0 for none), how
  sure the mask is of its own pixels (SOLOv2's maskness, Wang et al. 2020, Sec. 3.3.2), which ranks the steps' masks
  for AP beside the stop confidence that only says whether a step holds an instance."""
  binary = masks > mask_threshold
  return jnp.sum(jnp.where(binary, masks, 0.0), (-2, -1)) / jnp.maximum(binary.sum((-2, -1)), 1)
