"""Recurrent Instance Segmentation: the prediction contract, one compile for any instance count, and a model
that learns to emit one instance per step on a fixed batch."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from segjax.models import get_model
from train_util import counting_jit

ris = get_model("ris")


def _config(**overrides):
  config = ml_collections.ConfigDict(dict(name="ris", depth=18, width=8, norm="batch", num_steps=5,
                                          lstm_features=16, lstm_layers=1))
  config.update(overrides)
  return config


def _batch(counts, size=32, slots=3):
  """Squares on the 8-pixel grid of the mask logits (so a perfect mask is reachable), `counts[b]` of them in
  image b."""
  b = len(counts)
  masks = np.zeros((b, slots, size, size), np.uint8)
  images = np.zeros((b, size, size, 3), np.float32)
  corners = [(0, 0), (0, 16), (16, 8)]
  for i, n in enumerate(counts):
    for k in range(n):
      y, x = corners[k]
      masks[i, k, y:y + 16, x:x + 16] = 1
      images[i, y:y + 16, x:x + 16] = (0.2 + 0.3 * k, 0.8, 0.5)
  valid = np.arange(slots)[None, :] < np.asarray(counts)[:, None]
  return {"image": jnp.asarray(images), "masks": jnp.asarray(masks), "instance_valid": jnp.asarray(valid),
          "is_crowd": jnp.zeros((b, slots), bool)}


def test_unknown_key_is_named():
  try:
    ris.build(_config(lstm_size=3), None)
  except ValueError as e:
    assert "config.model.lstm_size" in str(e)
  else:
    raise AssertionError("an unknown key was accepted")


def test_trains_without_recompiling_and_learns_the_instances():
  config = _config()
  module = ris.build(config, None)
  batch = _batch([2, 1])
  variables = module.init(jax.random.key(0), batch["image"])
  optimizer = optax.adam(3e-3)
  state = (variables["params"], variables["batch_stats"], optimizer.init(variables["params"]))

  @counting_jit
  def step(state, batch):
    params, batch_stats, opt_state = state

    def objective(params):
      outputs, updates = module.apply({"params": params, "batch_stats": batch_stats}, batch["image"], train=True,
                                      mutable=["batch_stats"])
      value, terms = ris.loss(outputs, batch, config)
      return value, (terms, updates["batch_stats"])

    (value, (terms, batch_stats)), grads = jax.value_and_grad(objective, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), batch_stats, opt_state), terms

  for counts in ([0, 3], [1, 1]):  # other instance counts: the same program
    state, _ = step(state, _batch(counts))
  for _ in range(150):
    state, terms = step(state, batch)
  assert step.traces == 1
  # loss_iou is minus the matched relaxed IoU summed per image, averaged over the 2 images: 3 instances in all,
  # so a mean IoU above 0.75 (chance, a mask spread over the image, gives about 1/4) puts it below -1.125.
  assert float(terms["loss_iou"]) < -1.125, terms
  outputs = module.apply({"params": state[0], "batch_stats": state[1]}, batch["image"], train=False)
  predictions = jax.device_get(ris.predict(outputs, config))
  assert predictions["masks"].shape == (2, 5, 32, 32) and predictions["labels"].dtype == np.int32
  assert predictions["valid"].sum(1).tolist() == [2, 1]
