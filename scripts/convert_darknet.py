"""Converts a Darknet YOLO v1 / Fast YOLO .weights file to a segjax orbax checkpoint plus its config.

  python -m scripts.convert_darknet --config=experiments/yolo_v1_voc.py --input yolov1.weights --output DIR

writes DIR/variables/ (orbax StandardCheckpointer: {"params"[, "batch_stats"]}) and DIR/config.json (config.model),
for `--config.init_from=DIR`. The file must match config.model (layers, batch_norm, width, hidden units, S, B) for
the data set's classes (`--num_classes`, 20 for VOC) and input size (config.dataset.image_size); a mismatch is an
error naming the file. Reads segjax/weights/darknet.py's layout.
"""
import argparse
import os
import runpy
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp

from segjax.weights import darknet


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", required=True, help="experiment config file whose config.model is a YOLO model")
  parser.add_argument("--input", required=True, help="Darknet .weights file")
  parser.add_argument("--output", required=True, help="directory to write variables/ and config.json into")
  parser.add_argument("--num_classes", type=int, default=20, help="C of the file's output layer")
  args = parser.parse_args(argv)
  config = runpy.run_path(args.config)["get_config"]()
  output = os.path.abspath(args.output)
  if os.path.exists(os.path.join(output, "variables")):
    parser.error(f"--output {output} already holds a variables/ checkpoint")
  variables = darknet.convert_yolo(args.input, config.model, args.num_classes, tuple(config.dataset.image_size))
  os.makedirs(output, exist_ok=True)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.join(output, "variables"), variables)
  checkpointer.wait_until_finished()
  with open(os.path.join(output, "config.json"), "w") as f:
    f.write(config.model.to_json(indent=2) + "\n")
  count = sum(np.size(v) for v in jax.tree.leaves(variables["params"]))
  print(f"{config.model.name}: {count:,} parameters -> {output}/variables, {output}/config.json")


if __name__ == "__main__":
  sys.exit(main())
