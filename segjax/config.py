"""The keys every experiment config has; experiments/*.py start from `base_config()` and override."""
import ml_collections


def base_config() -> ml_collections.ConfigDict:
  from segjax.data.config import default_dataset_config  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.batch_size = 8  # Global, over all processes and devices.
  config.total_steps = 1000
  config.log_every_steps = 50
  config.eval_every_steps = 500
  config.checkpoint_every_steps = 500
  config.keep_checkpoints = 2
  config.num_pictures = 4
  config.init_from = ""  # A scripts/convert_weights.py output directory: the whole model's or its backbone's weights.
  config.fsdp = False  # Shard parameters and optimizer state over the data axis (ZeRO-3) instead of replicating.
  # "auto": the XLA:CPU convolution, gather and mask-head paths in programs for CPU, plain lax on TPU and GPU;
  # "xla" or "cpu" forces one everywhere, for benchmarks (segjax.ops.platform).
  config.kernels = "auto"

  config.model = ml_collections.ConfigDict()
  config.model.name = "fcn"
  config.model.depth = 18
  config.model.width = 64
  config.model.output_stride = 32
  config.model.skips = ("C4", "C3")
  config.model.dtype = "float32"

  config.dataset = default_dataset_config()

  # Evaluation (during training and with --mode=evaluate) on dataset.eval_split. Semantic models may average
  # multi-scale and left-right flipped inputs (DeepLab v3 Sec. 4.3: scales (0.5, 0.75, 1.0, 1.25, 1.5, 1.75), flip).
  config.eval = ml_collections.ConfigDict()
  config.eval.scales = (1.0,)
  config.eval.flip = False
  # Instance and panoptic models: Boundary AP (segjax/evaluation/boundary.py) beside mask AP; it computes the
  # boundary band of every mask and result, which a COCO-scale run may turn off.
  config.eval.boundary_ap = True

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = "sgd"
  config.optimizer.learning_rate = 0.01
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 1e-4
  config.optimizer.schedule = "poly"
  config.optimizer.power = 0.9
  config.optimizer.warmup_steps = 0
  config.optimizer.warmup_factor = 0.001
  config.optimizer.decay_steps = ()
  config.optimizer.decay_factor = 0.1
  return config


def override(config: ml_collections.ConfigDict, overrides: dict) -> ml_collections.ConfigDict:
  """Sets each dotted key "a.b.c" of `overrides` in `config` (in place, returned), as --config.a.b.c flags do; a key
  the config lacks is a KeyError naming it."""
  for key, value in overrides.items():
    *path, name = key.split(".")
    node = config
    for part in path:
      if part not in node:
        raise KeyError(f"the config has no key {key!r}")
      node = node[part]
    if name not in node:
      raise KeyError(f"the config has no key {key!r}")
    node[name] = value
  return config
