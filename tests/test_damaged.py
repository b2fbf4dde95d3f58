"""Damaged and foreign inputs at every stage boundary (issue 11): one line naming the
file and the fix, exit 2, no traceback, no partial output, a good output left intact.
The catalogue of these cases is docs/errors.md."""
import csv
import json
import pathlib
import re
import shutil

import numpy as np
import pytest

from prep import cli as prep_cli
from prep import zones as Z
from cropcontracts.errors import UserError
from tests.fixtures import TINY_BUILDER, assert_error, assert_tfds_error, run


# --------------------------------------------------------------------------- #
# the zones table (prep.zones.read_zones): every mistake names the table

def _table(tmp_path, edit=None, *, delimiter=",", drop=None) -> pathlib.Path:
  """A zones table of 2 study zones; edit(row) changes the first row."""
  rows = [z.to_row() for z in Z.read_zones()[:2]]
  if edit:
    edit(rows[0])
  cols = [c for c in rows[0] if c != drop]
  path = tmp_path / "zones.csv"
  with path.open("w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=cols, delimiter=delimiter, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
  return path


COLUMNS = ("zone_id, region, town, index, epsg, x0, y0, width, height, res, center_lon, "
           "center_lat, cropland_fraction, source")


@pytest.mark.parametrize("edit, kw, expected", [
    (lambda r: r.update(width=-1000), {},
     "{t}: line 2: zone stquentin_0: width=-1000 must be positive"),
    (lambda r: r.update(res=0), {},
     "{t}: line 2: zone stquentin_0: res=0.0 must be positive"),
    (lambda r: r.update(x0="abc"), {},
     "{t}: line 2: zone 'stquentin_0': could not convert string to float: 'abc'"),
    (None, {"drop": "epsg"},
     f"{{t}}: zones table lacks column(s) epsg (expected a CSV with columns {COLUMNS})"),
    (None, {"delimiter": ";"},
     f"{{t}}: zones table is ;-separated; write it with commas (expected a CSV with columns "
     f"{COLUMNS})"),
    (lambda r: r.update(zone_id="../evil"), {},
     "{t}: line 2: zone id '../evil' is not a plain name (letters, digits, _ - . and no "
     "leading dot); it names the zone's folder"),
    (lambda r: r.update(zone_id="a/b"), {},
     "{t}: line 2: zone id 'a/b' is not a plain name (letters, digits, _ - . and no "
     "leading dot); it names the zone's folder"),
    (lambda r: r.update(zone_id=".."), {},
     "{t}: line 2: zone id '..' is not a plain name (letters, digits, _ - . and no "
     "leading dot); it names the zone's folder"),
])
def test_zones_table_mistakes_are_one_line_naming_the_table(edit, kw, expected, tmp_path,
                                                            capsys):
  table = _table(tmp_path, edit, **kw)
  out = tmp_path / "out"
  for argv in (["zones", "--zones-csv", table],
               ["composite", "--scenes", tmp_path, "--zones-csv", table, "--all",
                "--out", out]):
    rc, _, err = run(prep_cli.main, ["--quiet", *argv], capsys)
    assert_error(rc, err, expected.format(t=table))
  assert not out.exists() and not (tmp_path / "evil").exists()


def test_plain_zone_ids_are_read(tmp_path):
  table = _table(tmp_path, lambda r: r.update(zone_id="Chartres-2.b_9"))
  assert Z.read_zones(table)[0].zone_id == "Chartres-2.b_9"


# --------------------------------------------------------------------------- #
# metrics.json (jaxcrop.metrics.read_metrics, read by the plots CLI)

def _metrics_file(tmp_path, edit=None) -> pathlib.Path:
  """metrics.json as jaxcrop.evaluate writes it, for a 3-class confusion matrix."""
  from jaxcrop import metrics
  cm = [[5, 1, 0], [2, 7, 0], [0, 0, 3]]
  names = ["wheat", "maize", "rapeseed"]
  m = {"split": "test", "pixel": {"model": metrics.summarize(cm, names)},
       "confusion_matrix": {"pixel_model": cm}}
  if edit:
    edit(m)
  path = tmp_path / "metrics.json"
  path.write_text(json.dumps(m))
  return path


FIX = "pass W/eval/metrics.json of `python -m jaxcrop.evaluate` (or rerun it)"


@pytest.mark.parametrize("edit, problem", [
    (lambda m: m["pixel"]["model"]["per_class"].pop(),
     "confusion_matrix['pixel_model'] is 3 x 3 but pixel.model lists 2 classes"),
    (lambda m: m["confusion_matrix"].update(pixel_model=[[5, 1], [2, 7]]),
     "confusion_matrix['pixel_model'] is 2 x 2 but pixel.model lists 3 classes"),
    (lambda m: m["confusion_matrix"]["pixel_model"][1].__setitem__(0, 4),
     "confusion_matrix['pixel_model'] row 1 sums to 11 but class 'maize' has support 9"),
    (lambda m: m["confusion_matrix"].update(pixel_model=[[5, 1, 0], [2, 7]]),
     "confusion_matrix['pixel_model'] is not a square table of counts"),
    (lambda m: m["confusion_matrix"].update(pixel_model=[[0.5, 0], [0, 1]]),
     "confusion_matrix['pixel_model'] is not a square table of counts"),
    (lambda m: m.update(confusion_matrix=[1, 2]),
     "confusion_matrix is not an object of matrices"),
])
def test_plots_refuses_an_inconsistent_metrics_file(edit, problem, tmp_path, capsys):
  from jaxcrop import plots
  path, out = _metrics_file(tmp_path, edit), tmp_path / "cm.png"
  for figure in ("confusion", "f1"):
    rc, _, err = run(plots.main, [figure, "--metrics", path, "--out", out], capsys)
    assert_error(rc, err, f"{path}: {problem}; {FIX}")
  assert not out.exists()


def test_a_consistent_metrics_file_is_read_and_plotted(tmp_path, capsys):
  from jaxcrop import metrics, plots
  path = _metrics_file(tmp_path)
  assert metrics.read_metrics(path)["confusion_matrix"]["pixel_model"][1] == [2, 7, 0]
  rc, _, err = run(plots.main, ["confusion", "--metrics", path, "--out", tmp_path / "c.png"],
                   capsys)
  assert rc == 0 and (tmp_path / "c.png").is_file(), err
  path.write_text("[1, 2]")
  with pytest.raises(UserError, match="not a metrics file .a JSON list, not an object."):
    metrics.read_metrics(path)


# --------------------------------------------------------------------------- #
# checkpoints (jaxcrop.checkpoint.load_trained, used by evaluate and predict)

@pytest.fixture(scope="module")
def trained_workdir(tmp_path_factory):
  """A workdir as training leaves it (random weights: no compile): config.json,
  dataset_meta.json, checkpoints last/4, last/6 and best/6."""
  import jax
  import jax.numpy as jnp
  from jaxcrop import checkpoint
  from jaxcrop.models import build_model
  from tests.fixtures import TRAIN_META, make_meta, tiny_config
  w = tmp_path_factory.mktemp("trained") / "w"
  w.mkdir()
  config, meta = tiny_config(), make_meta(**TRAIN_META)
  (w / "config.json").write_text(config.to_json())
  (w / "dataset_meta.json").write_text(meta.to_json())
  model = build_model(config.model, meta.num_classes)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0),
                                              jnp.zeros((1, len(meta.months), 4, 4, 4))))
  rng = np.random.default_rng(0)   # any values: these tests restore, they never apply
  variables = {k: jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape), a.dtype),
                               shapes[k]) for k in ("params", "batch_stats")}
  last, best = checkpoint.managers(w)
  for step in (4, 6):
    checkpoint.save(last, step, variables, {"step": step})
  checkpoint.save(best, 6, variables, {"step": 6}, metrics={checkpoint.BEST_METRIC: 0.5})
  last.wait_until_finished()
  best.wait_until_finished()
  assert sorted(p.name for p in (w / "checkpoints" / "last").iterdir()) == ["4", "6"]
  assert [p.name for p in (w / "checkpoints" / "best").iterdir()] == ["6"]
  return w


