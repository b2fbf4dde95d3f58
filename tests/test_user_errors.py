"""User mistakes on every command line: exactly one stderr line `error: …`, exit 2,
no traceback, no output written. Each CLI runs in-process through its main(argv)."""
import json
import pathlib
import re
import types

import pytest

from configs.hybrid import get_config
from jaxcrop import cv, evaluate, input_pipeline, plots, predict, train
from prep import cli as prep_cli
from cropcontracts import errors
from cropcontracts.errors import UserError
from prep.demo import zonefolders as zf
from tests import fixtures as pt
from tests.fixtures import assert_error, run

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "hybrid.py"


# --------------------------------------------------------------------------- #
# jaxcrop.train (flags + config file)

W = "{workdir}"   # replaced by a fresh path: nothing may be written there


@pytest.mark.parametrize("args, expected", [
    (["--config", "configs/nope.py", "--workdir", W],
     "--config=configs/nope.py: config file configs/nope.py not found "
     "(e.g. configs/hybrid.py:demo)"),
    ([f"--config={CONFIG}:dmeo", "--workdir", W],
     f"--config={CONFIG}:dmeo: unknown config variant(s) ['dmeo']; expected attention, "
     f"compare, demo, hierarchical, inseason, loyo, pixel, points, tiny, validcount, "
     f"years (comma-separated)"),
    ([f"--config={CONFIG}:demo", "--workdir", W, "--config.optimizer.lrr=1"],
     "--config.optimizer.lrr: no such config field (did you mean 'lr'?)"),
    ([f"--config={CONFIG}:demo", "--workdir", W, "--config.optimizr.lr=1"],
     "--config.optimizr.lr: no such config field (did you mean 'optimizer'?)"),
    ([f"--config={CONFIG}:demo", "--workdir", W, "--config.optimizer.lr=0.1",
      "--config.model.unet.widhts=(8,16)"],
     "--config.model.unet.widhts: no such config field (did you mean 'widths'?)"),
    ([f"--config={CONFIG}:demo", "--workdir", W, "--config.nosuch=1"],
     "--config.nosuch: no such config field"),
    ([f"--config={CONFIG}:demo", "--workdir", W, "--config.optimizer.lr=abc"],
     "--config.optimizer.lr=abc: could not convert string to float: 'abc'"),
    ([f"--config={CONFIG}:demo", f"--wrkdir={W}"],
     "--wrkdir: unknown flag (did you mean --workdir?)"),
    ([f"--config={CONFIG}:demo", "--workdir", W, "--config.model.unet.widths=8"],
     "--config.model.unet.widths=8: expected a tuple such as (8, 16)"),
    ([f"--config={CONFIG}:demo", "--workdir", W, "--config.train.tensorboard=maybe"],
     "--config.train.tensorboard=maybe: expected true or false, got 'maybe'"),
    ([f"--config={CONFIG}:demo", "--workdir", W, "--config.model=1"],
     "--config.model: a group of fields; set one of them, e.g. --config.model.arch=…"),
    ([f"--config={CONFIG}:demo", "--workdir"], "argument --workdir: expected one argument"),
    ([f"--config={CONFIG}:demo", "--workdir", W, "--config.seed"],
     "--config.seed: needs a value (--config.seed=VALUE)"),
    ([f"--config={CONFIG}:demo", "--workdir", W, "--config.eval.max_batches=x"],   # placeholder
     "--config.eval.max_batches=x: invalid literal for int() with base 10: 'x'"),
    ([f"--config={CONFIG}:demo", f"--workdir={W}", "extra"],
     "unexpected argument(s) extra: every option is a --flag (see --help)"),
    (["--config.optimizer.lr=0.1", f"--config={CONFIG}:demo", "--workdir", W],
     "--config.optimizer.lr comes before --config; put --config first"),
    ([f"--config={CONFIG}:demo", "--workdir", W, "--config.train.eval_every=0"],
     "--config.train.eval_every=0: must be at least 1"),
    ([f"--config={CONFIG}:demo", "--workdir", W, "--config.data.batch_size=0"],
     "--config.data.batch_size=0: must be at least 1"),
    ([f"--config={CONFIG}:demo"],
     "--config and --workdir are required (e.g. --config configs/hybrid.py:demo "
     "--workdir /tmp/w)"),
])
def test_train_flag_and_config_mistakes(args, expected, tmp_path, capsys):
  workdir = tmp_path / "w"
  rc, _, err = run(train.main, [a.replace(W, str(workdir)) for a in args], capsys)
  assert_error(rc, err, expected)
  assert not workdir.exists()


