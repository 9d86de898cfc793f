"""Every test that trains a model through the loop asserts more than a range: a metric or loss against a threshold
that is not 0 or 1, or a numerical comparison with another run (np.testing.assert_*). `0 <= mIoU <= 1` and a finite
loss can only fail on a crash. The loop's own mechanics (resume, recompiles, refusals, the console, evaluate-only
runs, cloud workdirs) are tested in test_train_loop.py, test_train_multiprocess.py, test_train_fsdp.py,
test_train_evaluate.py and test_train_workdir_url.py, not checked here.

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


def _call_name(node):
  return node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")


def _is_bound(node):
  """A constant 0, 1 or -1: the ends of a range, not a threshold."""
  try:
    value = ast.literal_eval(node)
  except ValueError:
    return False
  return isinstance(value, (int, float)) and value in (0, 1, -1)


def _asserts_quality(node) -> bool:
  for sub in ast.walk(node):
    if isinstance(sub, ast.Call) and ast.unparse(sub.func).startswith("np.testing.assert"):
      return True
    if isinstance(sub, ast.Compare) and all(isinstance(op, (ast.Lt, ast.LtE, ast.Gt, ast.GtE)) for op in sub.ops):
      sides = [sub.left, *sub.comparators]
      text = ast.unparse(sub)
      if any(name in text for name in QUALITY_NAMES) and not any(_is_bound(s) for s in sides):
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
  range_only = {name for name, quality in runs.items() if not quality}
  assert not range_only - RANGE_ONLY, f"loop-run tests asserting ranges only: {sorted(range_only - RANGE_ONLY)}"
  assert not RANGE_ONLY - range_only, f"now assert a quality, remove from RANGE_ONLY: {sorted(RANGE_ONLY - range_only)}"