def _copy(w, tmp_path) -> pathlib.Path:
  import shutil
  return pathlib.Path(shutil.copytree(w, tmp_path / "w"))


def _arrays(step_dir: pathlib.Path) -> list:
  """The array chunk files of a checkpoint's model item."""
  return sorted(p for p in (step_dir / "model").rglob("d/*") if p.is_file())


def _truncate(step_dir):
  for p in _arrays(step_dir):
    p.write_bytes(p.read_bytes()[:p.stat().st_size // 2])


def _delete(step_dir):
  for p in _arrays(step_dir):
    p.unlink()


def _flip(step_dir):
  """One bit flipped in the middle of the largest array file: Orbax and
  tensorstore restore it without a word, as another number."""
  p = max(_arrays(step_dir), key=lambda q: q.stat().st_size)
  data = bytearray(p.read_bytes())
  data[len(data) // 2] ^= 0x10
  p.write_bytes(bytes(data))


DAMAGED = "checkpoint step {s} ({k}) is damaged (array files truncated or missing)"
FLIPPED = ("checkpoint step {s} ({k}) is damaged (its model arrays differ from the SHA-256 "
           "recorded when it was saved)")


@pytest.mark.parametrize("damage, why", [(_truncate, DAMAGED), (_delete, DAMAGED),
                                         (_flip, FLIPPED)], ids=["truncated", "deleted", "flipped"])
def test_evaluate_and_predict_name_the_damaged_checkpoint_and_offer_the_other(
    damage, why, trained_workdir, tmp_path, capsys):
  from jaxcrop import evaluate, predict
  from prep.demo import zonefolders
  w = _copy(trained_workdir, tmp_path)
  best = w / "checkpoints" / "best" / "6"
  damage(best)
  expected = (f"{best}: {why.format(s=6, k='best')}; the last checkpoint, step 6, is "
              f"complete: use it (evaluate --which last, predict --checkpoint last)")
  rc, _, err = run(evaluate.main, ["--workdir", w, "--which", "best", "--no-baseline"], capsys)
  assert_error(rc, err, expected)
  zone = zonefolders.write_zone(tmp_path / "zones" / "testz_0")
  rc, _, err = run(predict.main, ["--workdir", w, "--zone", zone.path, "--out",
                                  tmp_path / "maps"], capsys)
  assert_error(rc, err, expected)
  assert not (w / "eval").exists() and not (tmp_path / "maps").exists()


def test_a_damaged_last_checkpoint_falls_back_to_an_older_step_or_says_retrain(
    trained_workdir, tmp_path, capsys):
  from jaxcrop import checkpoint, evaluate
  w = _copy(trained_workdir, tmp_path)
  last6 = w / "checkpoints" / "last" / "6"
  _delete(last6)
  _truncate(w / "checkpoints" / "best" / "6")
  rc, _, err = run(evaluate.main, ["--workdir", w, "--which", "last", "--no-baseline"], capsys)
  assert_error(rc, err, f"{last6}: {DAMAGED.format(s=6, k='last')}; step 4 of last is "
                        f"complete: remove {last6} to fall back to it")
  import shutil
  shutil.rmtree(last6)                     # the fix the message gives
  assert checkpoint.load_trained(w, "last").step == 4
  _truncate(w / "checkpoints" / "last" / "4")
  with pytest.raises(UserError) as e:
    checkpoint.load_trained(w, "last")
  last4 = w / "checkpoints" / "last" / "4"
  assert str(e.value) == (f"{last4}: {DAMAGED.format(s=4, k='last')}; no other complete "
                          f"checkpoint: retrain (python -m jaxcrop.train --workdir {w}, "
                          f"after removing {last4})")


def test_the_digest_is_of_the_arrays_and_old_checkpoints_restore_unchecked(
    trained_workdir, tmp_path):
  import jax
  import numpy as np
  from jaxcrop import checkpoint
  w = _copy(trained_workdir, tmp_path)
  good = checkpoint.load_trained(w, "last")
  d = checkpoint.model_digest(good.variables)
  assert json.loads((w / "checkpoints" / "last" / "6" / "digest" / "metadata").read_text()) \
      == {"model_sha256": d}
  moved = jax.tree.map(lambda a: np.asarray(a).copy(), good.variables)
  leaf = moved["params"][sorted(moved["params"])[0]]
  first = next(iter(jax.tree.leaves(leaf)))
  first.flat[0] = np.nextafter(first.flat[0], np.inf)       # one ulp
  assert checkpoint.model_digest(moved) != d
  # a checkpoint written before the digest existed: restored, not checked
  import shutil
  _flip(w / "checkpoints" / "last" / "6")
  shutil.rmtree(w / "checkpoints" / "last" / "6" / "digest")
  assert checkpoint.load_trained(w, "last").step == 6


def test_resuming_training_from_a_damaged_last_checkpoint_is_one_line(tiny_workdir, tmp_path,
                                                                      capsys):
  from jaxcrop import train
  from tests.fixtures import FakeData, private_copy, tiny_config
  w = private_copy(tiny_workdir[0], tmp_path)      # trained to step 6, checkpoints every 2
  last = w / "checkpoints" / "last"
  assert sorted(int(p.name) for p in last.iterdir() if p.name.isdigit()) == [4, 6]
  _flip(last / "6")
  config = tiny_config(num_steps=8)
  with pytest.raises(UserError) as e:
    train.train_and_evaluate(config, w, data=FakeData())
  assert str(e.value) == (f"{last / '6'}: {FLIPPED.format(s=6, k='last')}; remove "
                          f"{last / '6'} to resume from step 4")
  shutil.rmtree(last / "6")                   # the fix the message gives
  assert train.train_and_evaluate(config, w, data=FakeData())["step"] == 8


def test_a_checkpoint_of_another_model_config(trained_workdir, tmp_path, capsys):
  from jaxcrop import evaluate
  w = _copy(trained_workdir, tmp_path)
  config = json.loads((w / "config.json").read_text())
  for key, value in (("widths", [8, 32]), ("layers", 2)):
    edited = json.loads(json.dumps(config))
    if key == "widths":
      edited["model"]["unet"]["widths"] = value        # other shapes
    else:
      edited["model"]["temporal"]["layers"] = value    # other arrays
    (w / "config.json").write_text(json.dumps(edited))
    rc, _, err = run(evaluate.main, ["--workdir", w, "--which", "last", "--no-baseline"],
                     capsys)
    assert_error(rc, err, f"{w}/checkpoints/last/6: checkpoint step 6 holds another model "
                          f"than {w}/config.json (arrays of other shapes or names); pass the "
                          f"workdir it was trained in, or retrain")


# --------------------------------------------------------------------------- #
# TFRecord shards (jaxcrop.input_pipeline.check_shards, before training writes anything)

TINY = json.dumps(TINY_BUILDER)     # the session's tiny_dataset


@pytest.fixture(scope="module")
def zones_and_dataset(tiny_zones, tiny_dataset):
  """Tiny synthetic zone folders and their cropmap dataset (config `tiny`, 16-px
  patches), the session's (read-only): (zones root, version folder)."""
  return tiny_zones, pathlib.Path(tiny_dataset.builder.data_dir)


@pytest.fixture(scope="module")
def dataset(zones_and_dataset):
  return zones_and_dataset[1]


def _files(folder: pathlib.Path) -> dict:
  return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _broken_zones(zones, tmp_path) -> pathlib.Path:
  """A copy of the zone folders whose last zone lost labels.tif."""
  import shutil
  copy = pathlib.Path(shutil.copytree(zones, tmp_path / "zones"))
  last = sorted(p for p in copy.iterdir() if (p / "meta.json").is_file())[-1]
  (last / "labels.tif").unlink()
  return copy


def test_tfds_build_overwrite_over_a_good_dataset_checks_the_zones_first(
    zones_and_dataset, tmp_path):
  """The stock command: the good dataset was deleted before a bad zone was found."""
  import os
  import shutil
  import subprocess
  import sys
  zones, dataset = zones_and_dataset
  data_dir = tmp_path / "data"
  version = pathlib.Path(shutil.copytree(dataset, data_dir / "cropmap" / "tiny" / dataset.name))
  before = _files(version)
  broken = _broken_zones(zones, tmp_path)
  repo = pathlib.Path(__file__).resolve().parents[1]
  cmd = [str(pathlib.Path(sys.executable).parent / "tfds"), "build",
         str(repo / "tfds_builder" / "cropmap"), f"--config={TINY}",
         f"--data_dir={data_dir}", f"--manual_dir={broken}", "--overwrite"]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
             PYTHONPATH=str(repo))   # this checkout, whichever one the venv installed
  done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)
  last = sorted(p for p in broken.iterdir() if p.is_dir())[-1]
  assert_tfds_error(done.returncode, done.stderr, f"zone {last.name}: {last / 'labels.tif'} "
                                                  f"is missing; rerun prep for this zone")
  assert _files(version) == before
  assert sorted(p.name for p in version.parent.iterdir()) == [".build.lock", dataset.name]


def test_an_overwrite_that_fails_mid_build_puts_the_old_dataset_back(
    zones_and_dataset, tmp_path, monkeypatch):
  import shutil
  import tensorflow_datasets as tfds
  from tfds_builder.cropmap import cropmap_dataset_builder as cb
  from tfds_builder.cropmap import patching
  zones, dataset = zones_and_dataset
  data_dir = tmp_path / "data"
  version = pathlib.Path(shutil.copytree(dataset, data_dir / "cropmap" / "tiny" / dataset.name))
  before = _files(version)

  def damaged_read(*a, **k):
    raise UserError("zone x: s2.tif: unreadable")   # a raster damaged past open_zone's checks
  monkeypatch.setattr(patching, "zone_summary", damaged_read)
  builder = cb.Builder(config=cb.CropmapConfig(name="tiny", patch_size=16),
                       data_dir=str(data_dir))
  overwrite = tfds.download.DownloadConfig(
      manual_dir=str(zones), download_mode=tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS)
  with pytest.raises(UserError, match="s2.tif: unreadable"):
    builder.download_and_prepare(download_config=overwrite)
  assert _files(version) == before
  assert sorted(p.name for p in version.parent.iterdir()) == [".build.lock", dataset.name]
  # A run killed mid-overwrite left the old dataset aside: the next start puts it back.
  version.rename(version.parent / f".{dataset.name}.previous")
  monkeypatch.undo()
  builder = cb.Builder(config=cb.CropmapConfig(name="tiny", patch_size=16),
                       data_dir=str(data_dir))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(zones)))         # no --overwrite: the restored dataset is reused
  assert _files(version) == before
  assert sorted(p.name for p in version.parent.iterdir()) == [".build.lock", dataset.name]


