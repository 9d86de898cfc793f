"""One process of tests/test_eval_multiprocess.py: the COCO AP and PQ of fixed predictions over the eval split of
the tiny synthetic set, this process's rows only; prints the metrics on process 0.

  python tests/multiprocess_eval.py DATA_ROOT WORKDIR NUM_PROCESSES PROCESS_ID PORT
"""
import json
import os
import sys

try:  # as conftest.py: torchvision (imported by the test modules reused here) before TensorFlow, else it segfaults
  import torchvision.ops  # noqa: F401  pylint: disable=unused-import
except ImportError:
  pass
import jax  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from segjax.data import compact  # noqa: E402  pylint: disable=g-import-not-at-top
from segjax.data import pipeline  # noqa: E402  pylint: disable=g-import-not-at-top
from segjax.evaluation.panoptic_evaluator import PanopticEvaluator  # noqa: E402  pylint: disable=g-import-not-at-top
from test_train_panoptic import _predictions  # noqa: E402  pylint: disable=g-import-not-at-top
from train_util import tiny_config  # noqa: E402  pylint: disable=g-import-not-at-top


def detections(batch):
  """Ground-truth instances as detections, every third dropped, scores fixed by image id and slot: AP < 1."""
  slots = np.arange(batch["classes"].shape[1])
  scores = ((batch["image_id"][:, None] * 7 + slots) % 10 / 10 + 0.05).astype(np.float32)
  valid = batch["instance_valid"] & ~batch["is_crowd"] & (slots % 3 != 2)
  return {"boxes": batch["boxes"], "scores": scores, "labels": batch["classes"], "masks": batch["masks"],
          "valid": valid}


def evaluate(data_root, workdir, num_processes=1, process_id=0):
  """The metrics of this process's share (all of them on process 0, {} elsewhere)."""
  config = tiny_config(data_root)
  info = pipeline.dataset_info(config)
  evaluator = PanopticEvaluator(info, workdir)
  for local_batch in pipeline.make_eval_iterator(config, process_index=process_id, process_count=num_processes):
    panoptic, _ = _predictions(info, local_batch, corrupt=True)
    evaluator.update((), {**panoptic, **detections(compact.expand(local_batch))}, local_batch)
  return evaluator.result()


def main(data_root, workdir, num_processes, process_id, port):
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(f"127.0.0.1:{port}", num_processes, process_id)
  metrics = evaluate(data_root, workdir, num_processes, process_id)
  if process_id == 0:
    print("METRICS " + json.dumps(metrics))


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
