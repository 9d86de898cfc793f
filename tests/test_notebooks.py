"""The notebooks run top to bottom (their code cells executed in order in one namespace, from notebooks/)."""
import json
import math
import os

import pytest

from train_util import REPO


def run_notebook(name, env):
  """Executes the code cells of notebooks/NAME; returns the namespace."""
  with open(os.path.join(REPO, "notebooks", name)) as f:
    cells = [c for c in json.load(f)["cells"] if c["cell_type"] == "code"]
  namespace, cwd, saved = {"__name__": "__main__"}, os.getcwd(), dict(os.environ)
  try:
    os.chdir(os.path.join(REPO, "notebooks"))
    os.environ.update(env)
    for i, cell in enumerate(cells):
      exec(compile("".join(cell["source"]), f"{name}[{i}]", "exec"), namespace)  # pylint: disable=exec-used
  finally:
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(saved)
  return namespace


@pytest.mark.slow
def test_roialign_ablation(tmp_path):
  """Three short Mask R-CNN trainings (about 30 min on 2 CPU cores): every pooler evaluated,
  table and picture written, and RoIAlign ahead of RoIPool at AP75, where the paper's gap is largest (measured:
  AP75 pool 0.288, warp 0.314, align 0.392)."""
  namespace = run_notebook("roialign_ablation.ipynb", {"SEGJAX_ABLATION_STEPS": "400",
                                                       "SEGJAX_ABLATION_WORKDIR": str(tmp_path)})
  results = namespace["results"]
  assert set(results) == {"pool", "warp", "align"}
  assert all(0 < results[p]["mask_AP"] <= 1 and math.isfinite(results[p]["box_AP"]) for p in results)
  assert (tmp_path / "ablation.png").stat().st_size > 0
  assert json.loads((tmp_path / "ablation.json").read_text())["align"]["mask_AP"] == results["align"]["mask_AP"]
  assert results["align"]["mask_AP75"] > results["pool"]["mask_AP75"]
