"""The benchmark's tie line: pipeline rate over train-step rate, in pixels."""
import pytest

from jaxcrop import bench


def test_pipeline_vs_step_in_pixels():
  lines = [{"name": "input_pipeline_train", "ours_examples_per_s": 100.0,
            "patch": [64, 64, 4]},
           {"name": "train_step_default", "ours_pixels_per_s": 40960.0, "device": "cpu"}]
  tie = bench.pipeline_vs_step(lines)
  assert tie["ours_pixels_per_s"] == 409600 and tie["ratio"] == 10.0
  assert bench.pipeline_vs_step(lines[:1]) is None


def test_predict_bench_lines_on_a_small_zone():
  """Every line of the prediction benchmark, on a 64-px zone (shape, not speed)."""
  from jaxcrop import bench_predict
  lines = list(bench_predict.measures(size=64, months=2, repeats=1, tile=32, overlap=8,
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
