"""segjax: semantic, instance and panoptic segmentation in JAX/Flax.

`segjax.load(workdir, step=None)` -> (config, variables) of a trained workdir (segjax.workdir.load).
"""


def __getattr__(name):  # segjax.load imports JAX and Orbax on first use only, not with every segjax module.
  if name == "load":
    from segjax.workdir import load  # pylint: disable=g-import-not-at-top
    return load
  raise AttributeError(f"module 'segjax' has no attribute {name!r}")
