"""TensorFlow for input processing only: no GPU (JAX owns the accelerators) and few threads.

`THREADS` inter-op threads (half the cores, at most 8, or the environment's SEGJAX_DATA_THREADS) run
examples in parallel; each op runs on one thread, so TensorFlow leaves the remaining cores to JAX.
"""
import os

from absl import logging
import tensorflow as tf

THREADS = int(os.environ.get("SEGJAX_DATA_THREADS", 0)) or max(1, min(8, (os.cpu_count() or 2) // 2))

try:
  tf.config.set_visible_devices([], "GPU")
  tf.config.threading.set_inter_op_parallelism_threads(THREADS)
  tf.config.threading.set_intra_op_parallelism_threads(1)
except RuntimeError as e:  # TensorFlow ran ops before this import: its settings stand
  logging.warning("TensorFlow was initialized before segjax.data: %s", e)
