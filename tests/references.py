"""The parity references of the tests (torch, torchvision, pydensecrf2, panopticapi, cityscapesscripts), imported where installed.

Each test that needs one carries `@requires_torch`, `@requires_densecrf`, `@requires_panopticapi`,
`@requires_cityscapesscripts` or `@requires_opencv` (selective search), so the other tests of its file run
without it. `make test` installs them all (and stops when one cannot be installed) and sets
SEGJAX_REQUIRE_REFERENCES=1, under which a missing reference fails its tests instead of skipping them.
"""
import importlib
import importlib.util
import os

import pytest


def optional(name: str):
  """The module `name`, or None where it is not installed."""
  try:
    return importlib.import_module(name)
  except ImportError:
    return None


torch = optional("torch")
torchvision = optional("torchvision")
densecrf = optional("pydensecrf.densecrf")
panopticapi = optional("panopticapi.evaluation")
cityscapes_eval = optional("cityscapesscripts.evaluation.evalInstanceLevelSemanticLabeling")
_has_cv2 = importlib.util.find_spec("cv2") is not None  # imported by the tests that use it only

_REQUIRED = os.environ.get("SEGJAX_REQUIRE_REFERENCES", "") not in ("", "0")
requires_torch = pytest.mark.skipif(not _REQUIRED and (torch is None or torchvision is None),
                                    reason="torch and torchvision are not installed (requirements-test.txt)")
requires_densecrf = pytest.mark.skipif(not _REQUIRED and densecrf is None,
                                       reason="pydensecrf2 is not installed (make test builds it)")
requires_panopticapi = pytest.mark.skipif(not _REQUIRED and panopticapi is None,
                                          reason="panopticapi is not installed (make test installs it)")
requires_cityscapesscripts = pytest.mark.skipif(
    not _REQUIRED and cityscapes_eval is None,
    reason="cityscapesscripts is not installed (make test installs it)")
requires_opencv = pytest.mark.skipif(
    not _REQUIRED and not _has_cv2,
    reason="opencv-contrib-python-headless is not installed (requirements-test.txt)")
