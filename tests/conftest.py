"""Test set-up: 8 forced host devices so sharding tests run on this CPU."""
import os
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
# The suite's time is mostly XLA:CPU compiling small programs, and two code-generation settings, which leave XLA's HLO
# passes (fusion, layout, algebraic rewrites) as they are, make compiles shorter and the compiled loops slower:
# - LLVM at -O0 instead of -O2 (SEGJAX_TEST_LLVM_OPT_LEVEL=2 runs the suite at users' level);
# - XLA's legacy loop emitters, which build a fusion's LLVM IR directly, instead of its MLIR fusion emitters, which
#   take each fusion through a pipeline of MLIR passes first (SEGJAX_TEST_FUSION_EMITTERS=1 runs the suite with them).
# scripts/bench_models.py's compile figures are made with XLA's defaults, as users compile; train_util.xla_flags drops
# these two for the subprocesses that train long enough to want fast loops (the notebooks' study-length runs).
os.environ["XLA_FLAGS"] += f" --xla_backend_optimization_level={os.environ.get('SEGJAX_TEST_LLVM_OPT_LEVEL', '0')}"
if os.environ.get("SEGJAX_TEST_FUSION_EMITTERS", "0") != "1":
  os.environ["XLA_FLAGS"] += " --xla_cpu_use_fusion_emitters=false"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# Runs that compile the same program (the CLI subprocesses of the resume tests) share compiled executables.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "segjax-test-jax-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

# The parity references load before TensorFlow: importing torchvision.ops (torch -> triton) after TensorFlow
# 2.21 segfaults in triton's extension, so a worker that collected a TF-importing module first would crash
# in its first torchvision test. Loading them first is harmless where they are missing.
try:
  import torchvision.ops  # noqa: F401  pylint: disable=unused-import,g-import-not-at-top
except ImportError:
  pass
