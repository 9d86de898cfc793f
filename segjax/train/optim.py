"""Optimizers and learning-rate schedules from the config (the papers' recipes)."""
import re

import optax
from flax import traverse_util


def learning_rate_schedule(config):
  """`config.optimizer`: learning_rate, schedule ("constant" | "poly" | "cosine" | "step"), warmup_steps."""
  opt = config.optimizer
  total = config.total_steps
  warmup = opt.get("warmup_steps", 0)
  base = opt.learning_rate
  if opt.schedule == "constant":
    main = optax.constant_schedule(base)
  elif opt.schedule == "poly":  # DeepLab: lr (1 - step / total)^power
    main = optax.polynomial_schedule(base, 0.0, opt.get("power", 0.9), max(total - warmup, 1))
  elif opt.schedule == "cosine":
    main = optax.cosine_decay_schedule(base, max(total - warmup, 1))
  elif opt.schedule == "step":  # Detectron: multiply by `decay_factor` at each boundary step
    boundaries = {int(s) - warmup: opt.get("decay_factor", 0.1) for s in opt.decay_steps}
    main = optax.piecewise_constant_schedule(base, boundaries)
  else:
    raise ValueError(f"config.optimizer.schedule: unknown schedule {opt.schedule!r}; "
                     "expected constant, poly, cosine or step")
  if not warmup:
    return main
  # Linear warm-up from warmup_factor * lr (Goyal et al. 2017).
  start = optax.linear_schedule(base * opt.get("warmup_factor", 0.001), base, warmup)
  return optax.join_schedules([start, main], [warmup])


def _trained(config):
  """SGD with momentum and torch-style (coupled) weight decay, or AdamW; with optimizer.clip_value, each gradient
  entry is first clipped to [-clip_value, clip_value] (torch.nn.utils.clip_grad_value_ before the step)."""
  opt = config.optimizer
  lr = learning_rate_schedule(config)
  if opt.name == "sgd":
    # torch.optim.SGD: g + wd * w, then momentum, then -lr.
    tx = optax.chain(
        optax.add_decayed_weights(opt.weight_decay),
        optax.sgd(lr, momentum=opt.momentum or None, nesterov=opt.get("nesterov", False)))
  elif opt.name == "adamw":
    tx = optax.adamw(lr, weight_decay=opt.weight_decay)
  else:
    raise ValueError(f"config.optimizer.name: unknown optimizer {opt.name!r}; expected sgd or adamw")
  clip = opt.get("clip_value")
  if clip is None:
    return tx
  if not clip > 0:
    raise ValueError(f"config.optimizer.clip_value ({clip}) must be positive (None: no clipping)")
  return optax.chain(optax.clip(clip), tx)


def make_optimizer(config):
  """The optimizer of config.optimizer; parameters whose "/"-joined path matches one of the regular expressions
  config.optimizer.frozen (e.g. detectron2's FREEZE_AT 2: the stem and res2) are never updated, weight decay
  included (torch's requires_grad=False)."""
  tx = _trained(config)
  frozen = tuple(config.optimizer.get("frozen", ()))
  if not frozen:
    return tx

  def labels(params):
    paths = {path: "/".join(map(str, path)) for path in traverse_util.flatten_dict(params)}
    unused = [p for p in frozen if not any(re.match(p, name) for name in paths.values())]
    if unused:
      raise ValueError(f"config.optimizer.frozen: {unused} match no parameter; e.g. {sorted(paths.values())[:4]}")
    return traverse_util.unflatten_dict(
        {path: "frozen" if any(re.match(p, name) for p in frozen) else "trained" for path, name in paths.items()})

  return optax.multi_transform({"trained": tx, "frozen": optax.set_to_zero()}, labels)
