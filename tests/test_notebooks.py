"""The notebooks of notebooks/ are stored executed, with their outputs, and run top to bottom in a fresh kernel
(nbclient, as scripts/execute_notebook.py runs them): each reduced in `make test` (but SLOW_REDUCED, reduced in
`make test-slow`), and each at a length where the paper's ordering is asserted where its effect is large in
`make test-slow`."""
import importlib.util
import json
import os

import matplotlib
import nbformat
import pytest

from experiments import demo
from segjax import notebook
from train_util import REPO, majority_pixel_share, xla_flags

NOTEBOOKS = os.path.join(REPO, "notebooks")
NAMES = sorted(n for n in os.listdir(NOTEBOOKS) if n.endswith(".ipynb"))
# The reduced runs: 2 training steps per row on 16 training and 8 validation images of each synthetic set.
REDUCED_STEPS = 2
REDUCED_OVERRIDES = {"dataset.num_train": 16, "dataset.num_val": 8}
# The file each notebook writes its table to (beside its chart, the same name .png) in SEGJAX_NOTEBOOK_WORKDIR.
RESULTS = {"crf_gains.ipynb": "crf_gains", "detection_lineage.ipynb": "detection_lineage", "fcn_skips.ipynb": "fcn_skips",
           "matrix_nms.ipynb": "matrix_nms", "panoptic_fcn_vs_fpn.ipynb": "panoptic_fcn_vs_fpn",
           "pspnet_pooling.ipynb": "pspnet_pooling", "recurrent_paradigm.ipynb": "recurrent_paradigm",
           "roialign_ablation.ipynb": "ablation"}


def run_notebook(name, workdir, steps, monkeypatch):
  """Executes notebooks/NAME in a fresh kernel with SEGJAX_NOTEBOOK_STEPS=steps and its files in `workdir`."""
  spec = importlib.util.spec_from_file_location("execute_notebook", os.path.join(REPO, "scripts", "execute_notebook.py"))
  script = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(script)
  # One CPU device, as a notebook runs on a user's machine; compiled as users' programs are for the study-length runs,
  # whose training loops dominate.
  monkeypatch.setenv("XLA_FLAGS", xla_flags(1, fast_compiles=steps <= REDUCED_STEPS))
  monkeypatch.setenv("SEGJAX_NOTEBOOK_STEPS", str(steps))
  monkeypatch.setenv("SEGJAX_NOTEBOOK_WORKDIR", str(workdir))
  return script.execute(os.path.join(NOTEBOOKS, name))


def assert_executed(notebook, name):
  """Every code cell ran, in order, without an error, and the notebook shows a picture among its outputs."""
  cells = [c for c in notebook.cells if c.cell_type == "code"]
  assert [c.execution_count for c in cells] == list(range(1, len(cells) + 1)), name
  outputs = [o for c in cells for o in c.outputs]
  assert not [o for o in outputs if o.output_type == "error"], name
  assert any(o.output_type in ("display_data", "execute_result") and "image/png" in o.get("data", {})
             for o in outputs), f"{name}: no picture among the outputs"


@pytest.mark.parametrize("name", NAMES)
def test_stored_executed(name):
  assert_executed(nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4), name)


# Reduced runs in `make test-slow` only, beside their study-length runs there: Mask R-CNN's five RoI pooling rows
# and the CRF notebook's trainings and grid solvers compile the most of all (over 2 minutes each of a CI worker), and
# the recurrent paradigm's three trainings (about 4 minutes).
SLOW_REDUCED = ("crf_gains.ipynb", "roialign_ablation.ipynb", "recurrent_paradigm.ipynb")


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_REDUCED else n for n in NAMES])
def test_reduced_run(name, tmp_path, monkeypatch):
  """The notebook from a fresh kernel at REDUCED_STEPS steps per row on REDUCED_OVERRIDES (its synthetic sets written
  under a temporary home): every cell runs, and its results file and chart are written."""
  monkeypatch.setenv("MPLCONFIGDIR", matplotlib.get_configdir())  # the font cache stays where it is
  (tmp_path / "home").mkdir()
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  monkeypatch.setenv("SEGJAX_NOTEBOOK_OVERRIDES", json.dumps(REDUCED_OVERRIDES))
  workdir = tmp_path / "workdir"
  assert_executed(run_notebook(name, workdir, REDUCED_STEPS, monkeypatch), name)
  assert json.loads((workdir / f"{RESULTS[name]}.json").read_text()), name
  assert (workdir / f"{RESULTS[name]}.png").stat().st_size > 0, name


