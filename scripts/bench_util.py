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


def timed(fn):
  """(fn(), its wall seconds, its CPU seconds over all of the process's threads). On a shared machine the CPU
  seconds are the steadier figure: other processes lengthen the wall time, not the work done."""
  wall, cpu = time.perf_counter(), time.process_time()
  result = fn()
  return result, time.perf_counter() - wall, time.process_time() - cpu


def xla_memory_mb(compiled):
  """XLA's estimate of a compiled executable's memory in MiB: its arguments, outputs and temporaries."""
  memory = compiled.memory_analysis()
  return {"arguments": memory.argument_size_in_bytes / 2**20, "outputs": memory.output_size_in_bytes / 2**20,
          "temporaries": memory.temp_size_in_bytes / 2**20}


def xla_peak_mb(compiled):
  """XLA's own peak estimate of a compiled executable: arguments + outputs + temporaries, in MiB."""
  return sum(xla_memory_mb(compiled).values())
