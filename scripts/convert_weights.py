"""Converts a torchvision state dict file to a segjax orbax checkpoint plus its config.

  python -m scripts.convert_weights --name resnet50 --input resnet50.pth --output DIR

writes DIR/variables/ (orbax StandardCheckpointer: {"params", "batch_stats"}) and DIR/config.json
(the backbone config, `ml_collections.ConfigDict.to_json`). Names: `segjax.weights.torchvision.CONVERTERS`.
Needs torch (to read the .pth file; loaded with weights_only=True).
"""
import argparse
import os
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp

from segjax.weights import torchvision as tv_weights


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--name", required=True, help=f"one of {sorted(tv_weights.CONVERTERS)}")
  parser.add_argument("--input", required=True, help="torch state dict file (torch.save(model.state_dict()))")
  parser.add_argument("--output", required=True, help="directory to write variables/ and config.json into")
  args = parser.parse_args(argv)
  if args.name not in tv_weights.CONVERTERS:
    parser.error(f"--name {args.name!r} is unknown; known: {sorted(tv_weights.CONVERTERS)}")
  output = os.path.abspath(args.output)
  if os.path.exists(os.path.join(output, "variables")):
    parser.error(f"--output {output} already holds a variables/ checkpoint")

  import torch  # only the CLI reads .pth files

  state_dict = torch.load(args.input, map_location="cpu", weights_only=True)
  if not isinstance(state_dict, dict):
    parser.error(f"--input {args.input} holds a {type(state_dict).__name__}, not a state dict")
  state_dict = {k: v.detach().float().numpy() for k, v in state_dict.items()}
  config, variables = tv_weights.convert(args.name, state_dict)

  os.makedirs(output, exist_ok=True)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.join(output, "variables"), variables)
  checkpointer.wait_until_finished()
  with open(os.path.join(output, "config.json"), "w") as f:
    f.write(config.to_json(indent=2) + "\n")
  count = sum(np.size(v) for v in jax.tree.leaves(variables.get("params", {})))
  print(f"{args.name}: {count:,} parameters -> {output}/variables, {output}/config.json")


if __name__ == "__main__":
  sys.exit(main())