def test_train_on_a_dataset_never_built(tmp_path, capsys):
  data = tmp_path / "tfds"
  rc, _, err = run(train.main, ["--config", f"{CONFIG}:demo,tiny", "--workdir",
                                tmp_path / "w", f"--config.data.data_dir={data}"], capsys)
  assert_error(rc, err, f"{data}/cropmap/demo: no prepared cropmap dataset; build it with "
                        f"`tfds build tfds_builder/cropmap --config=demo --data_dir={data} "
                        f"--overwrite`")
  assert not (tmp_path / "w" / "config.json").exists()


def fake_dataset(monkeypatch, meta):
  """input_pipeline opening a stand-in dataset with splits test and fold0..2."""
  info = types.SimpleNamespace(splits={"test": 1, "fold0": 1, "fold1": 1, "fold2": 1})
  monkeypatch.setattr(input_pipeline, "_builder", lambda c: types.SimpleNamespace(info=info))
  monkeypatch.setattr(input_pipeline, "dataset_dir", lambda c: "/data/cropmap/demo/1.0.0")
  monkeypatch.setattr(input_pipeline, "load_meta", lambda c, builder=None: meta)


def test_train_with_an_unknown_validation_split(tmp_path, monkeypatch, capsys):
  fake_dataset(monkeypatch, pt.make_meta())
  rc, _, err = run(train.main, ["--config", f"{CONFIG}:demo,tiny", "--workdir", tmp_path / "w",
                                "--config.data.val_split=fold9"], capsys)
  assert_error(rc, err, "split 'fold9': fold9 not in /data/cropmap/demo/1.0.0 "
                        "(splits: test, fold0, fold1, fold2)")
  assert not (tmp_path / "w").exists()


def test_resume_with_another_model_is_refused_before_config_json_changes(tmp_path):
  w = tmp_path / "w"
  (w / "checkpoints" / "last" / "6").mkdir(parents=True)   # a run that saved step 6
  (w / "config.json").write_text(get_config("tiny").to_json())
  (w / "dataset_meta.json").write_text(pt.make_meta(**pt.TRAIN_META).to_json())
  before = (w / "config.json").read_text()
  config = get_config("tiny")
  config.model.unet.widths = (8, 32)
  config.model.temporal.features = 4
  with pytest.raises(UserError) as e:
    train.train_and_evaluate(config, w, data=pt.FakeData())
  assert str(e.value) == (f"{w}: holds checkpoints of another model (model.temporal.features: "
                          f"8 → 4; model.unet.widths: [8, 16] → [8, 32]); pass a new "
                          f"--workdir, or the run's own settings to resume it")
  assert (w / "config.json").read_text() == before


