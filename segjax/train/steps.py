"""Jitted train and eval steps over a device mesh."""
import functools

import jax
import optax

from segjax import models
from segjax.data import compact
from segjax.evaluation import tta
from segjax.train import mesh as mesh_lib


def _inputs(model_lib, model_config, batch):
  """The batch entries a model's forward pass reads besides the image (segjax.models.input_keys), by name."""
  return {k: batch[k] for k in models.input_keys(model_lib, model_config)}


def make_train_step(module, model_lib, model_config, optimizer, schedule, mesh, state_shardings):
  """Returns jitted `train_step(state, batch, rng) -> (state, metrics)`; the batch is sharded on `data`."""

  def train_step(state, batch, rng):
    # Two-stage detectors sample RoIs from the ground truth inside the forward pass (model FORWARD_KEYS).
    forward_keys = getattr(model_lib, "FORWARD_KEYS", ())
    targets = {"targets": {k: batch[k] for k in forward_keys}} if forward_keys else {}
    targets.update(_inputs(model_lib, model_config, batch))
    dropout_rng, sampling_rng = jax.random.split(rng)

    def loss_fn(params):
      variables = {**state.variables, "params": params}
      outputs, updates = module.apply(variables, batch["image"], train=True, mutable=["batch_stats"],
                                      rngs={"dropout": dropout_rng, "sampling": sampling_rng}, **targets)
      loss, aux = model_lib.loss(outputs, batch, model_config)
      return loss, (aux, updates)

    (loss, (aux, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    deltas, opt_state = optimizer.update(grads, state.opt_state, state.params)
    new_state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, deltas),
                              opt_state=opt_state, batch_stats=updates.get("batch_stats", state.batch_stats))
    return new_state, {"loss": loss, **aux, "learning_rate": schedule(state.step)}

  replicated = mesh_lib.replicated(mesh)
  return jax.jit(train_step, in_shardings=(state_shardings, mesh_lib.batch_sharding(mesh), replicated),
                 out_shardings=(state_shardings, replicated), donate_argnums=0)


def make_eval_step(module, model_lib, model_config, evaluator, mesh, variables_shardings, scales=(1.0,), flip=False):
  """Returns jitted `eval_step(variables, batch) -> (predictions, evaluator stats)`; a semantic model with `scales`
  other than (1.0,) or `flip` predicts the labels of segjax.evaluation.tta (multi-scale and flipped inputs);
  predicted instance masks come back thresholded and bit-packed (compact.pack_masks)."""

  def eval_step(variables, batch):
    forward = functools.partial(module.apply, variables, train=False, **_inputs(model_lib, model_config, batch))
    if tuple(scales) != (1.0,) or flip:
      predictions = {"labels": tta.semantic_tta(forward, batch["image"], scales, flip)["labels"]}
    else:
      predictions = model_lib.predict(forward(batch["image"]), model_config)
    stats = evaluator.device_stats(predictions, batch)
    if "masks" in predictions:
      predictions = {**predictions, "masks": compact.pack_masks(predictions["masks"], jax.numpy)}
    return predictions, stats

  return jax.jit(eval_step, in_shardings=(variables_shardings, mesh_lib.batch_sharding(mesh)),
                 out_shardings=(mesh_lib.batch_sharding(mesh), mesh_lib.replicated(mesh)))
