"""A run whose workdir is a gs:// URL writes everything there (through etils.epath) and resumes from it.

The bucket is a local folder behind epath's gs:// backend and orbax's Cloud Storage calls (tests/fake_gcs.py): every
segjax path is the real gs:// one, only the storage below it is local.
"""
import json
import logging
import os

import pytest

import fake_gcs
from segjax.train.loop import train_and_evaluate
from train_util import tiny_config

PHASES = ({"total_steps": 3, "eval_every_steps": 3, "checkpoint_every_steps": 3},
          {"total_steps": 6, "eval_every_steps": 3, "checkpoint_every_steps": 3})


def _metrics(folder):
  with open(os.path.join(folder, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def test_gs_workdir_holds_the_run_and_resumes_like_a_local_one(tmp_path, monkeypatch, caplog):
  data_root = tmp_path / "data"
  local = tmp_path / "local"
  for phase in PHASES:  # the reference: the same two runs in a local folder
    train_and_evaluate(tiny_config(data_root, **phase), str(local))

  bucket = tmp_path / "bucket"
  fake_gcs.install(monkeypatch, bucket)
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  monkeypatch.chdir(cwd)
  with caplog.at_level(logging.INFO):
    for phase in PHASES:
      train_and_evaluate(tiny_config(data_root, **phase), "gs://runs/fcn")

  assert not os.listdir(cwd), "something was written to a local path made from the URL"
  remote = bucket / "runs" / "fcn"
  assert "Restored step 3 from gs://runs/fcn/checkpoints" in caplog.text
  assert sorted(os.listdir(remote / "checkpoints")) == ["3", "6"]
  assert json.loads((remote / "config.json").read_text())["total_steps"] == 6
  assert {p.name for p in (remote / "pictures").iterdir()} == {"eval_step000003.png", "eval_step000006.png"}
  assert [p.read_bytes()[:8] for p in (remote / "pictures").iterdir()] == [b"\x89PNG\r\n\x1a\n"] * 2
  assert any(p.stat().st_size > 0 for p in (remote / "tensorboard").iterdir())
  got, expected = _metrics(remote), _metrics(local)
  assert [(r["step"], r["split"]) for r in got] == [(r["step"], r["split"]) for r in expected]
  assert [r["step"] for r in got if r["split"] == "train"] == [1, 2, 3, 4, 5, 6]
  for g, e in zip(got, expected):  # steps 4-6 only match if the state came back from the bucket
    assert g.get("loss", g.get("mIoU")) == pytest.approx(e.get("loss", e.get("mIoU")), rel=1e-6), g
