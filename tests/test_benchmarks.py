"""`python -m benchmarks`: stage selection, help, the tie line, the prediction lines, the
accelerator run (`accel`), and train/predict/accel where only the JAX stack is installed."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

from benchmarks import accel, cli
from tests.fixtures import assert_error, run

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_pipeline_vs_step_in_pixels():
  lines = [{"name": "input_pipeline_train", "ours_examples_per_s": 100.0,
            "patch": [64, 64, 4]},
           {"name": "train_step_default", "ours_pixels_per_s": 40960.0, "device": "cpu"}]
  tie = cli.pipeline_vs_step(lines)
  assert tie["ours_pixels_per_s"] == 409600 and tie["ratio"] == 10.0
  assert cli.pipeline_vs_step(lines[:1]) is None


def test_every_stage_by_default_a_subset_on_request(monkeypatch, capsys):
  ran = []
  monkeypatch.setattr(cli, "run_stage", lambda module, args=(): ran.append(module) or [])
  assert cli.main([]) == 0
  assert ran == ["benchmarks.composite", "benchmarks.data", "benchmarks.train",
                 "benchmarks.predict", "benchmarks.stac"]
  ran.clear()
  assert cli.main(["predict", "prep"]) == 0
  assert ran == ["benchmarks.predict", "benchmarks.composite"]
  rc, _, err = run(cli.main, ["prep", "trian"], capsys)
  assert_error(rc, err, "unknown stage(s) trian; choose from prep, data, train, predict, stac, "
                        "accel")


def test_a_failed_stage_or_a_differing_result_is_exit_1(monkeypatch):
  monkeypatch.setattr(cli, "run_stage", lambda m, a=(): [{"name": "gap_fill", "identical": False}])
  assert cli.main(["prep"]) == 1
  monkeypatch.setattr(cli, "run_stage", lambda m, a=(): [{"name": f"{m} failed", "returncode": 1}])
  assert cli.main(["data"]) == 1


def test_a_stage_is_a_process_its_json_lines_echoed_its_pipe_closed(tmp_path, capsys):
  """run_stage: the child's JSON lines come back and are echoed; a failed child is one line
  with its exit status; the pipe from the child is closed (it was not: a ResourceWarning
  that the parent printed after each stage)."""
  import gc
  import warnings
  line = tmp_path / "line.json"
  line.write_text('{"name": "x", "v": 1}')
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    lines = cli.run_stage("json.tool", ("--compact", str(line)))
    failed = cli.run_stage("json.tool", (str(tmp_path / "missing.json"),))
    gc.collect()
  assert lines == [{"name": "x", "v": 1}]
  assert failed[-1]["name"] == "json.tool failed" and failed[-1]["returncode"] != 0
  assert capsys.readouterr().out.splitlines()[0] == '{"name":"x","v":1}'
  assert not [w for w in caught if issubclass(w.category, ResourceWarning)], caught


def test_python_dash_m_benchmarks_help():
  res = subprocess.run([sys.executable, "-m", "benchmarks", "--help"], capture_output=True,
                       text=True, check=True)
  assert res.stdout.startswith("usage: python -m benchmarks [-h] [--dry-run]")
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


def test_tiny_goes_to_the_stages_that_take_it(monkeypatch, capsys):
  ran = []
  monkeypatch.setattr(cli, "run_stage", lambda module, args=(): ran.append((module, args)) or [])
  assert cli.main(["accel", "train", "--tiny"]) == 0
  assert ran == [("benchmarks.accel", ["--tiny"]), ("benchmarks.train", ["--tiny"])]
  ran.clear()
  assert cli.main(["accel"]) == 0 and ran == [("benchmarks.accel", ())]
  ran.clear()
  for argv in (["--tiny"], ["train", "prep", "--tiny"]):
    rc, _, err = run(cli.main, argv, capsys)
    assert_error(rc, err, "--tiny applies to the stages train, predict, accel: name them")
  assert ran == []


@pytest.mark.parametrize("stage, argv, expected", [
    (None, ["--tinny"], "--tinny: unknown flag (did you mean --tiny?)"),
    (None, ["--dry-run", "--zones-csv"], "argument --zones-csv: expected one argument"),
    ("accel", ["--budget-s", "x"], "argument --budget-s: invalid float value: 'x'"),
    ("stac", ["--smal"], "--smal: unknown flag (did you mean --small?)"),
    ("predict", ["--size", "x"], "argument --size: invalid int value: 'x'"),
    ("country", [], "the following arguments are required: --dry-run"),
    ("composite", ["--repeats"], "argument --repeats: expected one argument"),
    ("train", ["extra"], "unexpected argument(s) extra: every option is a --flag (see --help)"),
])
def test_cli_argument_mistake_is_one_line_in_every_stage(stage, argv, expected, monkeypatch,
                                                          capsys):
  import importlib
  monkeypatch.setattr(cli, "run_stage", lambda *a: pytest.fail("a stage ran"))
  module = importlib.import_module(f"benchmarks.{stage}") if stage else cli
  rc, out, err = run(module.main, argv, capsys)
  assert_error(rc, err, expected)
  assert out == ""


@pytest.mark.parametrize("stage", ["accel", "stac", "predict", "country", "composite", "train"])
def test_cli_stage_help_exits_0(stage, capsys):
  import importlib
  rc, out, err = run(importlib.import_module(f"benchmarks.{stage}").main, ["--help"], capsys)
  assert rc == 0 and err == ""
  assert out.startswith(f"usage: python -m benchmarks{' ' if stage == 'accel' else '.'}{stage} ")


def test_load_is_read_at_the_start_of_each_line(monkeypatch):
  """`stamped` reads the load before each line is computed; `loaded` above the core count."""
  import benchmarks
  loads = iter([1.5, 2.5, 9.0])
  now = {}
  monkeypatch.setattr(os, "getloadavg", lambda: (now.setdefault("v", next(loads)),) * 3)
  monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})

  def measures():                  # each measure changes the load the next one starts at
    for name in ("a", "b"):
      now.pop("v")
      yield {"name": name}
  assert list(benchmarks.stamped(measures())) == [
      {"name": "a", "load_avg": 1.5, "cpus": 2, "loaded": False},
      {"name": "b", "load_avg": 2.5, "cpus": 2, "loaded": True}]


def test_cpu_peak_by_cores_clock_and_widest_fma():
  from benchmarks.train import cpu_peak_flops
  info = "processor\t: 0\ncpu MHz\t\t: 2100.000\nflags\t\t: fpu sse2 avx2 fma{}\n"
  peak, basis = cpu_peak_flops(2, info.format(" avx512f avx512bw"))
  assert peak == 2 * 2.1e9 * 64 == 268.8e9
  assert basis == "2 cores x 2.10 GHz x 64 f32 FLOP/cycle (AVX-512, 2 FMA units)"
  assert cpu_peak_flops(4, info.format(""))[0] == 4 * 2.1e9 * 32
  assert cpu_peak_flops(1, info.replace("avx2 fma", "").format(""))[0] == 2.1e9 * 8
  assert cpu_peak_flops(2, "flags\t: avx512f\n") is None        # no clock: no MFU


def test_write_outputs_line_writes_the_cogs():
  """The CPU line of the prediction benchmark (rasterio here): the maps of a 64-px zone."""
  from benchmarks import predict
  line = predict.write_line(predict.Bench(64, 2, "tiny"), 32, 8, 1, 1)
  assert line["name"] == "write_outputs" and line["ours_s"] >= 0 and line["size"] == 64
  assert line["num_classes"] == 24                 # nomenclature v3: 23 crops, background


# Not on a lent accelerator machine (/work/.library/device/KINDS.md lists its packages).
BLOCKED = ("tensorflow", "tensorflow_datasets", "rasterio", "affine", "geopandas", "shapely",
           "pyproj", "pyogrio", "pandas", "scipy", "sklearn")
SITECUSTOMIZE = f"""import sys
class _Block:
  def find_spec(self, name, path=None, target=None):
    if name.partition(".")[0] in {BLOCKED!r}:
      raise ImportError(f"{{name}} is blocked: not on the accelerator machine")
