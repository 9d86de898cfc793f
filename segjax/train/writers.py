"""Metric writers: metrics.jsonl (the results as data), TensorBoard events, and a progress line."""
import json
import os
import sys
import time

import numpy as np
import tensorboardX
from absl import logging
from tensorboardX import record_writer

from segjax import paths


class _EventFiles:
  """tensorboardX's event-file factory for a URL logdir: files opened through epath, as every workdir file, in
  place of tensorboardX's own gs:// writer (which needs google-cloud-storage and re-uploads on each flush)."""

  @staticmethod
  def directory_check(path):
    paths.resolve(path).mkdir(parents=True, exist_ok=True)

  @staticmethod
  def open(path):
    return _Unsynced(paths.resolve(path).open("wb"))


class _Unsynced:
  """A file without `fileno`: tensorboardX's flush then skips os.fsync, which a remote file does not have."""

  def __init__(self, file):
    self._file = file

  def write(self, data):
    self._file.write(data)

  def flush(self):
    self._file.flush()

  def close(self):
    self._file.close()


def summary_writer(logdir):
  """tensorboardX.SummaryWriter at `logdir`, a local path or a URL (whose scheme then writes through epath)."""
  logdir = paths.resolve(logdir)
  if paths.is_url(logdir):
    record_writer.register_writer_factory(str(logdir).split("://")[0], _EventFiles)
  return tensorboardX.SummaryWriter(str(logdir))


class MetricWriter:
  """Writes `{"step": N, "split": ..., **metrics}` lines; only the primary process writes.

  On a resume from step k, lines of steps after k (written before a crash) are dropped, so the file reads as
  one uninterrupted run; with resume_step None (an evaluation of a saved step) every line is kept.
  """

  def __init__(self, workdir, *, primary: bool, resume_step: int | None = 0):
    self.primary = primary
    workdir = paths.resolve(workdir)
    self.path = workdir / "metrics.jsonl"
    self._summary = None
    if not primary:
      return
    workdir.mkdir(parents=True, exist_ok=True)
    self._lines = []
    if self.path.exists():
      self._lines = [line + "\n" for line in self.path.read_text().splitlines()
                     if line.strip() and (resume_step is None or json.loads(line)["step"] <= resume_step)]
      self._rewrite()
    self._summary = summary_writer(workdir / "tensorboard")

  def write(self, step: int, split: str, metrics: dict):
    metrics = {k: float(np.asarray(v)) for k, v in metrics.items()}
    if not self.primary:
      return
    # The whole file is written again: object stores (gs://) have no append. A run writes a few thousand lines.
    self._lines.append(json.dumps({"step": step, "split": split, **metrics}) + "\n")
    self._rewrite()
    for name, value in metrics.items():
      self._summary.add_scalar(f"{split}/{name}", value, step)
    self._summary.flush()

  def _rewrite(self):
    """The file written whole. A local file is written under a temporary name and renamed over metrics.jsonl, so a
    process killed while writing (a preempted machine) leaves the previous file, where writing in place would leave
    it truncated and the restart would find no lines to keep; an object store's (gs://) upload replaces the object
    whole or not at all."""
    text = "".join(self._lines)
    if paths.is_url(self.path):
      self.path.write_text(text)
      return
    temporary = self.path.parent / (self.path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, self.path)

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

