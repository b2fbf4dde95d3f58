"""Workdir paths: local ones become absolute, bucket URLs stay URLs (TPU runs)."""
import os

from jaxcrop import checkpoint


def test_workdir_path_local_and_bucket(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  local = checkpoint.workdir_path("runs/r1")
  assert os.fspath(local) == os.path.join(str(tmp_path), "runs", "r1")
  gcs = checkpoint.workdir_path("gs://bucket/runs/r1")
  assert os.fspath(gcs) == "gs://bucket/runs/r1"
  assert os.fspath(gcs / "checkpoints" / "last") == "gs://bucket/runs/r1/checkpoints/last"
