"""Which implementation of an op a program runs: the XLA:CPU kernels on CPU, plain lax on TPU and GPU.

A few ops have two implementations of the same function. The plain one (lax.conv_general_dilated, one gather,
the mask head on every slot) is what XLA compiles well for TPU and GPU, where nothing else has been measured. The
CPU one was shaped by XLA:CPU measurements (scripts/bench_conv.py, bench_roi_align.py, bench_models.py):
convolutions as dots with custom VJPs and optimization barriers (segjax.ops.conv), a gather chunked in a loop
(segjax.ops.gather), Mask R-CNN's mask head (and the mask branches of models derived from it) in a loop over
chunks of slots (a cond skipping those past the last valid slot), with im2col convolutions
(segjax.models.mask_rcnn). Barriers block fusion and the loop holds convolutions in control flow, which
accelerators do not need.

`select` picks by the platform the program is lowered for (lax.platform_dependent), so a program lowered for TPU
from a CPU host (`jax.jit(f).trace(...).lower(lowering_platforms=("tpu",))`) holds only the plain one.
`kernels("xla" | "cpu")` (config.kernels) forces one everywhere, for benchmarks and for the tests that compare them.

A program jitted for known devices (segjax.main's train and eval steps, the Predictor) is lowered for their platform,
so `for_devices` resolves "auto" to that platform's implementation before tracing: the implementation
platform_dependent's cond would keep for that platform, traced alone, and under grad not linearized and transposed
as a cond branch beside the other one (scripts/bench_models.py prints the compile time this spares).
"""
import contextlib

import jax
from jax import lax

KERNELS = ("auto", "xla", "cpu")
# The name scope of the CPU implementations: their operations carry it in a lowered program's locations
# (`.as_text(debug_info=True)`), which is how the tests see that a TPU or GPU program holds none of them.
CPU_SCOPE = "cpu_kernels"
_kernels = "auto"


def check_kernels(mode: str) -> str:
  if mode not in KERNELS:
    raise ValueError(f"config.kernels must be one of {KERNELS}, got {mode!r}")
  return mode


@contextlib.contextmanager
def kernels(mode: str):
  """Within the block, `select` traces `mode`'s implementation: "auto" (by lowering platform), "xla" or "cpu".
  The choice is made when a function is traced: jit a fresh function inside the block."""
  global _kernels
  previous, _kernels = _kernels, check_kernels(mode)
  try:
    yield
  finally:
    _kernels = previous


def for_devices(mode: str, devices) -> str:
  """`mode` (config.kernels), with "auto" resolved by the platform of `devices` (the devices a program is jitted
  for): "cpu" on CPU, "xla" on every other platform; "auto" where they span several platforms."""
  platforms = {device.platform for device in devices}
  if check_kernels(mode) != "auto" or len(platforms) != 1:
    return mode
  return "cpu" if platforms == {"cpu"} else "xla"


def select(*operands, cpu, xla):
  """cpu(*operands) in programs lowered for CPU, xla(*operands) for every other platform (or as `kernels` forces).
  Both must return the same shapes and dtypes, and the same values up to rounding."""
  def cpu_scoped(*operands):
    with jax.named_scope(CPU_SCOPE):
      return cpu(*operands)

  if _kernels == "cpu":
    return cpu_scoped(*operands)
  if _kernels == "xla":
    return xla(*operands)
  return lax.platform_dependent(*operands, cpu=cpu_scoped, default=xla)
