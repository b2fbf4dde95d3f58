"""The benchmark's tie line: pipeline rate over train-step rate, in pixels."""
from jaxcrop import bench


def test_pipeline_vs_step_in_pixels():
  lines = [{"name": "input_pipeline_train", "ours_examples_per_s": 100.0,
            "patch": [64, 64, 4]},
           {"name": "train_step_default", "ours_pixels_per_s": 40960.0, "device": "cpu"}]
  tie = bench.pipeline_vs_step(lines)
  assert tie["ours_pixels_per_s"] == 409600 and tie["ratio"] == 10.0
  assert bench.pipeline_vs_step(lines[:1]) is None
