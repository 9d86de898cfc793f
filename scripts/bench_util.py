"""Timing and memory helpers shared by the scripts/bench_*.py benchmarks."""
import time

import jax


def best_seconds(fn, repeats):
  """The shortest wall time of `repeats` calls of `fn` (already compiled: warm-up is the caller's)."""
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return min(times)


def timed(fn):
  """(fn(), its wall seconds, its CPU seconds over all of the process's threads). On a shared machine the CPU
  seconds are the steadier figure: other processes lengthen the wall time, not the work done."""
  wall, cpu = time.perf_counter(), time.process_time()
  result = fn()
  return result, time.perf_counter() - wall, time.process_time() - cpu


def compiled_cold_and_warm(compile_fn):
  """compile_fn() (trace, lower and compile a program) timed twice: cold, then warm, after jax.clear_caches(), where
  JAX's persistent compilation cache (which the caller enabled, segjax.compilation_cache) holds the program, as a
  resumed or evaluate-only run of segjax.main finds it. Returns (compiled, (cold wall, cold CPU seconds), (warm wall,
  warm CPU seconds))."""
  compiled, *cold = timed(compile_fn)
  jax.clear_caches()
  _, *warm = timed(compile_fn)
  return compiled, tuple(cold), tuple(warm)


def xla_memory_mb(compiled):
  """XLA's buffer sizes of a compiled executable in MiB: its arguments, outputs, the outputs written into donated
  arguments' buffers (aliased), temporaries (one allocation, buffers whose lives do not overlap sharing it), and
  their sum less the aliased outputs: the most the call holds at once."""
  memory = compiled.memory_analysis()
  sizes = {"arguments": memory.argument_size_in_bytes, "outputs": memory.output_size_in_bytes,
           "aliased": memory.alias_size_in_bytes, "temporaries": memory.temp_size_in_bytes}
  sizes["peak"] = sizes["arguments"] + sizes["outputs"] - sizes["aliased"] + sizes["temporaries"]
  return {k: v / 2**20 for k, v in sizes.items()}


def xla_peak_mb(compiled):
  """The most a compiled executable holds at once (`xla_memory_mb`'s peak), in MiB."""
  return xla_memory_mb(compiled)["peak"]