@pytest.mark.slow
def test_roialign_ablation(tmp_path, monkeypatch):
  """Five short Mask R-CNN trainings (Table 2c's rows): every row evaluated, table and picture written, and
  RoIAlign ahead of RoIPool at AP75, where the paper's gap is largest (30.3 / 31.5 against 26.4)."""
  run_notebook("roialign_ablation.ipynb", tmp_path, 400, monkeypatch)
  results = json.loads((tmp_path / "ablation.json").read_text())
  assert set(results) == {"pool max", "warp max", "warp avg", "align max", "align avg"}
  assert all(0 < results[p]["mask_AP"] <= 1 for p in results)
  assert (tmp_path / "ablation.png").stat().st_size > 0
  assert results["align avg"]["mask_AP75"] > results["pool max"]["mask_AP75"]


@pytest.mark.slow
def test_fcn_skips(tmp_path, monkeypatch):
  """FCN-32s-fixed / 32s / 16s / 8s (Table 2): FCN-8s at least as good as FCN-32s in mean IU, and the fixed trunk
  (random here: nothing is pretrained) far below the trained one."""
  run_notebook("fcn_skips.ipynb", tmp_path, 400, monkeypatch)
  results = json.loads((tmp_path / "fcn_skips.json").read_text())
  assert set(results) == {"FCN-32s-fixed", "FCN-32s", "FCN-16s", "FCN-8s"}
  assert (tmp_path / "fcn_skips.png").stat().st_size > 0
  assert results["FCN-8s"]["mIoU"] >= results["FCN-32s"]["mIoU"]
  assert results["FCN-32s-fixed"]["mIoU"] < results["FCN-32s"]["mIoU"]


@pytest.mark.slow
def test_panoptic_fcn_vs_fpn(tmp_path, monkeypatch):
  """Both demo models trained 600 steps: each reaches the PQ target of experiments/demo_panoptic_fpn.py and
  demo_panoptic_fcn.py (0.4), and each is timed through the Predictor."""
  run_notebook("panoptic_fcn_vs_fpn.ipynb", tmp_path, 600, monkeypatch)
  results = json.loads((tmp_path / "panoptic_fcn_vs_fpn.json").read_text())
  assert set(results) == {"Panoptic FPN", "Panoptic FCN"}
  assert all(results[m]["PQ"] >= 0.4 and results[m]["seconds_per_image"] > 0 for m in results)
  assert (tmp_path / "panoptic_fcn_vs_fpn.png").stat().st_size > 0


@pytest.mark.slow
def test_pspnet_pooling(tmp_path, monkeypatch):
  """PSPNet's eight ablation rows (Tables 1-2) trained 300 steps each: every row beats the pixel accuracy of the best
  image-blind predictor (the majority class everywhere); the rows' order is not asserted (the synthetic scenes hold
  little global context, and the paper's gaps are a few points)."""
  run_notebook("pspnet_pooling.ipynb", tmp_path, 300, monkeypatch)
  results = json.loads((tmp_path / "pspnet_pooling.json").read_text())
  assert len(results) == 8 and (tmp_path / "pspnet_pooling.png").stat().st_size > 0
  from segjax.data.config import default_dataset_config  # pylint: disable=g-import-not-at-top
  chance = majority_pixel_share(os.path.expanduser(default_dataset_config().root))  # the synthetic set the rows read
  assert all(r["pixel_acc"] > chance for r in results.values()), (results, chance)


@pytest.mark.slow
def test_matrix_nms(tmp_path, monkeypatch):
  """One SOLOv2 evaluated with four suppressions: after the IoU matrix they all start from, Matrix NMS's one parallel
  step is faster than mask NMS's loop over the 500 candidates (the paper: < 1 ms against 9 ms for the whole step;
  on a CPU the IoU matrix dominates the whole step, which is not compared), and every row detects something."""
  run_notebook("matrix_nms.ipynb", tmp_path, 1200, monkeypatch)
  results = json.loads((tmp_path / "matrix_nms.json").read_text())
  assert set(results) == {"Mask NMS", "Soft-NMS", "Matrix NMS (linear)", "Matrix NMS (Gaussian)"}
  assert (tmp_path / "matrix_nms.png").stat().st_size > 0
  assert all(r["mask_AP"] > 0 for r in results.values())
  assert results["Matrix NMS (Gaussian)"]["after_iou_ms"] < results["Mask NMS"]["after_iou_ms"]


