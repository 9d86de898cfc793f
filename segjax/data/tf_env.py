"""TensorFlow for input pipelines only: it must not claim a GPU, JAX owns the accelerators."""
import tensorflow as tf

try:
  tf.config.set_visible_devices([], "GPU")
except RuntimeError:  # devices were already initialized elsewhere; their placement stands
  pass