sys.meta_path.insert(0, _Block())
"""


# `python -m benchmarks.STAGE --tiny` for the stages of `python -m benchmarks train predict
# accel --tiny`, one after the other in one process: the command gives each its own
# (`cli.run_stage`, tested above), which would only add process starts here; no stage
# imports what the three together do not.
STAGES_IN_ONE = """
import runpy, sys
try:
  import affine
  print("affine imported", file=sys.stderr)
except ImportError as e:
  print(e, file=sys.stderr)
for stage in ("train", "predict", "accel"):
  sys.argv = [f"benchmarks.{stage}", "--tiny"]
  try:
    runpy.run_module(f"benchmarks.{stage}", run_name="__main__", alter_sys=True)
  except SystemExit as e:
    if e.code:
      raise
"""


def test_train_predict_accel_need_only_the_jax_stack(tmp_path):
  """The stages of `python -m benchmarks train predict accel --tiny` where TensorFlow,
  rasterio (and affine), geopandas (shapely, pyproj, pyogrio), pandas, scipy and
  scikit-learn cannot be imported (a `sys.meta_path` finder in a sitecustomize on
  PYTHONPATH), as on a lent accelerator machine: they succeed, and their lines are the
  expected ones (behaviour, not speed)."""
  (tmp_path / "sitecustomize.py").write_text(SITECUSTOMIZE)
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(REPO)]),
             JAX_PLATFORMS="cpu")
  res = subprocess.run([sys.executable, "-c", STAGES_IN_ONE], env=env, cwd=tmp_path,
                       capture_output=True, text=True)
  assert res.stderr.startswith("affine is blocked"), res.stderr   # the finder works there
  assert res.returncode == 0 and "Traceback" not in res.stderr, res.stdout + res.stderr
  lines = {}
  for raw in res.stdout.splitlines():
    line = json.loads(raw)
    lines.setdefault(line["name"], []).append(line)
  assert list(lines) == [
      "train_step_tiny", "predict_compile", "predict_zone", "predict_zone_tile64",
      "predict_zone_encoder_chunks", "predict_zone_host_floor", "write_outputs", "accel_device", "accel_train_step",
      "accel_predict_zone", "accel_torch", "accel_largest_batch", "accel_done"]
  (train,) = lines["train_step_tiny"]
  assert (train["batch"], train["patch"], train["dtype"]) == (2, 16, "float32")
  assert train["ours_pixels_per_s"] == pytest.approx(2 * 16 * 16 * train["ours_steps_per_s"])
  assert "rasterio not installed" in lines["write_outputs"][0]["skipped"]
  (zone,) = lines["predict_zone"]
  assert zone["model_pixels"] == 9 * 32 * 32                # 3 x 3 tiles of 32 (overlap 8)
  assert zone["km2_per_s"] == pytest.approx(64 * 64 * 1e-4 / zone["ours_s"], rel=0.2)
  assert lines["predict_zone_tile64"][0]["reference_model_pixels"] == 64 * 64   # batch 1
  assert train["gflop_per_s"] == pytest.approx(train["train_step_gflops"]
                                               * train["ours_steps_per_s"])
  assert train["mfu"] == pytest.approx(train["gflop_per_s"] * 1e9 / train["peak_flops"])
  assert "f32 FLOP/cycle" in train["mfu_against"]
  assert train["share_of_matmul"] == pytest.approx(train["gflop_per_s"]
                                                   / train["matmul_gflop_per_s"])
  parts = train["parts"]                       # no torch here: ours only, part by part
  assert list(parts) == ["temporal_encoder", "unet", "rest"]
  assert parts["temporal_encoder"]["ours_ms"] > 0 and parts["unet"]["ours_ms"] > 0
  assert sum(p["ours_ms"] for p in parts.values()) == pytest.approx(
      1e3 / train["ours_steps_per_s"])
  assert "reference_ms" not in parts["unet"]
  for l in [l for v in lines.values() for l in v]:   # times rounded to 0.01 s may be 0
    assert all(v >= 0 for k, v in l.items() if k.endswith("_s") and isinstance(v, float)), l
    assert l["loaded"] == (l["load_avg"] > l["cpus"]) and l["cpus"] >= 1, l   # every line
  _check_accel_lines(lines)


def _check_accel_lines(lines):
  assert lines["accel_device"][0]["backend"] == "cpu"
  steps = lines["accel_train_step"]
  assert [l["dtype"] for l in steps] == ["float32", "bfloat16"]
  for l in steps:
    assert (l["batch"], l["patch"], l["months"]) == (2, 16, 12)
    assert l["pixels_per_s"] == pytest.approx(2 * 16 * 16 * l["steps_per_s"], rel=1e-3)
    assert l["train_step_gflops"] > 0 and l["compile_s"] > 0
    assert l["mfu"] is None and l["mfu_against"] == "no peak known for 'cpu': MFU null"
  assert [(l["dtype"], l["skipped"]) for l in lines["accel_torch"]] == [
      ("float32", "JAX runs on cpu, not a GPU: no CUDA ratio"),
      ("bfloat16", "JAX runs on cpu, not a GPU: no CUDA ratio")]
  (pz,) = lines["accel_predict_zone"]
  assert (pz["size"], pz["tile"], pz["overlap"], pz["model_pixels"]) == (64, 32, 8, 9 * 32 * 32)
  (big,) = lines["accel_largest_batch"]
  assert (big["largest"], big["first_failed"], big["stopped_by"]) == (4, None, "max batch")
  assert sorted(big["compile_s"]) == ["2", "4"]
  assert lines["accel_done"][0]["budget_s"] == 420.0


def test_largest_batch_doubles_until_out_of_memory_max_or_time():
  tried = []

  def fits(b):
    tried.append(b)
    return b < 48
  assert accel.largest_batch(fits, 3, 1000, lambda: False) == dict(
      largest=24, first_failed=48, stopped_by="out of memory")
  assert tried == [3, 6, 12, 24, 48]
  assert accel.largest_batch(lambda b: True, 3, 20, lambda: False) == dict(
      largest=12, first_failed=None, stopped_by="max batch")
  assert accel.largest_batch(lambda b: False, 3, 20, lambda: False) == dict(
      largest=None, first_failed=3, stopped_by="out of memory")
  ticks = iter([False, False, True])
  assert accel.largest_batch(lambda b: True, 3, 1000, lambda: next(ticks)) == dict(
      largest=6, first_failed=None, stopped_by="time")


def test_out_of_memory_stops_the_search_any_other_error_is_raised(monkeypatch):
  from benchmarks import train as bench_train

  def fake_step(config, batch, side):
    if batch >= 8:
      raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate "
                         "2147483648 bytes.")
    return (lambda: None), 1e9, 0.5
  monkeypatch.setattr(bench_train, "jax_step", fake_step)
  clock = accel.Clock(600)
  line = accel.batch_line(dict(accel.TINY, max_batch=64), clock, 10, compiled_s=1.25)
  assert (line["largest"], line["first_failed"], line["stopped_by"]) == (4, 8, "out of memory")
  assert line["compile_s"] == {2: 1.25, 4: 0.5}                 # 2: the train line's
  monkeypatch.setattr(bench_train, "jax_step", lambda c, b, s: 1 / 0)
  with pytest.raises(ZeroDivisionError):
    accel.batch_line(accel.TINY, clock, 10, compiled_s=1.0)
  assert accel.is_oom(RuntimeError("CUDA_ERROR_OUT_OF_MEMORY: out of memory"))
  assert not accel.is_oom(ValueError("Incompatible shapes for broadcasting"))
  assert accel._first_line(RuntimeError("\nInductor failed\n  long trace")) == (
      "RuntimeError: Inductor failed")
