"""The documentation in the repository is complete and current: config keys, the README's model table, links."""
import glob
import importlib
import os
import re
import sys

from train_util import REPO

sys.path.insert(0, os.path.join(REPO, "scripts"))
import model_table  # noqa: E402  pylint: disable=wrong-import-position


def _keys(node, prefix=""):
  for key, value in node.items():
    if hasattr(value, "items"):
      yield from _keys(value, f"{prefix}{key}.")
    else:
      yield prefix + key


def _experiment_names():
  return sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(REPO, "experiments", "*.py"))
                if not p.endswith("__init__.py"))


def test_every_config_key_is_in_docs_configs():
  sys.path.insert(0, REPO)
  with open(os.path.join(REPO, "docs", "configs.md")) as f:
    documented = set(re.findall(r"`([\w.*]+)`", f.read()))
  prefixes = tuple(d[:-1] for d in documented if d.endswith(".*"))
  missing = {}
  for name in _experiment_names():
    config = importlib.import_module(f"experiments.{name}").get_config()
    for key in _keys(config):
      if key not in documented and not key.startswith(prefixes):
        missing.setdefault(key, name)
  assert not missing, "docs/configs.md lacks these keys (key: an experiment that has it):\n" + "\n".join(
      f"  {k}: experiments/{v}.py" for k, v in sorted(missing.items()))


def test_readme_model_table_is_current():
  with open(os.path.join(REPO, "README.md")) as f:
    readme = f.read()
  assert readme == model_table.readme_with_table(readme), "run: python scripts/model_table.py --write"


def test_every_paper_config_says_what_it_needs():
  rows = [model_table.row(p) for p in sorted(glob.glob(os.path.join(REPO, "experiments", "*.py")))]
  rows = [r for r in rows if r]
  assert len(rows) >= 15
  lacking = [r["config"] for r in rows if not r["needs"] or not r["command"] or not r["published"]]
  assert not lacking, f"these configs' docstrings lack a 'Needs' sentence (data, hardware) or a command: {lacking}"


def test_markdown_links_point_into_the_repository():
  for path in [os.path.join(REPO, "README.md"), *glob.glob(os.path.join(REPO, "docs", "*.md"))]:
    with open(path) as f:
      text = f.read()
    assert "../shared" not in text, path
    for target in re.findall(r"\]\(([^)#]+)\)", text):
      if re.match(r"\w+://", target):
        continue
      assert os.path.exists(os.path.join(os.path.dirname(path), target)), f"{path}: broken link {target}"
