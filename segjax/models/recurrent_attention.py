"""Recurrent Attention instance segmentation (Ren & Zemel, "End-to-End Instance Segmentation with Recurrent
Attention", CVPR 2017).

One instance per step t = 1..T, each step:
  input      x_0 = [image, foreground, 8 angle bins] from an FCN; d_t = [x_0, c_t] with the canvas (external memory)
             c_t = max(c_{t-1}, y_{t-1}) of what is already segmented (Eqs. 1-2);
  box net    (Eqs. 3-10) u_t = CNN(d_t); an LSTM reads u_t in beta glimpses of soft attention over its positions
             (`segjax.layers.soft_attention`); from its last state a linear layer regresses the box: centre
             g = ((g~_X + 1) W / 2, (g~_Y + 1) H / 2), extents delta = exp(log delta~) (W, H), log sigma, log gamma;
  patch      p_t = Extract(d_t, F_Y, F_X) with DRAW's Gaussian filterbanks of K x K points (Eqs. 11-16,
             `segjax.ops.attention`);
  seg net    v_t = CNN(p_t), y~_t = D-CNN(v_t) with skip connections (Eqs. 17-18);
             y_t = sigmoid(gamma Extract(y~_t, F_Y^T, F_X^T) + beta) written back at the box (Eq. 19);
  score      s_t = sigmoid(w_s^T [z_t, v_t] + b_s) (Eq. 20).
With `disable_overwrite` (an option of the authors' code, renmengye/rec-attend-public full_model.py; not in the
paper's equations, and off in the authors' runs: full_model_train.py's flag is off unless given, and their run
scripts do not give it), y_t is multiplied by 1 - c_t, so that a step cannot take again the pixels the canvas
already holds.
The loss is Eq. 21 (`segjax.ops.set_losses.recurrent_attention_loss`): Hungarian-matched soft IoU of the masks,
lambda_b x the matched box loss (soft IoU of the box mask, a patch of ones written back by the box's filterbank,
plus the squared error of its normalised centre and log extents), lambda_s x the monotonic score BCE. Both matchings
assign the n instances to the first n steps (as the authors' code does), so the score's positives are steps 1..n.
The box targets are the instances' boxes widened by `box_padding` x their extent on each side (the authors'
attn_box_padding_ratio), so that the glimpse sees the instance's surroundings.

Training uses the authors' scheduled sampling (full_model.py's knobs): each step is greedily matched to the
not-yet-taken ground-truth instance whose padded box has the highest soft IoU with the step's box mask (the authors'
f_greedy_match); with probability theta_box that instance's padded box, its padding and centre jittered
(box_pad_noise, box_centre_noise), replaces the predicted box for the glimpse (the box loss still scores the predicted
one), and with probability theta its mask replaces y_t in the canvas, theta = 0.5 ** (max(step - sampling_offset, 0)
/ sampling_period) and theta_box the same with box_sampling_offset (-1: never); with `sampling_time_scale` both grow
with the recurrent step t by 1 + log(1 + 3 t), capped at 1 (the authors' knob_use_timescale). With `fixed_order`
(the authors' fixed_order) step t is assigned the t-th largest instance, in the sampling and in both matchings of
the loss, instead of the greedy and Hungarian matchings. The outputs' "glimpse_params" are the boxes the glimpses
read.
Inference stops at the first step of confidence under 0.5; with static shapes all `num_steps` steps run and the
later ones are marked invalid. Class-agnostic: every instance has label 1.

Departures from the paper, stated:
  - The foreground + 8-bin angle input comes from a small FCN head (`FCN`: stages of two 3 x 3 convolutions and
    max pooling, a 1 x 1 convolution, bilinear upsampling) trained jointly with its own losses (foreground BCE,
    angle-bin cross entropy over foreground pixels, weight `fcn_weight`), not a separately pretrained FCN; as a
    pretrained FCN's, its maps enter the box and segmentation networks without gradient. The box network is not
    pretrained either: the canvas and the glimpses take ground truth early in training while it learns.
  - With `box_coordinates`, the box CNN also reads two channels of the pixels' normalised (x, y): its few layers see
    too little of the image for zero padding to tell where a feature is, and the soft attention's read-out then
    carries where it looked, from which the box centre is regressed.
  - With `content_attention`, the box LSTM's attention logits add Xu et al.'s content term v^T tanh(U u_p + W z)
    (`SoftAttentionLSTM(content=True)`) to Eq. 5's MLP(z), so the first glimpse already weighs positions by what they
    hold; u_p also carries the position's normalised (x, y), and the box centre g~ is the last glimpse's expected
    position plus the regressed offset. With the paper's position-only weights the first glimpse reads the map's mean
    and the box network, trained from scratch, regresses little more than the mean box.
  - The box CNN's first convolution over d_t = [x_0, c_t] is computed as its x_0 part, once per image, plus its
    canvas part per step (`BoxCNN`; the same function, since a convolution is linear in its input channels).
  - The box loss adds the coordinate term (the paper's CVPPP run uses the IoU term alone after pretraining the box
    network); its matching minimises the box loss. sigma is regressed relative to the patch spacing delta / K, and
    the written patch is scaled by the spacings (delta_X / K_X)(delta_Y / K_Y) so that a patch of ones writes ~1
    inside the box whatever its size; beta is the reference code's constant -5.
  - The box and segmentation CNNs have no batch normalisation; the box LSTM starts every step from a zero state
    (as the authors' code, renmengye/rec-attend-public full_model.py); gradients do not flow through the canvas
    (the authors' stop_canvas_grad).
  - The training step count that anneals theta is a counter in the "batch_stats" collection, incremented by each
    training forward pass (the train step applies the model with batch_stats mutable).
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from segjax.layers.conv import Conv, UpConvolution
from segjax.layers.soft_attention import SoftAttentionLSTM
from segjax.models import pixel_normalization
from segjax.models.validation import validated
from segjax.ops.attention import extract_patch, gaussian_filterbank, write_patch
from segjax.ops.image import IMAGENET_MEAN, IMAGENET_STD, normalize_images
from segjax.ops.masks import masks_to_boxes, stepwise_detections
from segjax.ops.pooling import max_pool_2x2
from segjax.ops.set_losses import recurrent_attention_loss, soft_iou

TASK = "instance"
FORWARD_KEYS = ("masks", "instance_valid", "is_crowd")
BATCH_KEYS = ("image",) + FORWARD_KEYS
INFERENCE_KEYS = frozenset({"score_threshold", "mask_threshold"})
NUM_ANGLES = 8
BETA = -5.0  # the output's constant bias (Eq. 19's beta; the authors' code)
SAMPLING_DECAY = 0.5


def box_parameters(masks):
  """Normalised (g~_X, g~_Y, log delta~_X, log delta~_Y) [..., 4] of the tight boxes of masks [..., H, W]: centre
  2 g / size - 1 and log(extent / size), the box spanning pixels x1..x2 being [x1, x2 + 1). Empty masks give the
  whole image (finite targets; they are padding)."""
  *lead, h, w = masks.shape
  flat = masks.reshape(-1, h, w)
  boxes = masks_to_boxes(flat) + jnp.array([0, 0, 1, 1], jnp.float32)
  boxes = jnp.where(flat.any((1, 2))[:, None], boxes, jnp.array([0, 0, w, h], jnp.float32))
  size = jnp.array([w, h], jnp.float32)
  centre = (boxes[:, :2] + boxes[:, 2:]) / 2
  extent = boxes[:, 2:] - boxes[:, :2]
  return jnp.concatenate([2 * centre / size - 1, jnp.log(extent / size)], axis=-1).reshape(*lead, 4)


def padded_box_parameters(masks, padding, centre_shift=0.0):
  """`box_parameters` of the boxes the box network attends to: the tight box widened by `padding` x its extent on
  each side and moved by `centre_shift` x its extent (the authors' modellib.get_gt_box, padding_ratio and
  center_shift_ratio); padding [...] or [..., 1] and centre_shift [..., 2] broadcast against masks [..., H, W]."""
  params = box_parameters(masks)
  extent = jnp.exp(params[..., 2:])
  centre = params[..., :2] + 2 * jnp.asarray(centre_shift) * extent
  log_extent = params[..., 2:] + jnp.log1p(2 * jnp.asarray(padding))
  return jnp.concatenate([centre, log_extent], axis=-1)


def sampling_probabilities(step, offset, period, num_steps, time_scale=False):
  """theta [num_steps], the probability that recurrent step t takes ground truth at training step `step`:
  0.5 ** (max(step - offset, 0) / period) (the authors' exponential knob decay); with `time_scale`, multiplied by
  1 + log(1 + 3 t) and capped at 1 (the authors' knob_use_timescale, on in their CVPPP, KITTI and Cityscapes runs),
  so that later steps, whose canvas holds more of the earlier ones' output, take ground truth for longer."""
  theta = SAMPLING_DECAY ** (jnp.maximum(step - offset, 0) / period)
  scale = 1 + jnp.log1p(3.0 * jnp.arange(num_steps)) if time_scale else jnp.ones(num_steps)
  return jnp.minimum(theta * scale, 1.0)


def area_order(masks, valid):
  """rank [..., N] of each instance by area, largest first (ties by index), the order of the authors' data sets
  (renmengye/rec-attend-public data_api/ins_seg_dataset.py sorts the instances by area, descending); invalid
  instances rank after every valid one."""
  area = jnp.where(valid, masks.sum((-2, -1)), -1.0)
  return jnp.argsort(jnp.argsort(-area, axis=-1, stable=True), axis=-1)


def box_masks(params, height, width):
  """Filled boxes [..., H, W] (pixel a inside where its centre a + 0.5 lies in the box) of normalised params."""
  size = jnp.array([width, height], jnp.float32)
  centre = (params[..., :2] + 1) * size / 2
  half = jnp.exp(params[..., 2:]) * size / 2
  def inside(axis, n):
    pos = jnp.arange(n) + 0.5
    return (jnp.abs(pos - centre[..., axis, None]) < half[..., axis, None]).astype(jnp.float32)
  return inside(1, height)[..., :, None] * inside(0, width)[..., None, :]


def coordinate_channels(height, width):
  """[H, W, 2] the normalised (x, y) of every pixel centre, 2 (a + 0.5) / size - 1, as the box centres g~."""
  ys, xs = jnp.meshgrid((jnp.arange(height) + 0.5) * 2 / height - 1, (jnp.arange(width) + 0.5) * 2 / width - 1,
                        indexing="ij")
  return jnp.stack([xs, ys], axis=-1)


def with_coordinates(x):
  """x [B, H, W, C] -> [B, H, W, C + 2]: x then its `coordinate_channels`."""
  b, h, w, _ = x.shape
  return jnp.concatenate([x, jnp.broadcast_to(coordinate_channels(h, w), (b, h, w, 2))], axis=-1)


def angle_bins(masks, valid):
  """The FCN's targets from masks [N, H, W] and valid [N]: foreground [H, W] and, per foreground pixel, the bin
  0..7 of the direction from the pixel to its instance's centroid (Ren & Zemel Sec. 3.1)."""
  masks = masks.astype(jnp.float32) * valid[:, None, None]
  _, h, w = masks.shape
  ys, xs = jnp.meshgrid(jnp.arange(h) + 0.5, jnp.arange(w) + 0.5, indexing="ij")
  area = jnp.maximum(masks.sum((1, 2)), 1.0)
  cy, cx = (masks * ys).sum((1, 2)) / area, (masks * xs).sum((1, 2)) / area
  owner = jnp.argmax(masks, axis=0)
  angle = jnp.arctan2(cy[owner] - ys, cx[owner] - xs)  # (-pi, pi]
  bins = jnp.floor((angle + jnp.pi) / (2 * jnp.pi) * NUM_ANGLES).astype(jnp.int32) % NUM_ANGLES
  return masks.max(0), bins


class SegmentationNet(nn.Module):
  """Eqs. 17-18: an encoder of 3 x 3 convolutions and 2 x 2 max pooling over the patch, and a decoder of 2 x 2
  transposed convolutions with skip connections back to the patch size. Returns (y~ [B, K, K], v [B, ...])."""
  channels: tuple

  @nn.compact
  def __call__(self, patch):
    x, skips = patch, []
    for i, c in enumerate(self.channels):
      x = nn.relu(Conv(c, (3, 3), name=f"enc{i}")(x))
      skips.append(x)
      x = max_pool_2x2(x)
    bottleneck = x
    for i in reversed(range(len(self.channels))):
      x = UpConvolution(self.channels[i], (2, 2), name=f"up{i}")(x)
      x = nn.relu(Conv(self.channels[i], (3, 3), name=f"dec{i}")(jnp.concatenate([x, skips[i]], axis=-1)))
    # Bias -beta: an untrained patch writes probability 1/2 inside its box.
    logits = Conv(1, (1, 1), bias_init=nn.initializers.constant(-BETA), name="out")(x)[..., 0]
    return logits, bottleneck


class BoxCNN(nn.Module):
  """The box network's CNN over d_t = [x_0, c_t]: per entry of `channels` a 3 x 3 convolution, ReLU and 2 x 2 max
  pooling. x_0 is the same at every step and a convolution is linear in its input channels, so the first
  convolution over the concatenation is split into its x_0 part (`image_part`, computed once) and its canvas part
  (per step): conv([x_0, c], [W_x; W_c]) + b = conv(x_0, W_x) + b + conv(c, W_c)."""
  channels: tuple

  def setup(self):
    self.image_conv = Conv(self.channels[0], (3, 3), name="conv0")
    self.canvas_conv = Conv(self.channels[0], (3, 3), use_bias=False, name="conv0_canvas")
    self.convs = [Conv(c, (3, 3), name=f"conv{i}") for i, c in enumerate(self.channels) if i]

  def image_part(self, x0):
    return self.image_conv(x0)

  def __call__(self, image_part, canvas):
    u = max_pool_2x2(nn.relu(image_part + self.canvas_conv(canvas)))
    for conv in self.convs:
      u = max_pool_2x2(nn.relu(conv(u)))
    return u


class FCN(nn.Module):
  """The input head: per stage two 3 x 3 convolutions and 2 x 2 max pooling, a 1 x 1 convolution to the foreground
  logit and 8 angle-bin logits, bilinear upsampling to the input size. Returns [B, H, W, 9]."""
  channels: tuple

  @nn.compact
  def __call__(self, x):
    b, h, w, _ = x.shape
    for i, c in enumerate(self.channels):
      x = nn.relu(Conv(c, (3, 3), name=f"conv{i}a")(x))
      x = nn.relu(Conv(c, (3, 3), name=f"conv{i}b")(x))
      x = max_pool_2x2(x)
    return jax.image.resize(Conv(1 + NUM_ANGLES, (1, 1), name="out")(x), (b, h, w, 1 + NUM_ANGLES), "linear")


class RecurrentAttention(nn.Module):
  num_steps: int
  fcn_channels: tuple = (16, 32, 64)
  box_channels: tuple = (16, 32, 32)
  lstm_features: int = 64
  num_glimpses: int = 3
  patch_size: int = 24
  seg_channels: tuple = (16, 32)
  sampling_offset: int = 0
  sampling_period: int = 0
  box_sampling_offset: int = -1
  box_padding: float = 0.0
  box_pad_noise: float = 0.1
  box_centre_noise: float = 0.05
  box_coordinates: bool = False
  content_attention: bool = False
  disable_overwrite: bool = False
  sampling_time_scale: bool = False
  fixed_order: bool = False
  pixel_mean: tuple = IMAGENET_MEAN
  pixel_std: tuple = IMAGENET_STD

  @nn.compact
  def __call__(self, images, train: bool = False, targets=None):
    b, h, w, _ = images.shape
    k = self.patch_size
    x = normalize_images(images, self.pixel_mean, self.pixel_std)
    fcn_logits = FCN(tuple(self.fcn_channels), name="fcn")(x)
    x0 = jnp.concatenate([x, jax.nn.sigmoid(fcn_logits[..., :1]), jax.nn.softmax(fcn_logits[..., 1:])], axis=-1)
    # The FCN learns from its own loss only: in the paper it is pretrained and its maps are the box and segmentation
    # networks' input.
    x0 = jax.lax.stop_gradient(x0)

    counter = self.variable("batch_stats", "sampling_step", lambda: jnp.zeros((), jnp.int32))
    sampling = train and targets is not None and self.sampling_period > 0 and not self.is_initializing()
    if sampling:
      step = counter.value
      counter.value = step + 1
      def knob(offset):
        return sampling_probabilities(step, offset, self.sampling_period, self.num_steps, self.sampling_time_scale)
      theta = knob(self.sampling_offset)
      theta_box = knob(self.box_sampling_offset) if self.box_sampling_offset >= 0 else jnp.zeros(self.num_steps)
      gt = targets["masks"].astype(jnp.float32)
      n = gt.shape[1]
      gt_valid = targets["instance_valid"] & ~targets["is_crowd"]
      gt_boxes = box_masks(padded_box_parameters(gt, self.box_padding), h, w).reshape(b, n, -1)
      # The boxes fed in place of the predicted ones: padding and centre jittered (uniform, box_pad_noise and
      # box_centre_noise, the authors' gt_box_pad_noise and gt_box_ctr_noise).
      pad_key, shift_key = jax.random.split(self.make_rng("sampling"))
      noisy_padding = self.box_padding + jax.random.uniform(pad_key, (b, n, 1), minval=-self.box_pad_noise,
                                                            maxval=self.box_pad_noise)
      shift = jax.random.uniform(shift_key, (b, n, 2), minval=-self.box_centre_noise, maxval=self.box_centre_noise)
      gt_params = padded_box_parameters(gt, jnp.maximum(noisy_padding, 0.0), shift)
      taken = jnp.zeros(gt_valid.shape, bool)
      rank = area_order(gt, gt_valid) if self.fixed_order else None
      coins = jax.random.uniform(self.make_rng("sampling"), (2, self.num_steps, b))

    box_cnn = BoxCNN(tuple(self.box_channels), name="box_cnn")
    box_input = x0
    if self.box_coordinates:
      box_input = with_coordinates(x0)
    image_part = box_cnn.image_part(box_input)
    glimpses = SoftAttentionLSTM(self.lstm_features, self.num_glimpses, content=self.content_attention,
                                 name="box_lstm")
    # g~ (2), log delta~ (2), log sigma (2), log gamma: zero weights start every box on the whole image.
    box_head = nn.Dense(7, kernel_init=nn.initializers.zeros, name="box")
    seg_net = SegmentationNet(tuple(self.seg_channels), name="seg")
    score_head = nn.Dense(1, name="score")
    size = jnp.array([w, h], jnp.float32)
    filterbank = jax.vmap(gaussian_filterbank, in_axes=(0, 0, 0, None, None))
    ones = jnp.ones((b, k, k, 1), images.dtype)

    def filterbanks(params, log_sigma):
      centre = (params[:, :2] + 1) * size / 2
      extent = jnp.exp(params[:, 2:4]) * size
      spacing = extent / k
      sigma = jnp.exp(log_sigma) * spacing
      f_x = filterbank(centre[:, 0], extent[:, 0], sigma[:, 0], w, k)  # [B, W, K]
      f_y = filterbank(centre[:, 1], extent[:, 1], sigma[:, 1], h, k)  # [B, H, K]
      return f_y, f_x, (spacing[:, 0] * spacing[:, 1])[:, None, None]

    canvas = jnp.zeros((b, h, w, 1), images.dtype)
    outputs = {key: [] for key in ("mask_probs", "box_masks", "box_params", "score_logits", "glimpse_params")}
    for t in range(self.num_steps):
      d = jnp.concatenate([x0, canvas], axis=-1)
      u = box_cnn(image_part, canvas)
      if self.content_attention:
        u = with_coordinates(u)  # each position also carries its normalised (x, y)
      z, attention = glimpses(u)
      raw = box_head(z)
      if self.content_attention:
        # The box centre is the last glimpse's expected position (what it read of the (x, y) channels) plus the
        # regressed offset.
        raw = raw.at[:, :2].add(attention["attended"][:, -1, -2:])
      params = jnp.concatenate([raw[:, :2], jnp.clip(raw[:, 2:4], -6.0, 1.0)], axis=-1)
      log_sigma = jnp.clip(raw[:, 4:6], -4.0, 4.0)
      gamma = jnp.exp(jnp.clip(raw[:, 6], -4.0, 4.0))
      glimpse = params
      f_y, f_x, density = filterbanks(params, log_sigma)
      box = jnp.minimum(jax.vmap(write_patch)(ones, f_y, f_x)[..., 0] * density, 1.0)
      if sampling:
        # The step's ground-truth instance: the not-yet-taken one whose (padded) box has the highest soft IoU with
        # the step's box (the authors' f_greedy_match); with probability theta_box its jittered box replaces the
        # predicted one for the glimpse, with probability theta its mask replaces y_t in the canvas.
        if self.fixed_order:  # step t takes the t-th largest instance
          pick = jnp.argmax(rank == t, axis=1)
          has = gt_valid.sum(axis=1) > t
        else:
          iou = jax.vmap(soft_iou)(jax.lax.stop_gradient(box).reshape(b, 1, -1), gt_boxes)[:, 0]
          free = gt_valid & ~taken
          pick = jnp.argmax(jnp.where(free, iou, -1.0), axis=1)
          has = free.any(axis=1)
        taken = taken | (jax.nn.one_hot(pick, n, dtype=bool) & has[:, None])
        use_box = has & (coins[0, t] < theta_box[t])
        glimpse = jnp.where(use_box[:, None], gt_params[jnp.arange(b), pick], params)
        f_y, f_x, density = filterbanks(glimpse, log_sigma)
      patch = jax.vmap(extract_patch)(d, f_y, f_x)  # [B, K, K, C]
      patch_logits, v = seg_net(patch)
      written = jax.vmap(write_patch)(patch_logits[..., None], f_y, f_x)[..., 0] * density  # [B, H, W]
      y = jax.nn.sigmoid(gamma[:, None, None] * written + BETA)
      if self.disable_overwrite:
        y = y * (1 - canvas[..., 0])
      score = score_head(jnp.concatenate([z, v.reshape(b, -1)], axis=-1))[:, 0]
      for key, value in zip(outputs, (y, box, params, score, glimpse)):
        outputs[key].append(value)

      written_canvas = jax.lax.stop_gradient(y)
      if sampling:
        use = has & (coins[1, t] < theta[t])
        written_canvas = jnp.where(use[:, None, None], gt[jnp.arange(b), pick], written_canvas)
      canvas = jnp.maximum(canvas, written_canvas[..., None])

    result = {key: jnp.stack(value, axis=1) for key, value in outputs.items()}
    result["fcn_logits"] = fcn_logits
    return result


def model_config() -> ml_collections.ConfigDict:
  """An FCN head 16-32-64 to stride 8; box CNN 16-32-32 to stride 8, a 64-unit LSTM of 3 glimpses, 24 x 24 patches, a
  16-32 segmentation net; lambda_b = lambda_s = 1; the paper's stop at confidence 0.5."""
  return ml_collections.ConfigDict({
      "name": "recurrent_attention", "fcn_channels": (16, 32, 64), "num_steps": 10,
      "box_channels": (16, 32, 32), "lstm_features": 64, "num_glimpses": 3, "patch_size": 24,
      "seg_channels": (16, 32), "box_weight": 1.0, "coord_weight": 1.0, "score_weight": 1.0, "fcn_weight": 1.0,
      "sampling_offset": 0, "sampling_period": 0, "box_sampling_offset": -1, "box_padding": 0.0,
      "box_pad_noise": 0.1, "box_centre_noise": 0.05, "box_coordinates": False, "content_attention": False,
      "disable_overwrite": False, "sampling_time_scale": False, "fixed_order": False,
      "score_threshold": 0.5, "mask_threshold": 0.5,
      "pixel_mean": IMAGENET_MEAN, "pixel_std": IMAGENET_STD})


def build(config, info):
  del info  # class-agnostic
  c = validated(config, model_config())
  if c.patch_size % (2 ** len(c.seg_channels)):
    raise ValueError(f"config.model.patch_size ({c.patch_size}) must be a multiple of 2 ** len(seg_channels)")
  for key in ("box_pad_noise", "box_centre_noise"):
    if c[key] < 0:
      raise ValueError(f"config.model.{key} ({c[key]}) must be >= 0: the half-width of a uniform jitter")
  return RecurrentAttention(
      num_steps=c.num_steps, fcn_channels=tuple(c.fcn_channels), box_channels=tuple(c.box_channels),
      lstm_features=c.lstm_features, num_glimpses=c.num_glimpses, patch_size=c.patch_size,
      seg_channels=tuple(c.seg_channels), sampling_offset=c.sampling_offset, sampling_period=c.sampling_period,
      box_sampling_offset=c.box_sampling_offset, box_padding=c.box_padding,
      box_pad_noise=c.box_pad_noise, box_centre_noise=c.box_centre_noise, box_coordinates=c.box_coordinates,
      content_attention=c.content_attention, disable_overwrite=c.disable_overwrite,
      sampling_time_scale=c.sampling_time_scale, fixed_order=c.fixed_order, **pixel_normalization(c))


def fcn_loss(fcn_logits, masks, valid):
  """The FCN head's loss for one image: foreground BCE (mean over pixels) + angle-bin cross entropy (mean over
  foreground pixels)."""
  foreground, bins = angle_bins(masks, valid)
  fg_logits = fcn_logits[..., 0]
  bce = jnp.maximum(fg_logits, 0) - fg_logits * foreground + jnp.log1p(jnp.exp(-jnp.abs(fg_logits)))
  log_probs = jax.nn.log_softmax(fcn_logits[..., 1:])
  ce = -jnp.take_along_axis(log_probs, bins[..., None], axis=-1)[..., 0]
  return bce.mean() + jnp.sum(ce * foreground) / jnp.maximum(foreground.sum(), 1.0)


def loss(outputs, batch, config):
  """Eq. 21 per image, averaged over the batch, plus fcn_weight x the FCN head's loss."""
  c = validated(config, model_config())
  mask_probs = outputs["mask_probs"]
  b, t, h, w = mask_probs.shape
  if t < batch["masks"].shape[1]:
    raise ValueError(f"config.model.num_steps ({t}) must be at least dataset.max_instances "
                     f"({batch['masks'].shape[1]}): every instance needs a step")
  masks = batch["masks"].astype(jnp.float32)
  valid = batch["instance_valid"] & ~batch["is_crowd"]
  target_params = padded_box_parameters(masks, c.box_padding)
  target_boxes = box_masks(target_params, h, w)
  n = masks.shape[1]
  # fixed_order: step t is assigned the t-th largest instance, in both matchings.
  assignment = None
  if c.fixed_order:
    assignment = (area_order(masks, valid)[:, None, :] == jnp.arange(t)[None, :, None]) & valid[:, None, :]
  per_image = jax.vmap(lambda *a: recurrent_attention_loss(*a[:8], c.box_weight, c.coord_weight, c.score_weight,
                                                           assignment=a[8]))
  total, terms = per_image(mask_probs.reshape(b, t, -1), outputs["box_masks"].reshape(b, t, -1),
                           outputs["box_params"], outputs["score_logits"], masks.reshape(b, n, -1),
                           target_boxes.reshape(b, n, -1), target_params, valid, assignment)
  fcn = jax.vmap(fcn_loss)(outputs["fcn_logits"], batch["masks"], valid)
  metrics = {f"loss_{k}": v.mean() for k, v in terms.items()}
  metrics["loss_fcn"] = fcn.mean()
  return total.mean() + c.fcn_weight * fcn.mean(), metrics


def predict(outputs, config):
  """Masks at the input size; a step is a detection until the first confidence under the threshold (0.5)."""
  c = validated(config, model_config())
  masks = outputs["mask_probs"]
  return stepwise_detections(masks, jax.nn.sigmoid(outputs["score_logits"]), c.score_threshold, c.mask_threshold)
