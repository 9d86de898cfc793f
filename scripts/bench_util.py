"""Timing and memory helpers shared by the scripts/bench_*.py benchmarks."""
import time


def best_seconds(fn, repeats):
  """The shortest wall time of `repeats` calls of `fn` (already compiled: warm-up is the caller's)."""
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return min(times)


def xla_peak_mb(compiled):
  """XLA's own peak estimate of a compiled executable: arguments + outputs + temporaries, in MiB."""
  memory = compiled.memory_analysis()
  return (memory.argument_size_in_bytes + memory.output_size_in_bytes + memory.temp_size_in_bytes) / 2**20
