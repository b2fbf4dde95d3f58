"""Labelled points end to end, on the small demo: `prep demo --points` → `prep points`
→ `tfds build --config=points` → `jaxcrop.cv --config configs/hybrid.py:pixel,points`,
the model printed beside the per-pixel baseline (issue 23). Measured 2026-12-06 on the
shared 2-core machine: 4.8 s (its call, the small demo made) at a low load, 21 s under a load
of 10-15."""
import json
import os
import pathlib

import numpy as np
import pyproj
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from jaxcrop.input_pipeline import import_tf  # noqa: E402

import_tf()
import tensorflow_datasets as tfds  # noqa: E402

from cropcontracts import pointfolder, zonefolder  # noqa: E402
from jaxcrop import cv  # noqa: E402
from prep import cli as prep_cli  # noqa: E402
from tfds_builder.cropmap import cropmap_dataset_builder as cb  # noqa: E402
from tests.fixtures import run  # noqa: E402

CONFIG = pathlib.Path(__file__).resolve().parents[1] / "configs" / "hybrid.py"
N = 40


def _zone_pixel(zf, lon, lat):
  """(row, col) of (lon, lat) in the zone, or None outside it."""
  z = zf.zone
  x, y = pyproj.Transformer.from_crs(4326, z.epsg, always_xy=True).transform(lon, lat)
  r, c = int((z.y0 - y) // z.res), int((x - z.x0) // z.res)
  return (r, c) if 0 <= r < z.height and 0 <= c < z.width else None


def test_demo_points_prep_build_and_cv_beside_the_baseline(small_demo, tmp_path, capsys,
                                                           monkeypatch):
  from prep import demo
  # `prep demo --points`: the region is the session's small demo (made once).
  monkeypatch.setattr(demo, "make_demo", lambda out, **kw: small_demo / "zones")
  rc, out, err = run(prep_cli.main, ["-q", "demo", "--out", tmp_path / "d", "--small",
                                     "--points", N], capsys)
  table = tmp_path / "d" / "raw" / "points.csv"
  assert rc == 0 and f"point table:       {table} ({N} points" in out, err
  rc, out, err = run(prep_cli.main, ["points", "--table", table, "--year", 2023,
                                     "--out", tmp_path / "pts"], capsys)
  assert rc == 0, err
  pf = pointfolder.open_points(tmp_path / "pts")
  assert len(pf.label) == N and pf.meta["source"]["label"] == "code_cultu"
  # The same masking, median and gap filling as the zones: a point inside a zone
  # has that zone folder's composite at its pixel, exactly.
  inside = 0
  for zf in zonefolder.find_zones(small_demo / "zones"):
    image = zf.read_image()
    for i, row in enumerate(pf.table):
      at = _zone_pixel(zf, float(row["lon"]), float(row["lat"]))
      if at is not None:
        inside += 1
        np.testing.assert_array_equal(image[:, at[0], at[1]], pf.image[i])
  assert inside >= 5

  builder = cb.Builder(config="points", data_dir=str(tmp_path / "tfds"))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(tmp_path / "pts")))
  assert sum(builder.info.splits[s].num_examples for s in builder.info.splits) == N

  rc, out, err = run(cv.main, [
      f"--config={CONFIG}:tiny,pixel,points", "--workdir", tmp_path / "W", "--no-retrain",
      f"--config.data.data_dir={tmp_path / 'tfds'}", "--config.train.num_steps=2",
      "--config.train.eval_every=2", "--config.train.checkpoint_every=2",
      "--config.cv.folds=('fold0','fold1')", "--config.eval.baseline.max_iter=2",
      "--config.data.eval_batch_size=32"], capsys)
  assert rc == 0, err
  assert "Model vs the per-pixel baseline" in out and "| macro-F1 |" in out
  results = json.loads((tmp_path / "W" / "cv" / "results.json").read_text())
  scores = results["best"]["eval"]
  for who in ("model", "baseline"):
    for m in ("overall_accuracy", "macro_f1"):
      s = scores[f"tier3/pixel/{who}/{m}"]
      assert len(s["per_fold"]) == 2 and None not in s["per_fold"]
      assert s["mean"] == pytest.approx(np.mean(s["per_fold"]))
    assert any(k.startswith(f"tier3/pixel/{who}/f1/") for k in scores)
