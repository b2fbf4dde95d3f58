"""`python -m benchmarks`: stage selection, help, the tie line, the prediction lines."""
import subprocess
import sys

import pytest

from benchmarks import cli


def test_pipeline_vs_step_in_pixels():
  lines = [{"name": "input_pipeline_train", "ours_examples_per_s": 100.0,
            "patch": [64, 64, 4]},
           {"name": "train_step_default", "ours_pixels_per_s": 40960.0, "device": "cpu"}]
  tie = cli.pipeline_vs_step(lines)
  assert tie["ours_pixels_per_s"] == 409600 and tie["ratio"] == 10.0
  assert cli.pipeline_vs_step(lines[:1]) is None


def test_every_stage_by_default_a_subset_on_request(monkeypatch, capsys):
  ran = []
  monkeypatch.setattr(cli, "run_stage", lambda module: ran.append(module) or [])
  assert cli.main([]) == 0
  assert ran == ["benchmarks.composite", "benchmarks.data", "benchmarks.train",
                 "benchmarks.predict", "benchmarks.stac"]
  ran.clear()
  assert cli.main(["predict", "prep"]) == 0
  assert ran == ["benchmarks.predict", "benchmarks.composite"]
  with pytest.raises(SystemExit) as e:
    cli.main(["prep", "trian"])
  assert e.value.code == 2
  assert "unknown stage(s) trian; choose from prep, data, train, predict, stac" in \
      capsys.readouterr().err


def test_a_failed_stage_or_a_differing_result_is_exit_1(monkeypatch):
  monkeypatch.setattr(cli, "run_stage", lambda m: [{"name": "gap_fill", "identical": False}])
  assert cli.main(["prep"]) == 1
  monkeypatch.setattr(cli, "run_stage", lambda m: [{"name": f"{m} failed", "returncode": 1}])
  assert cli.main(["data"]) == 1


def test_python_dash_m_benchmarks_help():
  res = subprocess.run([sys.executable, "-m", "benchmarks", "--help"], capture_output=True,
                       text=True, check=True)
  assert res.stdout.startswith("usage: python -m benchmarks [-h] [STAGE ...]")
  assert "python -m benchmarks prep" in res.stdout


def test_run_stage_echoes_the_json_lines_and_reports_a_failure(tmp_path, monkeypatch, capsys):
  (tmp_path / "fake_stage.py").write_text(
      'print("compiling...")\nprint(\'{"name": "m", "ours_s": 1.5}\')\nraise SystemExit(3)\n')
  monkeypatch.setenv("PYTHONPATH", str(tmp_path))
  lines = cli.run_stage("fake_stage")
  assert lines == [{"name": "m", "ours_s": 1.5},
                   {"name": "fake_stage failed", "returncode": 3}]
  assert capsys.readouterr().out.splitlines() == [
      '{"name": "m", "ours_s": 1.5}', '{"name": "fake_stage failed", "returncode": 3}']


def test_predict_bench_lines_on_a_small_zone():
  """Every line of the prediction benchmark, on a 64-px zone (shape, not speed)."""
  from benchmarks import predict
  lines = list(predict.measures(size=64, months=2, repeats=1, tile=32, overlap=8,
                                batch=1, other=(64, 8, 2)))
  names = [l["name"] for l in lines]
  assert names == ["predict_compile", "predict_zone", "predict_zone_tile64",
                   "predict_zone_host_floor", "write_outputs"]
  zone = lines[1]
  assert zone["model_pixels"] == 9 * 32 * 32                # 3 x 3 tiles of 32 (overlap 8)
  # ours_s is rounded to 0.01 s in the line, km2_per_s is computed before rounding.
  assert zone["km2_per_s"] == pytest.approx(64 * 64 * 1e-4 / zone["ours_s"], rel=0.05)
  for l in lines:                                 # times rounded to 0.01 s may be 0 here
    assert all(v >= 0 for k, v in l.items() if k.endswith("_s") and v is not None), l
  assert lines[2]["reference_model_pixels"] == 64 * 64   # one tile: the batch shrinks to 1
