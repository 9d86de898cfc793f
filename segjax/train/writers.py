"""Metric writers: metrics.jsonl (the results as data), TensorBoard events, and a progress line."""
import json
import os
import sys
import time

import numpy as np
import tensorboardX


class MetricWriter:
  """Writes `{"step": N, "split": ..., **metrics}` lines; only the primary process writes.

  On a resume from step k, lines of steps after k (written before a crash) are dropped, so the file reads as
  one uninterrupted run.
  """

  def __init__(self, workdir: str, *, primary: bool, resume_step: int = 0):
    self.primary = primary
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._summary = None
    if not primary:
      return
    os.makedirs(workdir, exist_ok=True)
    if os.path.exists(self.path):
      with open(self.path) as f:
        kept = [line for line in f if line.strip() and json.loads(line)["step"] <= resume_step]
      with open(self.path, "w") as f:
        f.writelines(kept)
    self._summary = tensorboardX.SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, split: str, metrics: dict):
    metrics = {k: float(np.asarray(v)) for k, v in metrics.items()}
    if not self.primary:
      return
    with open(self.path, "a") as f:
      f.write(json.dumps({"step": step, "split": split, **metrics}) + "\n")
    for name, value in metrics.items():
      self._summary.add_scalar(f"{split}/{name}", value, step)
    self._summary.flush()

  def close(self):
    if self._summary is not None:
      self._summary.close()


def format_duration(seconds: float) -> str:
  """Seconds -> "H:MM:SS" ("?" while unknown)."""
  if not np.isfinite(seconds):
    return "?"
  minutes, secs = divmod(int(round(seconds)), 60)
  return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


class Progress:
  """One console line per log step on the primary process: step, loss, steps/s and the time left (ETA)."""

  def __init__(self, total_steps: int, start_step: int, *, primary: bool, stream=None):
    self.total = total_steps
    self.stream = stream or sys.stdout
    self.primary = primary
    self._mark = (start_step, time.perf_counter())
    self.steps_per_second = float("nan")

  def update(self, step: int, loss: float):
    """Called at log steps with the latest loss; returns steps/s since the previous call."""
    last_step, last_time = self._mark
    now = time.perf_counter()
    if step > last_step:
      self.steps_per_second = (step - last_step) / (now - last_time)
    self._mark = (step, now)
    if not self.primary:
      return self.steps_per_second
    eta = format_duration((self.total - step) / self.steps_per_second)
    text = f"step {step}/{self.total}  loss {loss:.4f}  {self.steps_per_second:.2f} steps/s  ETA {eta}"
    self.stream.write(text + "\n")
    self.stream.flush()
    return self.steps_per_second

