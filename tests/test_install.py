"""The accelerator installs (requirements-tpu.txt, -gpu.txt) and `--platform`, checked on this CPU machine."""
import importlib.metadata
import logging
import os
import re
import subprocess
import sys

import pytest
from packaging.requirements import Requirement

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _requirements(name):
  with open(os.path.join(REPO, name)) as f:
    lines = [line.split("#")[0].strip() for line in f]
  return [line for line in lines if line]


def _pins(name):
  return {Requirement(r).name: Requirement(r) for r in _requirements(name) if not r.startswith("-r")}


@pytest.mark.parametrize("name, extra", [("requirements-tpu.txt", "tpu"), ("requirements-gpu.txt", "cuda12")])
def test_accelerator_requirements_pin_the_runtime_jax(name, extra):
  runtime = _pins("requirements.txt")
  assert "-r requirements.txt" in _requirements(name)
  jax = _pins(name)["jax"]
  assert jax.extras == {extra}
  assert str(jax.specifier) == str(runtime["jax"].specifier) == str(runtime["jaxlib"].specifier), (
      f"{name} pins {jax}, requirements.txt {runtime['jax']} and {runtime['jaxlib']}")
  # The extra exists in the installed JAX's metadata and pins its jaxlib to that same version.
  version = importlib.metadata.version("jax")
  assert runtime["jax"].specifier.contains(version)
  extra_requires = [Requirement(r) for r in importlib.metadata.requires("jax")
                    if re.search(rf"extra == .{extra}.", r)]
  jaxlib = [r for r in extra_requires if r.name == "jaxlib"]
  assert jaxlib and all(r.specifier.contains(version) for r in jaxlib), extra_requires


def test_platform_check_passes_on_the_backend_it_names():
  from segjax.main import check_platform  # pylint: disable=g-import-not-at-top
  check_platform("cpu")
  check_platform(None)
  with pytest.raises(SystemExit, match="--platform=gpu, but JAX runs on cpu"):
    check_platform("gpu")


@pytest.mark.parametrize("tunables,warns", [("", True), ("glibc.malloc.hugetlb=1", False),
                                             ("glibc.malloc.hugetlb=0", False)])
def test_cpu_runs_point_to_huge_pages_unless_the_tunable_is_set(tunables, warns, monkeypatch, caplog):
  """`make demo` exports GLIBC_TUNABLES=glibc.malloc.hugetlb=1; a CPU run started without the tunable says how to
  set it, one that chose either value hears nothing."""
  from segjax.main import check_platform  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv("GLIBC_TUNABLES", tunables)
  with caplog.at_level(logging.WARNING):
    check_platform(None)
  assert ("GLIBC_TUNABLES=glibc.malloc.hugetlb=1" in caplog.text) == warns, caplog.text


def test_platform_tpu_refuses_to_start_on_cpu(tmp_path):
  workdir = tmp_path / "workdir"
  result = subprocess.run([sys.executable, "-m", "segjax.main", "--config=experiments/demo.py",
                           f"--workdir={workdir}", "--platform=tpu"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
  assert result.returncode != 0
  assert "--platform=tpu, but JAX runs on cpu" in result.stderr
  assert "requirements-tpu.txt" in result.stderr
  assert not workdir.exists(), "the run started before the platform was checked"
