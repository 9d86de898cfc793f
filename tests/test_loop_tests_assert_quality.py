"""Every test that trains a model through the loop asserts more than a range: a metric or loss against a threshold
that is not 0 or 1, or a numerical comparison with another run (np.testing.assert_*). `0 <= mIoU <= 1` and a finite
loss can only fail on a crash. The loop's own mechanics (resume, recompiles, refusals, the console, evaluate-only
runs, cloud workdirs) are tested in test_train_loop.py, test_train_multiprocess.py, test_train_fsdp.py,
test_train_evaluate.py and test_train_workdir_url.py, not checked here.

WIRING maps the loop runs of a few steps that check the loop's wiring for a model (its metrics reported, its losses
logged) to the test of the same file that asserts the model's quality outside the loop; that test must assert a
quality. A check that a metric is reported (`{"mask_AP"} <= set(metrics)`) is not a quality.

RANGE_ONLY lists the loop-run tests that still assert ranges only; each needs a quality threshold the tiny model
reliably reaches (above chance by a stated margin, checked over 3 seeds). The test fails on a new range-only test
and on a listed one that has been given a threshold (then remove it from the list).
"""
import ast
import glob
import os

from train_util import REPO

LOOP_CALLS = {"train_and_evaluate", "train_through_loop", "run_cli"}
QUALITY_NAMES = ("mIoU", "pixel_acc", "mean_acc", "fwIoU", "PQ", "SQ", "RQ", "AP", "loss")
LOOP_MECHANICS = ("test_train_loop.py", "test_train_multiprocess.py", "test_train_fsdp.py", "test_train_evaluate.py",
                  "test_train_workdir_url.py")
RANGE_ONLY = set()
WIRING = {
    "test_models_embedding.py::test_runs_through_the_training_loop": "test_trains_without_recompiling_and_lowers_the_loss",
    "test_models_metric_learning.py::test_runs_through_the_training_loop": "test_tiny_model_beats_the_pair_blind_similarity",
    "test_models_ucn.py::test_runs_through_the_training_loop_on_held_out_shapes":
        "test_tiny_model_beats_the_best_constant_embedding",
    "test_models_sds.py::test_trains_and_evaluates_through_the_loop": "test_fits_a_fixed_batch_beyond_the_blind_predictors",
}


def _call_name(node):
  return node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")


def _is_bound(node):
  """A constant 0, 1 or -1: the ends of a range, not a threshold."""
  try:
    value = ast.literal_eval(node)
  except ValueError:
    return False
  return isinstance(value, (int, float)) and value in (0, 1, -1)


def _is_collection(node):
  """A set, list, tuple or dict display, or a set()/frozenset() call: `{"mask_AP"} <= set(metrics)` checks that a
  metric is reported, not its value."""
  if isinstance(node, (ast.Set, ast.List, ast.Tuple, ast.Dict, ast.SetComp, ast.ListComp, ast.DictComp)):
    return True
  return isinstance(node, ast.Call) and _call_name(node) in ("set", "frozenset", "dict", "list", "tuple", "sorted")


def _asserts_quality(node, names=QUALITY_NAMES) -> bool:
  """A numerical comparison (np.testing.assert_*), or an ordering between values none of which is a range end or a
  collection, that mentions one of `names` (any ordering where `names` is empty)."""
  for sub in ast.walk(node):
    if isinstance(sub, ast.Call) and ast.unparse(sub.func).startswith("np.testing.assert"):
      return True
    if isinstance(sub, ast.Compare) and all(isinstance(op, (ast.Lt, ast.LtE, ast.Gt, ast.GtE)) for op in sub.ops):
      sides = [sub.left, *sub.comparators]
      text = ast.unparse(sub)
      if ((not names or any(name in text for name in names)) and not any(_is_bound(s) for s in sides)
          and not any(_is_collection(s) for s in sides)):
        return True
  return False


def _loop_runs():
  """{"file::test": asserts quality} for each test that runs the loop itself or through a fixture of its file."""
  runs = {}
  for path in sorted(glob.glob(os.path.join(REPO, "tests", "test_*.py"))):
    if os.path.basename(path) in LOOP_MECHANICS:
      continue
    with open(path) as f:
      functions = {n.name: n for n in ast.parse(f.read()).body if isinstance(n, ast.FunctionDef)}
    for name, function in functions.items():
      if not {_call_name(c) for c in ast.walk(function) if isinstance(c, ast.Call)} & LOOP_CALLS:
        continue
      tests = [function] if name.startswith("test") else []
      tests += [f for f in functions.values() if f.name.startswith("test") and name in {a.arg for a in f.args.args}]
      for test in tests:
        key = f"{os.path.basename(path)}::{test.name}"
        runs[key] = runs.get(key, False) or _asserts_quality(test) or _asserts_quality(function)
  return runs


def test_loop_run_tests_assert_a_quality():
  runs = _loop_runs()
  assert len(runs) >= 12, sorted(runs)
  range_only = {name for name, quality in runs.items() if not quality} - set(WIRING)
  assert not range_only - RANGE_ONLY, f"loop-run tests asserting ranges only: {sorted(range_only - RANGE_ONLY)}"
  assert not RANGE_ONLY - range_only, f"now assert a quality, remove from RANGE_ONLY: {sorted(RANGE_ONLY - range_only)}"


def test_wiring_runs_have_a_quality_test_beside_them():
  runs = _loop_runs()
  for run, quality_test in WIRING.items():
    assert run in runs and not runs[run], f"{run}: not a range-only loop run any more, remove it from WIRING"
    path = os.path.join(REPO, "tests", run.split("::")[0])
    with open(path) as f:
      functions = {n.name: n for n in ast.parse(f.read()).body if isinstance(n, ast.FunctionDef)}
    assert quality_test in functions and _asserts_quality(functions[quality_test], names=()), (run, quality_test)