def _train(data_dir, workdir, capsys):
  from jaxcrop import train
  config = pathlib.Path(__file__).resolve().parents[1] / "configs" / "hybrid.py"
  return run(train.main, [f"--config={config}:demo,tiny", "--workdir", workdir,
                          f"--config.data.data_dir={data_dir}",
                          "--config.data.builder_config=tiny"], capsys)


def _rebuild(data_dir) -> str:
  return f"tfds build tfds_builder/cropmap --config=tiny --data_dir={data_dir} --overwrite"


@pytest.mark.parametrize("damage, problem", [
    (lambda f: f.write_bytes(f.read_bytes()[:f.stat().st_size // 2]),
     "damaged or truncated TFRecord shard (not the size dataset_info.json records)"),
    (lambda f: f.write_bytes(f.read_bytes()[:-1000]),   # cut short: whole records lost
     "damaged or truncated TFRecord shard (not the size dataset_info.json records)"),
    (lambda f: f.unlink(), "TFRecord shard missing"),
])
def test_training_on_a_damaged_shard_names_it_and_writes_no_workdir(
    damage, problem, dataset, tmp_path, capsys):
  import shutil
  data_dir = tmp_path / "data"
  copy = pathlib.Path(shutil.copytree(dataset, data_dir / "cropmap" / "tiny" / dataset.name))
  shard = copy / "cropmap-fold1.tfrecord-00000-of-00001"
  damage(shard)
  rc, _, err = _train(data_dir, tmp_path / "w", capsys)
  assert_error(rc, err, f"{shard}: {problem}; rebuild with `{_rebuild(data_dir)}`")
  assert not (tmp_path / "w").exists()


def test_a_dataset_of_another_major_version_is_refused(dataset, tmp_path, capsys):
  import shutil
  from jaxcrop import input_pipeline
  from tfds_builder.cropmap import cropmap_dataset_builder as cb
  assert input_pipeline.DATASET_MAJOR == cb.Builder.VERSION.major
  data_dir = tmp_path / "data"
  major = input_pipeline.DATASET_MAJOR
  future = data_dir / "cropmap" / "tiny" / f"{major + 1}.0.0"
  shutil.copytree(dataset, future)
  rc, _, err = _train(data_dir, tmp_path / "w", capsys)
  assert_error(rc, err, f"{future}: cropmap dataset version {major + 1}.0.0, this code "
                        f"reads {major}.x.x; "
                        f"rebuild it with `{_rebuild(data_dir)}` (or use the jaxcrop version "
                        f"that built it)")
  assert not (tmp_path / "w").exists()


# --------------------------------------------------------------------------- #
# scenes (prep.scenes): a band unlike its siblings, all cloud, a renamed copy, a
# damaged band in the middle of a run of many scenes

@pytest.fixture(scope="module")
def raw(demo_raw):
  """The small demo's raw inputs (the session's, read-only: `scenes` copies them)."""
  return demo_raw


@pytest.fixture
def scenes(raw, tmp_path):
  import shutil
  return pathlib.Path(shutil.copytree(raw / "scenes", tmp_path / "scenes"))


def _composite(raw, scenes, out, capsys):
  return run(prep_cli.main, ["--quiet", "composite", "--scenes", scenes, "--zones",
                             "demo-north_0", "--zones-csv", raw / "zones.csv", "--out", out],
             capsys)


def _rewrite(band: pathlib.Path, *, crs=None, every: int = 1, as_float: bool = False):
  """Rewrites a band in place: another CRS, every n-th pixel (n x coarser), or
  float reflectance (DN / 10000)."""
  import rasterio
  from rasterio.transform import Affine
  with rasterio.open(band) as src:
    profile, data = src.profile, src.read(1)
  data = data[::every, ::every]
  if as_float:
    data = data.astype("float32") / 10000
  t = profile["transform"]
  profile.update(crs=crs or profile["crs"], height=data.shape[0], width=data.shape[1],
                 transform=Affine(t.a * every, 0, t.c, 0, t.e * every, t.f),
                 dtype=data.dtype.name, predictor=3 if as_float else 2,
                 blockxsize=128, blockysize=128)
  band.unlink()
  with rasterio.open(band, "w", **profile) as dst:
    dst.write(data, 1)


def _middle_scene(scenes, tile="31UCQ") -> pathlib.Path:
  """A COG item of one of the demo's tiles (B02.tif … beside its item)."""
  items = sorted(d for d in scenes.iterdir() if d.is_dir() and f"_T{tile}_" in d.name)
  return items[len(items) // 2]


REDO = "re-download scene {s} or remove its folder"


@pytest.mark.parametrize("kind", ["crs", "20m", "float"])
def test_a_band_unlike_its_siblings_is_one_line(kind, raw, scenes, tmp_path, capsys):
  scene = _middle_scene(scenes)
  if kind == "crs":
    band = scene / "B03.tif"
    _rewrite(band, crs="EPSG:32630")
    problem = "in EPSG:32630, its sibling B02.tif in EPSG:32631; the bands of a scene share one grid"
  elif kind == "20m":
    band = scene / "B04.tif"
    _rewrite(band, every=2)
    problem = "20 x 20 m pixels, expected the band's native 10 m (a resampled product?)"
  else:
    band = scene / "B08.tif"
    _rewrite(band, as_float=True)
    problem = ("float32 values, expected uint16 digital numbers (reflectance x 10000, as ESA "
               "and STAC deliver L2A; float reflectance would round to 0 and 1)")
  rc, _, err = _composite(raw, scenes, tmp_path / "z", capsys)
  assert_error(rc, err, f"{band}: {problem} — {REDO.format(s=scene.name)}")
  assert not (tmp_path / "z" / "demo-north_0" / "s2.tif").exists()


def test_a_year_of_all_cloud_is_an_error_not_an_all_zero_composite(raw, scenes, tmp_path,
                                                                   capsys):
  import rasterio
  for safe in scenes.glob("*.SAFE"):        # JPEG 2000 is not rewritten in place
    shutil.rmtree(safe)
  for scl in scenes.glob("*/SCL.tif"):
    with rasterio.open(scl, "r+") as dst:
      dst.write(np.full((dst.height, dst.width), 9, "uint8"), 1)   # cloud, high probability
  n = sum(1 for d in scenes.iterdir() if d.is_dir())
  rc, _, err = _composite(raw, scenes, tmp_path / "z", capsys)
  assert_error(rc, err, f"zone demo-north_0: not one valid pixel (SCL 4-7) in the {n} scenes "
                        f"of 2023 over the zone in {scenes}: all cloud, shadow, snow or "
                        f"nodata; add scenes of that year (or check their SCL band); no "
                        f"s2.tif written")
  assert not (tmp_path / "z" / "demo-north_0" / "s2.tif").exists()


def test_a_scene_folder_renamed_away_from_its_item_is_named(raw, scenes, tmp_path, capsys):
  scene = _middle_scene(scenes)
  copy = scene.rename(scene.parent / f"{scene.name} (copy)")
  rc, _, err = _composite(raw, scenes, tmp_path / "z", capsys)
  assert_error(rc, err, f"{copy / (scene.name + '.json')}: a STAC item in folder "
                        f"{copy.name!r}, whose name is not the item's ({scene.name!r}), so it "
                        f"would be skipped; rename the folder to {scene.name!r} or remove "
                        f"the copy")


def _flip_every_tile(band: pathlib.Path) -> pathlib.Path:
  """One bit of every tile's zlib header (its CMF byte) flipped: the header check
  then fails for certain. A bit flipped deeper in a deflate stream may decode into
  garbage without an error, depending on the bytes (the demo's contents)."""
  import rasterio
  with rasterio.open(band) as src:        # where each tile's deflate stream lies
    (bh, bw), = src.block_shapes
    offsets = [int(src.get_tag_item(f"BLOCK_OFFSET_{j}_{i}", "TIFF", bidx=1))
               for i in range(-(-src.height // bh)) for j in range(-(-src.width // bw))]
  data = bytearray(band.read_bytes())
  for offset in offsets:
    data[offset] ^= 0x10
  band.write_bytes(bytes(data))
  return band


def _unreadable(band: pathlib.Path) -> str:
  """The error line of a bit-flipped band, as a regular expression (GDAL's reason varies)."""
  return (re.escape(f"error: {band}: unreadable (") + r"[^\n]+" +
          re.escape(f"; the file may be truncated or corrupt — re-download scene "
                    f"{band.parent.name} or remove it"))


def test_a_bit_flipped_band_in_the_middle_of_many_scenes(raw, scenes, tmp_path, capsys):
  # a scene of tile 30UYU: its bands have two tiles (deflate streams)
  band = _flip_every_tile(_middle_scene(scenes, "30UYU") / "B02.tif")
  rc, _, err = _composite(raw, scenes, tmp_path / "z", capsys)
  assert rc == 2 and re.fullmatch(_unreadable(band) + "\n", err), err
  assert not (tmp_path / "z" / "demo-north_0").exists()


# --------------------------------------------------------------------------- #
# The same mistakes in processes of their own, as a user runs them: the tests above
# see what Python writes to sys.stderr; a process also shows what C and C++
# libraries write to its stderr (TensorFlow's start-up logs, the `Event loop is
# closed` tracebacks of a failed checkpoint restore) and what its exit prints.

def _child_errors(calls) -> tuple[list, str]:
  """Runs each (module, argv) of `calls` as `module.main(argv)` in one child
  process, in order; returns their exit statuses and the child's whole stderr."""
  import os
  import subprocess
  import sys
  repo = pathlib.Path(__file__).resolve().parents[1]
  code = ("import importlib, json, sys\n"
          "def status(module, argv):\n"
          "  try:\n"
          "    return importlib.import_module(module).main(argv)\n"
          "  except SystemExit as e:\n"
          "    return e.code\n"
          "print(json.dumps([status(m, a) for m, a in json.loads(sys.argv[1])]))")
  calls = [(m, [str(a) for a in argv]) for m, argv in calls]
  env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}   # a user's
  env.update(PYTHONPATH=str(repo), JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="")
  done = subprocess.run([sys.executable, "-c", code, json.dumps(calls)], cwd=repo, env=env,
                        capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def test_prep_mistakes_are_their_one_line_in_a_process(raw, scenes, tmp_path):
  """The zones table and the scenes: the whole stderr of `python -m prep`."""
  table = _table(tmp_path, lambda r: r.update(width=-1000))
  band = _flip_every_tile(_middle_scene(scenes, "30UYU") / "B02.tif")
  statuses, err = _child_errors([
      ("prep.cli", ["--quiet", "zones", "--zones-csv", table]),
      ("prep.cli", ["--quiet", "composite", "--scenes", scenes, "--zones", "demo-north_0",
                    "--zones-csv", raw / "zones.csv", "--out", tmp_path / "z"])])
  assert statuses == [2, 2]
  assert re.fullmatch(re.escape(f"error: {table}: line 2: zone stquentin_0: width=-1000 must "
                                f"be positive\n") + _unreadable(band) + "\n", err), err


def test_dataset_and_checkpoint_mistakes_are_their_one_line_in_a_process(
    dataset, trained_workdir, tmp_path):
  """A damaged shard (train) and a truncated checkpoint (evaluate, predict): the
  whole stderr of `python -m jaxcrop.…` (once TensorFlow's start-up logs and a
  flood of asyncio tracebacks from the checkpoint library came first)."""
  data_dir = tmp_path / "data"
  copy = pathlib.Path(shutil.copytree(dataset, data_dir / "cropmap" / "tiny" / dataset.name))
  shard = copy / "cropmap-fold1.tfrecord-00000-of-00001"
  shard.write_bytes(shard.read_bytes()[:shard.stat().st_size // 2])
  w = _copy(trained_workdir, tmp_path)
  best = w / "checkpoints" / "best" / "6"
  _truncate(best)
  from prep.demo import zonefolders
  zone = zonefolders.write_zone(tmp_path / "zones" / "testz_0")
  config = pathlib.Path(__file__).resolve().parents[1] / "configs" / "hybrid.py"
  statuses, err = _child_errors([
      ("jaxcrop.train", [f"--config={config}:demo,tiny", "--workdir", tmp_path / "w",
                         f"--config.data.data_dir={data_dir}",
                         "--config.data.builder_config=tiny"]),
      ("jaxcrop.evaluate", ["--workdir", w, "--which", "best", "--no-baseline"]),
      ("jaxcrop.predict", ["--workdir", w, "--zone", zone.path, "--out", tmp_path / "maps"])])
  assert statuses == [2, 2, 2]
  damaged = (f"error: {best}: {DAMAGED.format(s=6, k='best')}; the last checkpoint, step 6, "
             f"is complete: use it (evaluate --which last, predict --checkpoint last)\n")
  assert err == (f"error: {shard}: damaged or truncated TFRecord shard (not the size "
                 f"dataset_info.json records); rebuild with `{_rebuild(data_dir)}`\n"
                 + damaged + damaged)


def test_beam_mistakes_are_their_one_line_in_a_process(demo_raw, tmp_path):
  """`prep beam`, its user errors before the pipeline (an unknown catalogue) and in
  a DoFn (an unreachable catalogue, a scenes folder without scenes): the whole
  stderr (once Beam's import warnings, urllib3's retries and Beam's ERROR with a
  traceback came first, and the line ended in Beam's `[while running 'composite']`)."""
  import socket
  with socket.socket() as s:            # a port nobody listens on
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  (tmp_path / "empty").mkdir()
  beam = ["--quiet", "beam", "--zones-csv", demo_raw / "zones.csv", "--zones", "demo-north_0"]
  statuses, err = _child_errors([
      ("prep.cli", beam + ["--source", "stac", "--catalog", "aws", "--out", tmp_path / "a"]),
      ("prep.cli", beam + ["--source", "stac", "--catalog", f"http://127.0.0.1:{port}",
                           "--out", tmp_path / "b"]),
      ("prep.cli", beam + ["--source", "scenes", "--scenes", tmp_path / "empty",
                           "--out", tmp_path / "c"])])
  assert statuses == [2, 2, 2]
  assert re.fullmatch(re.escape(
      "error: --catalog 'aws': not a known catalogue (earth-search, planetary-computer, "
      "cdse) nor an http(s):// STAC API URL\n"
      f"error: catalogue http://127.0.0.1:{port}: unreachable, not a STAC API or refused "
      "the search of sentinel-2-l2a (APIError: HTTPConnectionPool(") + r"[^\n]*" + re.escape(
      "); check the network and --catalog, or rerun later\n"
      f"error: {tmp_path / 'empty'}: no Sentinel-2 L2A scene found; expected "
      "<item_id>/<item_id>.json STAC items with B02 B03 B04 B08 SCL .tif beside them, or "
      "*.SAFE products\n"), err), err


@pytest.mark.parametrize("raised, leaves", [
    (UserError("a user error"), UserError("a user error")),
    (FileNotFoundError(2, "No such file or directory", "/x"),
     FileNotFoundError(2, "No such file or directory", "/x")),
    (ValueError("a bug"), ValueError("a bug [while running 'composite']"))],
    ids=["UserError", "OSError", "bug"])
def test_beam_passes_on_a_dofns_user_error_as_itself_and_a_bug_as_beam_raised_it(
    raised, leaves, demo_raw, tmp_path, monkeypatch):
  """Beam re-raises what a DoFn raised as a copy, `[while running 'STEP']` appended
  (a RuntimeError for an OSError, whose type it cannot copy): a user error comes
  out as the DoFn's own, a bug as Beam's copy, its traceback through the DoFn kept."""
  import traceback
  from cropcontracts import zonetable
  from prep import beam_composites

  def composite_one(*args):
    raise raised

  monkeypatch.setattr(beam_composites, "composite_one", composite_one)
  zones = zonetable.read_zones(demo_raw / "zones.csv")[:1]
  with pytest.raises(type(leaves)) as e:
    beam_composites.run(zones, tmp_path, source="scenes", scenes=demo_raw / "scenes")
  assert e.value.args == leaves.args
  assert "in composite_one" in "".join(traceback.format_exception(e.value))
