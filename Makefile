# Two commands: `make demo` and `make test`; each sets up .venv on its own. On a TPU VM or GPU node,
# `make venv-tpu` / `make venv-gpu` set it up with the accelerator's jaxlib (requirements-tpu.txt / -gpu.txt).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-slow venv-tpu venv-gpu

$(VENV)/.runtime: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	touch $@

# References for parity tests: panopticapi-lite is installed without its pinned deps (it works with
# numpy 2); cityscapesscripts without its `typing` backport (which shadows the standard library's module);
# pydensecrf2 builds against the pinned Cython without build isolation (it needs a C++ compiler).
# A reference that does not install stops here: its parity tests must run, not skip.
$(VENV)/.test: $(VENV)/.runtime requirements-test.txt
	$(PY) -m pip install -q -r requirements-test.txt
	$(PY) -m pip install -q --no-deps panopticapi-lite
	$(PY) -m pip install -q --no-deps cityscapesscripts==2.3.0
	$(PY) -m pip install -q --no-build-isolation pydensecrf2 || { echo "error: pydensecrf2 (the reference of \
	the DenseCRF tests) did not build; install a C++ compiler (g++) and Python headers, then make test again" >&2; \
	exit 1; }
	touch $@

venv-tpu venv-gpu: venv-%: $(VENV)/.runtime requirements-%.txt
	$(PY) -m pip install -q -r requirements-$*.txt

# XLA:CPU allocates each step's buffers afresh; huge pages turn the page faults of touching them (a fifth of a CPU
# training step, scripts/bench_allocator.py) into few. The tests, bound by compilation, do not gain from them.
demo: export GLIBC_TUNABLES ?= glibc.malloc.hugetlb=1
demo: $(VENV)/.runtime
	$(PY) -m segjax.main --config=experiments/demo.py --workdir=workdirs/demo

# SEGJAX_REQUIRE_REFERENCES: a test whose reference is missing fails instead of skipping (tests/references.py).
test: $(VENV)/.test
	SEGJAX_REQUIRE_REFERENCES=1 $(PY) -m pytest -q -n 2 --durations=15

test-slow: $(VENV)/.test
	SEGJAX_REQUIRE_REFERENCES=1 $(PY) -m pytest -q -m slow