@pytest.mark.slow
def test_crf_gains(tmp_path, monkeypatch):
  """DenseCRF after a 300-step DeepLab-LargeFOV raises its mIoU (the deck's claim for coarse unaries: 62.25 -> 67.64
  on VOC), CRF-as-RNN's fine-tuned unaries gain from its mean-field iterations, and every grid-CRF inference
  algorithm denoises better than the unaries alone."""
  run_notebook("crf_gains.ipynb", tmp_path, 300, monkeypatch)
  results = json.loads((tmp_path / "crf_gains.json").read_text())
  assert (tmp_path / "crf_gains.png").stat().st_size > 0
  assert results["densecrf"]["10"]["mIoU"] > results["densecrf"]["0"]["mIoU"]
  assert results["crf_rnn"]["10"]["mIoU"] > results["crf_rnn"]["0"]["mIoU"]
  denoising = results["grid_denoising"]
  assert all(r["accuracy"] > denoising["unaries alone"]["accuracy"] for k, r in denoising.items()
             if k != "unaries alone")


@pytest.mark.slow
def test_recurrent_paradigm(tmp_path, monkeypatch):
  """The three recurrent models trained 600 steps each on the same data, every row scored (AP, SBD, |DiC|, time),
  and the instance CRF, whose recurrence runs over a detector's boxes, at the demos' class-agnostic mask AP target
  (0.4); RIS and Recurrent Attention from scratch are not asserted to learn in 600 steps."""
  run_notebook("recurrent_paradigm.ipynb", tmp_path, 600, monkeypatch)
  results = json.loads((tmp_path / "recurrent_paradigm.json").read_text())
  assert set(results) == {"RIS", "Recurrent Attention", "DIN (instance CRF)"}
  assert all(r["ms_per_image"] > 0 and 0 <= r["SBD"] <= 1 for r in results.values())
  assert (tmp_path / "recurrent_paradigm.png").stat().st_size > 0
  assert (tmp_path / "recurrent_paradigm_steps.png").stat().st_size > 0
  assert results["DIN (instance CRF)"]["mask_AP_agnostic"] >= 0.4


@pytest.mark.slow
def test_detection_lineage(tmp_path, monkeypatch):
  """R-CNN, SPP-net, Fast R-CNN, Faster R-CNN and YOLO trained 1200 steps each on the same data: every row scored
  (the proposal-based three also on selective search's proposals) and timed; YOLO at its demo's target (voc_mAP
  0.5), and R-CNN, one network pass per region, slower per image than SPP-net, one pass per image (the speed-up
  SPP-net was built for: He et al. 2014, Sec. 4)."""
  run_notebook("detection_lineage.ipynb", tmp_path, 1200, monkeypatch)
  results = json.loads((tmp_path / "detection_lineage.json").read_text())
  assert set(results) == {"R-CNN", "SPP-net", "Fast R-CNN", "Faster R-CNN", "YOLO"}
  assert all(r["seconds_per_image"] > 0 for r in results.values())
  assert all("voc_mAP_selective_search" in results[n] for n in ("R-CNN", "SPP-net", "Fast R-CNN"))
  assert (tmp_path / "detection_lineage.png").stat().st_size > 0
  assert results["YOLO"]["voc_mAP"] >= 0.5
  assert results["R-CNN"]["network_s"] > results["SPP-net"]["network_s"]


def test_row_config_sets_the_length_and_the_overrides(monkeypatch):
  monkeypatch.setenv("SEGJAX_NOTEBOOK_OVERRIDES", json.dumps({"dataset.num_val": 8, "model.width": 4}))
  config = notebook.row_config(demo.get_config(), 7)
  assert (config.total_steps, config.eval_every_steps, config.checkpoint_every_steps) == (7, 7, 7)
  assert (config.num_pictures, config.dataset.num_val, config.model.width) == (0, 8, 4)
  monkeypatch.setenv("SEGJAX_NOTEBOOK_OVERRIDES", json.dumps({"dataset.num_vals": 8}))
  with pytest.raises(KeyError, match="dataset.num_vals"):
    notebook.row_config(demo.get_config(), 7)
