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


class OneLineBuildNotice:
  """Mixin for TFDS builders: one line when a data set is built (once), instead of TFDS's two unconditional prints
  of sizes it does not know for a local folder."""

  def _log_download_bytes(self):
    print(f"data: building {self.name}/{self.builder_config.name} in {self.data_dir} (once)", flush=True)

  def _log_download_done(self):
    pass
