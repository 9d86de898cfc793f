"""segjax.ops.losses: values and gradients against torchvision and torch autograd, float32 (RTOL, ATOL)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segjax.ops import losses
from references import requires_torch, torch, torchvision

F = torch.nn.functional if torch else None

RTOL, ATOL = 1e-5, 1e-6


def value_and_grad_torch(fn, *arrays):
  """fn(*tensors) and the gradient of its sum w.r.t. the first array."""
  tensors = [torch.tensor(a, requires_grad=(i == 0)) for i, a in enumerate(arrays)]
  out = fn(*tensors)
  out.sum().backward()
  return out.detach().numpy(), tensors[0].grad.numpy()


def value_and_grad_jax(fn, *arrays):
  out, vjp = jax.vjp(lambda x: fn(x, *arrays[1:]), arrays[0])
  return np.asarray(out), np.asarray(vjp(jnp.ones_like(out))[0])


def assert_close(ours, ref):
  for o, r in zip(ours, ref):
    np.testing.assert_allclose(o, r, rtol=RTOL, atol=ATOL)


@requires_torch
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (-1, 1.5), (0.6, 0.0)])
def test_sigmoid_focal_loss_matches_torchvision(reduction, alpha, gamma):
  rng = np.random.default_rng(0)
  logits = rng.normal(0, 3, (6, 5)).astype(np.float32)
  targets = (rng.uniform(size=(6, 5)) > 0.7).astype(np.float32)
  ref = value_and_grad_torch(
      lambda x, t: torchvision.ops.sigmoid_focal_loss(x, t, alpha, gamma, reduction), logits, targets)
  ours = value_and_grad_jax(
      jax.jit(lambda x, t: losses.sigmoid_focal_loss(x, t, alpha, gamma, reduction)), logits, targets)
  assert_close(ours, ref)


def solov2_dice_loss_torch(logits, target):
  """SOLOv2 official dice_loss (WXinlong/SOLO), applied to sigmoid(logits), mean over instances."""
  x = torch.sigmoid(logits).reshape(logits.shape[0], -1)
  target = target.reshape(target.shape[0], -1).float()
  a = torch.sum(x * target, 1)
  b = torch.sum(x * x, 1) + 0.001
  c = torch.sum(target * target, 1) + 0.001
  return (1 - 2 * a / (b + c)).mean()


@requires_torch
def test_dice_loss_matches_solov2_and_ignores_padding():
  rng = np.random.default_rng(1)
  logits = rng.normal(0, 2, (5, 12, 12)).astype(np.float32)
  targets = (rng.uniform(size=(5, 12, 12)) > 0.6).astype(np.float32)
  ref = value_and_grad_torch(solov2_dice_loss_torch, logits, targets)
  dice = jax.jit(losses.dice_loss)
  assert_close(value_and_grad_jax(dice, logits, targets), ref)
  # Two padded instances with valid=False change nothing, and get no gradient.
  padded_logits = np.concatenate([logits, rng.normal(size=(2, 12, 12)).astype(np.float32)])
  padded_targets = np.concatenate([targets, np.ones((2, 12, 12), np.float32)])
  valid = np.array([True] * 5 + [False] * 2)
  value, grad = value_and_grad_jax(lambda x, t: dice(x, t, valid), padded_logits, padded_targets)
  assert_close((value, grad[:5]), ref)
  assert not grad[5:].any()
  assert float(dice(padded_logits, padded_targets, np.zeros(7, bool))) == 0.0


@requires_torch
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("beta", [0.0, 1.0 / 9, 1.0])
def test_smooth_l1_loss_matches_torch(reduction, beta):
  rng = np.random.default_rng(2)
  x = rng.normal(0, 1, (8, 4)).astype(np.float32)
  y = (x + rng.normal(0, 0.3, (8, 4))).astype(np.float32)
  y[0] = x[0]  # zero difference: gradient 0 in torch for every beta
  ref = value_and_grad_torch(lambda a, b: F.smooth_l1_loss(a, b, reduction=reduction, beta=beta), x, y)
  ours = value_and_grad_jax(jax.jit(lambda a, b: losses.smooth_l1_loss(a, b, beta, reduction)), x, y)
  assert_close(ours, ref)


@functools.partial(jax.jit, static_argnames=("reduction", "ignore_index"))
def cross_entropy_jit(logits, labels, weights, reduction, ignore_index=255):
  return losses.softmax_cross_entropy(logits, labels, ignore_index, reduction, weights)


@requires_torch
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("weighted", [False, True])
def test_softmax_cross_entropy_matches_torch(reduction, weighted):
  rng = np.random.default_rng(3)
  logits = rng.normal(0, 2, (2, 5, 6, 4)).astype(np.float32)  # NHWC, 4 classes
  labels = rng.integers(0, 4, (2, 5, 6)).astype(np.int32)
  labels[rng.uniform(size=labels.shape) < 0.3] = 255
  weights = rng.uniform(0.5, 2, 4).astype(np.float32) if weighted else None

  def torch_ce(x, y):
    w = None if weights is None else torch.tensor(weights)
    return F.cross_entropy(x.permute(0, 3, 1, 2), y.long(), weight=w, ignore_index=255, reduction=reduction)

  ref = value_and_grad_torch(torch_ce, logits, labels)
  ours = value_and_grad_jax(lambda x, y: cross_entropy_jit(x, y, weights, reduction), logits, labels)
  assert_close(ours, ref)


@requires_torch
def test_softmax_cross_entropy_all_ignored_mean_is_zero_and_compiles_once():
  rng = np.random.default_rng(4)
  logits = rng.normal(size=(3, 5)).astype(np.float32)
  value, grad = value_and_grad_jax(lambda x, y: cross_entropy_jit(x, y, None, "mean", ignore_index=-1),
                                   logits, np.full(3, -1, np.int32))
  assert value == 0.0 and not grad.any()
  traces = []

  @jax.jit
  def f(logits, labels):
    traces.append(1)
    return losses.softmax_cross_entropy(logits, labels)

  for _ in range(2):
    labels = rng.integers(0, 5, 3).astype(np.int32)
    ref = F.cross_entropy(torch.tensor(logits), torch.tensor(labels).long(), ignore_index=255)
    np.testing.assert_allclose(float(f(logits, labels)), float(ref), rtol=RTOL)
  assert len(traces) == 1


def test_losses_reject_bad_arguments():
  x = np.zeros((3, 4), np.float32)
  with pytest.raises(ValueError, match="targets must have the shape of logits"):
    losses.sigmoid_focal_loss(x, np.zeros((3, 5)))
  with pytest.raises(ValueError, match="reduction"):
    losses.smooth_l1_loss(x, x, reduction="avg")
  with pytest.raises(ValueError, match=r"labels must have shape \(3,\)"):
    losses.softmax_cross_entropy(x, np.zeros((3, 4), np.int32))
  with pytest.raises(ValueError, match=r"weights must have shape \(4,\)"):
    losses.softmax_cross_entropy(x, np.zeros(3, np.int32), weights=np.ones(3))
  with pytest.raises(ValueError, match="valid must have shape"):
    losses.dice_loss(x, x, valid=np.ones(2, bool))
  with pytest.raises(ValueError, match="alpha"):
    losses.sigmoid_focal_loss(x, x, alpha=2.0)