def test_ctrl_c_is_one_line_and_a_bug_keeps_its_traceback(capsys):
  def interrupted():
    raise KeyboardInterrupt
  assert errors.run(interrupted) == 130
  assert capsys.readouterr().err == "interrupted\n"
  with pytest.raises(ZeroDivisionError):      # not a user error: the traceback stays
    errors.run(lambda: 1 // 0)
  with pytest.raises(ValueError):             # never a user error: raise UserError instead
    errors.run(int, "x")


def test_a_value_error_inside_training_keeps_its_traceback(tmp_path, monkeypatch):
  """A shape bug inside the model is a bug: train.main lets its ValueError through."""
  def shape_bug(*args, **kwargs):
    raise ValueError("Incompatible shapes for broadcasting: (4, 16) and (4, 8)")
  monkeypatch.setattr(train, "train_and_evaluate", shape_bug)
  with pytest.raises(ValueError, match="Incompatible shapes"):
    train.main(["--config", f"{CONFIG}:demo,tiny", "--workdir", str(tmp_path / "w")])


def test_floating_point_error_is_a_bug_and_a_diverged_loss_a_user_error(capsys):
  def overflow():
    raise FloatingPointError("overflow encountered in multiply")
  with pytest.raises(FloatingPointError):
    errors.run(overflow)
  def diverged():   # what train raises where it checks the loss
    raise UserError("loss is nan at step 3; lower optimizer.lr or check the input "
                      "normalization")
  assert errors.run(diverged) == 2
  assert_error(2, capsys.readouterr().err, "loss is nan at step 3; lower optimizer.lr or "
                                           "check the input normalization")


def test_a_path_that_is_a_file_where_a_folder_is_needed(tmp_path, capsys):
  (tmp_path / "f").write_text("")
  assert errors.run(lambda: (tmp_path / "f").mkdir(exist_ok=True)) == 2
  assert_error(2, capsys.readouterr().err, f"{tmp_path}/f: File exists")


@pytest.mark.parametrize("module, flag", [(train, "--config FILE[:VARIANT]"),
                                          (evaluate, "--split SPLIT"),
                                          (cv, "--retrain, --no-retrain")])
def test_help_is_the_docstring_and_every_flag_exit_0(module, flag, capsys):
  rc, out, _ = run(module.main, ["--help"], capsys)
  assert rc == 0
  usage, options = out.split("\n\noptions:\n")
  assert usage.startswith(f"usage: {module.build_parser().prog} ")
  assert usage.endswith("\n\n" + module.__doc__.strip())
  assert flag in options


# --------------------------------------------------------------------------- #
# jaxcrop.evaluate

def _untrained_workdir(root) -> pathlib.Path:
  """config.json + dataset_meta.json, as train writes them first, but no checkpoint."""
  root.mkdir()
  (root / "config.json").write_text(get_config("demo,tiny").to_json())
  (root / "dataset_meta.json").write_text(pt.make_meta().to_json())
  return root


def test_evaluate_workdir_mistakes(tmp_path, capsys):
  rc, _, err = run(evaluate.main, ["--workdir", tmp_path / "nowhere"], capsys)
  assert_error(rc, err, f"{tmp_path}/nowhere/config.json not found: not a training workdir "
                        f"(run python -m jaxcrop.train --workdir first)")
  w = _untrained_workdir(tmp_path / "w")
  rc, _, err = run(evaluate.main, ["--workdir", w, "--no-baseline"], capsys)
  assert_error(rc, err, f"no checkpoint under {w}/checkpoints: training has not saved one "
                        f"yet (run or resume python -m jaxcrop.train --workdir {w})")
  assert not (w / "eval").exists()
  rc, _, err = run(evaluate.main, ["--workdir", w, "--which", "bets"], capsys)
  assert_error(rc, err, "argument --which: invalid choice: 'bets' (choose from 'best', 'last')")
  rc, _, err = run(evaluate.main, [], capsys)
  assert_error(rc, err, "--workdir is required (the workdir of python -m jaxcrop.train)")


def test_evaluate_unknown_split_before_any_progress_bar(tmp_path, monkeypatch, capsys):
  cfg = get_config("demo,tiny")
  trained = types.SimpleNamespace(config=cfg, meta=pt.make_meta(), step=0, variables={},
                                  model=None)
  monkeypatch.setattr(evaluate.checkpoint, "load_trained", lambda w, which: trained)
  fake_dataset(monkeypatch, trained.meta)
  rc, _, err = run(evaluate.main, ["--workdir", tmp_path, "--split", "tset", "--no-baseline"],
                   capsys)
  assert_error(rc, err, "split 'tset': tset not in /data/cropmap/demo/1.0.0 "
                        "(splits: test, fold0, fold1, fold2)")
  rc, _, err = run(evaluate.main, ["--workdir", tmp_path, "--split", "fold0+fold9[:50%]",
                                   "--no-baseline"], capsys)
  assert_error(rc, err, "split 'fold0+fold9[:50%]': fold9 not in /data/cropmap/demo/1.0.0 "
                        "(splits: test, fold0, fold1, fold2)")


def test_evaluate_on_a_dataset_of_another_layout(tmp_path, monkeypatch, capsys):
  trained = types.SimpleNamespace(config=get_config("demo,tiny"), meta=pt.make_meta(t=3),
                                  step=0, variables={}, model=None)
  monkeypatch.setattr(evaluate.checkpoint, "load_trained", lambda w, which: trained)
  rebuilt = pt.make_meta(t=4, version="v2")
  rebuilt.version, rebuilt.builder_config = "2.0.0", "demo"
  monkeypatch.setattr(input_pipeline, "load_meta", lambda c: rebuilt)
  rc, _, err = run(evaluate.main, ["--workdir", tmp_path, "--no-baseline"], capsys)
  assert_error(rc, err, f"dataset demo 2.0.0 is not the layout {tmp_path} was trained on "
                        f"(0.0.1): 3 months (2023-01..2023-03) vs 4 (2023-01..2023-04); pass the "
                        f"data_dir it was trained on "
                        f"(--data_dir) or retrain")
  assert not (tmp_path / "eval").exists()


# --------------------------------------------------------------------------- #
# jaxcrop.cv

def test_cv_mistakes(tmp_path, capsys):
  rc, _, err = run(cv.main, ["--workdir", tmp_path], capsys)
  assert_error(rc, err, "--config and --workdir are required (e.g. --config "
                        "configs/hybrid.py:demo --workdir /tmp/cv)")
  rc, _, err = run(cv.main, ["--config", f"{CONFIG}:demo,tiny", "--workdir", tmp_path / "cv",
                             "--config.cv.folds=('fold0',)"], capsys)
  assert_error(rc, err, "config.cv.folds needs at least 2 folds, got ['fold0']")
  assert not (tmp_path / "cv").exists()


# --------------------------------------------------------------------------- #
# jaxcrop.predict: every argument is checked before the model or a zone is read.

@pytest.fixture(scope="module")
def zone(tmp_path_factory):
  return zf.write_zone(tmp_path_factory.mktemp("zones") / "testz_0")


@pytest.mark.parametrize("extra, expected", [
    (["--tile", "20"], "--overlap 24 must be in [0, --tile 20)"),   # the default overlap
    (["--tile", "0"], "--tile 0 must be a positive number of pixels"),
    (["--batch", "0"], "--batch 0 must be at least 1 tile"),
])
def test_predict_arguments_fail_before_any_work(zone, extra, expected, tmp_path, capsys):
  rc, _, err = run(predict.main, ["--workdir", tmp_path / "never_read", "--zone", zone.path,
                                  "--out", tmp_path / "maps", *extra], capsys)
  assert_error(rc, err, expected)
  assert not (tmp_path / "maps").exists()


def test_predict_out_is_a_file(zone, tmp_path, capsys):
  (tmp_path / "maps").write_text("")
  rc, _, err = run(predict.main, ["--workdir", tmp_path / "never_read", "--zone", zone.path,
                                  "--out", tmp_path / "maps"], capsys)
  assert_error(rc, err, f"{tmp_path}/maps: --out is a file; pass a folder (maps go to "
                        f"OUT/<zone_id>/)")


def test_predict_zone_and_workdir_mistakes(zone, tmp_path, capsys):
  args = ["--out", tmp_path / "maps", "--workdir"]
  rc, _, err = run(predict.main, [*args, tmp_path, "--zone", tmp_path / "nozone"], capsys)
  assert_error(rc, err, f"{tmp_path}/nozone: folder of zone folders does not exist")
  raw = tmp_path / "raw"
  (raw / "scenes").mkdir(parents=True)
  rc, _, err = run(predict.main, [*args, tmp_path, "--zone", raw], capsys)
  assert_error(rc, err, f"{raw}: holds no zone folder (no */meta.json); run prep first")
  # A zone folder whose imagery stage never ran (meta.json without `imagery`).
  bare = tmp_path / "bare" / "testz_0"
  bare.mkdir(parents=True)
  meta = json.loads((zone.path / "meta.json").read_text())
  meta.pop("imagery")
  (bare / "meta.json").write_text(json.dumps(meta))
  rc, _, err = run(predict.main, [*args, tmp_path, "--zone", bare], capsys)
  assert_error(rc, err, f"zone testz_0: imagery incomplete in {bare}; run "
                        f"`python -m prep composite`")
  w = _untrained_workdir(tmp_path / "w")
  rc, _, err = run(predict.main, [*args, w, "--zone", zone.path], capsys)
  assert_error(rc, err, f"--workdir {w}: no checkpoint under {w}/checkpoints: training has "
                        f"not saved one yet (run or resume python -m jaxcrop.train "
                        f"--workdir {w})")
  (w / "dataset_meta.json").unlink()
  rc, _, err = run(predict.main, [*args, w, "--zone", zone.path], capsys)
  assert_error(rc, err, f"--workdir {w}: {w}/dataset_meta.json not found: an incomplete "
                        f"training workdir (rerun python -m jaxcrop.train --workdir on it)")
  assert not (tmp_path / "maps").exists()


# --------------------------------------------------------------------------- #
# jaxcrop.plots

def test_plots_metrics_mistakes(tmp_path, capsys):
  out = tmp_path / "f1.png"
  rc, _, err = run(plots.main, ["f1", "--metrics", tmp_path / "m.json", "--out", out], capsys)
  assert_error(rc, err, f"{tmp_path}/m.json: not found; run `python -m jaxcrop.evaluate` first")
  (tmp_path / "m.json").write_text("pixel,model\n")
  rc, _, err = run(plots.main, ["f1", "--metrics", tmp_path / "m.json", "--out", out], capsys)
  assert_error(rc, err, f"{tmp_path}/m.json: not a metrics JSON file (Expecting value: line 1 "
                        f"column 1 (char 0)); pass W/eval/metrics.json of "
                        f"`python -m jaxcrop.evaluate`")
  assert not out.exists()


def test_plots_out_mistakes_fail_before_any_work(tmp_path, capsys):
  metrics = tmp_path / "never_read.json"
  rc, _, err = run(plots.main, ["f1", "--metrics", metrics, "--out", tmp_path], capsys)
  assert_error(rc, err, f"{tmp_path}: --out is a folder; pass the figure's file, e.g. "
                        f"{tmp_path}/f1.png")
  rc, _, err = run(plots.main, ["f1", "--metrics", metrics, "--out", tmp_path / "f1.pgn"],
                   capsys)
  assert_error(rc, err, f"{tmp_path}/f1.pgn: unknown figure format .pgn; end --out with "
                        f".png, .pdf or .svg")
  rc, _, err = run(plots.main, ["gif", "--zone", tmp_path, "--out", tmp_path / "m.png"], capsys)
  assert_error(rc, err, f"{tmp_path}/m.png: unknown figure format .png; end --out with .gif")
  (tmp_path / "file").write_text("")
  rc, _, err = run(plots.main, ["all", "--zones", tmp_path, "--out", tmp_path / "file"], capsys)
  assert_error(rc, err, f"{tmp_path}/file: --out is a file; `all` writes its figures into a "
                        f"folder")


def test_plots_refuses_the_map_of_another_zone(zone, tmp_path, capsys):
  import rasterio
  from rasterio.transform import Affine
  pred = tmp_path / "maps" / "other_0"
  pred.mkdir(parents=True)
  shifted = Affine.translation(10_000, 0) @ zone.zone.transform   # same size, 10 km east
  with rasterio.open(pred / "classes.tif", "w", driver="GTiff", height=zf.H, width=zf.W,
                     count=1, dtype="uint8", crs=zone.zone.crs, transform=shifted) as dst:
    dst.write(zone.read_labels()[None])
  out = tmp_path / "p.png"
  rc, _, err = run(plots.main, ["prediction", "--zone", zone.path, "--pred", pred, "--out", out],
                   capsys)
  assert_error(rc, err, f"{pred}/classes.tif: map is not on zone testz_0's grid (another "
                        f"zone's prediction?); pass --pred OUT/testz_0")
  assert not out.exists()


@pytest.mark.parametrize("figure", ["prediction", "errors", "confusion", "f1", "distribution",
                                    "gif"])
def test_plots_every_figure_has_a_description_and_described_options(figure, capsys):
  rc, out, _ = run(plots.main, [figure, "--help"], capsys)
  assert rc == 0
  usage, description, options = out.split("\n\n", 2)
  assert usage.startswith(f"usage: python -m jaxcrop.plots {figure}")
  assert description.strip().endswith(".")
  assert re.search(r"--out OUT\s+output (PNG|GIF)", options)


# --------------------------------------------------------------------------- #
# python -m prep

def test_prep_zones_table_without_rows(tmp_path, capsys):
  table = tmp_path / "zones.csv"
  table.write_text("zone_id,region\n")
  for argv in (["zones", "--zones-csv", table],
               ["composite", "--scenes", tmp_path, "--zones-csv", table, "--all", "--out",
                tmp_path / "out"]):
    rc, _, err = run(prep_cli.main, ["--quiet", *argv], capsys)
    assert_error(rc, err, f"{table}: zones table has no zone row (expected a CSV with columns "
                          f"zone_id, region, town, index, epsg, x0, y0, width, height, res, …)")
  assert not (tmp_path / "out").exists()
