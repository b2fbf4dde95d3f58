"""Interrupted runs (issue 11): each stage's command is killed at a seeded random
moment once it has begun writing, then run again. Nothing incomplete may read as
complete in between, the rerun finishes, and its result equals an uninterrupted
run: prep and the dataset build bit for bit, training to the 1e-6 docs/model.md
promises; and no temporary of the killed run is left (issue 19). Two runs writing
one output at once: prep's take turns (both end valid), a second `tfds build` on
one data_dir is refused. On the small demo."""
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from cropcontracts import zonefolder
from tests.fixtures import DEMO_BUILDER, assert_tfds_error

REPO = pathlib.Path(__file__).resolve().parents[1]
# The builder config of the session's `demo_dataset` (the uninterrupted build).
DATASET = DEMO_BUILDER


def env(**extra) -> dict:
  return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu",
              CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(REPO), **extra)


def start(cmd, **extra) -> subprocess.Popen:
  return subprocess.Popen([str(c) for c in cmd], cwd=REPO, env=env(**extra),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(cmd, **extra) -> subprocess.CompletedProcess:
  done = subprocess.run([str(c) for c in cmd], cwd=REPO, env=env(**extra),
                        capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  return done


def interrupt(proc, begun, delay: float, sig=signal.SIGKILL) -> int:
  """Sends `sig` to proc `delay` s after begun() first holds (its first output
  appeared); returns the exit status (the run may have finished first)."""
  t0 = time.monotonic()
  while not begun() and proc.poll() is None and time.monotonic() - t0 < 900:
    time.sleep(0.02)
  time.sleep(delay)
  if proc.poll() is None:
    proc.send_signal(sig)
  proc.communicate(timeout=300)
  return proc.returncode


def delays(seed: int, n: int, high: float) -> list[float]:
  """n seeded random kill moments in [0, high) seconds after the first output."""
  return np.random.default_rng(seed).uniform(0, high, n).round(3).tolist()


def files(folder: pathlib.Path) -> dict:
  """{relative path: bytes} of the visible files (hidden temporaries left out)."""
  return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*"))
          if p.is_file() and not any(part.startswith(".") for part in
                                     p.relative_to(folder).parts)}


# Every kind of temporary a writer leaves when it is killed: cropcontracts.atomic's
# `.NAME.<random>.partial` (files and map folders) and a swapped map folder's
# `.old`, `.tmp`, TFDS's `incomplete.*` and `.<version>.previous`, Orbax's
# `<step>.orbax-checkpoint-tmp`.
TEMPORARY = re.compile(r"\.partial|^\..*\.old$|\.tmp$|^incomplete\.|^\..*\.previous$|"
                       r"orbax-checkpoint-tmp")


def temporaries(folder: pathlib.Path) -> list[pathlib.Path]:
  """Every temporary (TEMPORARY) anywhere under folder."""
  return sorted(p for p in folder.rglob("*") if TEMPORARY.search(p.name))


@pytest.fixture(scope="module")
def ref(small_demo):
  """The small demo, prepared uninterrupted: raw/ inputs and zones/ (the reference)."""
  return small_demo


STAGE_FILES = {"imagery": ("s2.tif", "valid_count.tif"),
               "labels": ("labels.tif", "parcels.tif", "parcels.csv")}


def assert_complete_stages_equal_ref(out: pathlib.Path, ref_zones: pathlib.Path, stage: str,
                                     *, all_done: bool = False, zones=None):
  """Every zone whose meta.json says `stage` is done holds exactly the reference's
  files and section (a stage never reads as done over a partial file). all_done:
  and the stage is done in every zone of the reference (`zones`: exactly in those)."""
  done = []
  for folder in sorted(p for p in out.iterdir() if p.is_dir()) if out.exists() else []:
    meta_path = folder / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    if stage not in meta:
      continue
    done.append(folder.name)
    want = json.loads((ref_zones / folder.name / "meta.json").read_text())
    # Where the RPG edition was learnt (`rpg_edition_from`: the composites' year in the
    # reference, which ran imagery first; the default here) is provenance, not data:
    # the edition itself must be the same.
    got, ref = ({k: v for k, v in m[stage].items() if k != "rpg_edition_from"}
                for m in (meta, want))
    assert got == ref and meta["zone"] == want["zone"]
    for f in STAGE_FILES[stage]:
      assert (folder / f).read_bytes() == (ref_zones / folder.name / f).read_bytes(), f
    if "imagery" in meta:
      zonefolder.open_zone(folder)   # and it opens as a valid zone folder
  if all_done:
    assert done == sorted(zones or (p.name for p in ref_zones.iterdir() if p.is_dir()))


PREP = [sys.executable, "-m", "prep", "--quiet"]


def _prep_cmd(ref, stage, out, zones=None):
  """`python -m prep` writing `stage` of the demo's zones (`zones`: of those only) to out."""
  raw = ref / "raw"
  what = (["composite", "--scenes", raw / "scenes", "--year", "2023"] if stage == "imagery"
          # as make_demo labels: with the demo's land cover (undeclared fields unlabelled)
          else ["labels", "--rpg", raw / "rpg_demo.gpkg", "--landcover",
                raw / "landcover_demo.tif"])
  return [*PREP, *what, "--zones-csv", raw / "zones.csv",
          *(["--zones", *zones] if zones else ["--all"]), "--out", out]


@pytest.mark.parametrize("stage, seed", [("imagery", 0), ("labels", 1)])
def test_prep_killed_then_rerun_equals_an_uninterrupted_run(stage, seed, ref, tmp_path):
  out = tmp_path / "zones"
  cmd = _prep_cmd(ref, stage, out)
  for delay in delays(seed, 2, 1.5):
    interrupt(start(cmd), out.exists, delay)
    assert_complete_stages_equal_ref(out, ref / "zones", stage)
  finish(cmd)
  assert_complete_stages_equal_ref(out, ref / "zones", stage, all_done=True)
  assert temporaries(out) == []


def stopped_before_rename(name: str, code: str) -> list:
  """A child process running `code` whose writer of the file or folder `name` stops
  just before renaming its whole temporary into place: it prints `writing` and
  waits there to be killed (a random kill rarely lands in a write: each takes
  milliseconds)."""
  return [sys.executable, "-c", f"""
import os, time
_rename = os.replace
def _stop(src, dst):
  if os.path.basename(os.fspath(dst)) == {name!r}:
    print("writing", flush=True)
    time.sleep(600)
  _rename(src, dst)
os.replace = _stop
""" + code]


def kill_mid_write(cmd, **extra) -> None:
  """Starts `stopped_before_rename` cmd, SIGKILLs it where it stops."""
  proc = start(cmd, **extra)
  for line in proc.stdout:
    if line == "writing\n":
      proc.kill()
      proc.communicate()
      return
  pytest.fail(f"never reached the write: {proc.communicate()[1][-3000:]}")


PREP_CODE = "import sys\nfrom prep import cli\nsys.exit(cli.main(sys.argv[1:]))"


@pytest.mark.parametrize("stage, name", [("imagery", "s2.tif"), ("labels", "parcels.gpkg")])
def test_prep_killed_mid_write_then_rerun_leaves_no_temporary(stage, name, ref, tmp_path):
  """On one zone: the write killed is that zone's first (what a second zone would
  add is another rerun of the same)."""
  out, zones = tmp_path / "zones", ["demo-south_1"]
  cmd = _prep_cmd(ref, stage, out, zones)
  kill_mid_write([*stopped_before_rename(name, PREP_CODE), *cmd[len(PREP) - 1:]])
  [left] = temporaries(out)
  assert left.parent == out / zones[0]
  assert left.name.startswith(f".{name}.") and left.name.endswith(".partial")
  finish(cmd)
  assert temporaries(out) == []
  assert_complete_stages_equal_ref(out, ref / "zones", stage, all_done=True, zones=zones)


def test_two_composites_and_labels_on_one_zone_at_once_all_end_valid(ref, tmp_path):
  """They take turns on the zone folder's lock: no meta.json section is lost."""
  out, zones = tmp_path / "zones", ["demo-north_1"]
  procs = [start(_prep_cmd(ref, s, out, zones)) for s in ("imagery", "imagery", "labels")]
  for p in procs:
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-3000:]
  assert_complete_stages_equal_ref(out, ref / "zones", "imagery", all_done=True, zones=zones)
  assert_complete_stages_equal_ref(out, ref / "zones", "labels", all_done=True, zones=zones)
  assert temporaries(out) == []


TFDS = [pathlib.Path(sys.executable).parent / "tfds", "build", REPO / "tfds_builder" / "cropmap",
        f"--config={json.dumps(DATASET)}"]


def _version_dirs(data_dir: pathlib.Path) -> list[pathlib.Path]:
  """Version folders a reader would open (what input_pipeline.dataset_dir lists)."""
  root = data_dir / "cropmap" / DATASET["name"]
  return sorted(p for p in root.iterdir() if (p / "dataset_info.json").exists()
                and not p.name.startswith(".")) if root.exists() else []


def _dataset(version: pathlib.Path) -> tuple:
  """(decoded records per shard, the other files): shard bytes differ from one
  process to the next (protobuf writes an Example's feature map in an order of
  its own), the records they decode to do not."""
  import tensorflow as tf
  got = files(version)
  info = json.loads(got.pop(pathlib.Path("dataset_info.json")))
  shards = {}
  for name in [n for n in got if ".tfrecord-" in n.name]:
    got.pop(name)
    shards[name] = [
        {k: v for k, v in sorted(tf.train.Example.FromString(r.numpy()).features.feature.items())}
        for r in tf.data.TFRecordDataset(str(version / name))]
  # moduleName: the builder's import path (`cropmap.…` under the tfds command, the
  # package path imported), downloadSize: 0 or the demo's; neither is data.
  return shards, got, {k: v for k, v in info.items() if k not in ("downloadSize", "moduleName")}


def _build_in_process(zones, data_dir) -> pathlib.Path:
  import tensorflow_datasets as tfds
  from tfds_builder.cropmap import cropmap_dataset_builder as cb
  builder = cb.Builder(config=cb.CropmapConfig(**DATASET), data_dir=str(data_dir))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(zones)))
  return pathlib.Path(builder.data_dir)


def test_tfds_build_killed_then_rerun_equals_an_uninterrupted_build(ref, demo_dataset,
                                                                   tmp_path):
  want = _dataset(pathlib.Path(demo_dataset.builder.data_dir))
  data_dir = tmp_path / "data"
  cmd = [*TFDS, f"--data_dir={data_dir}", f"--manual_dir={ref / 'zones'}"]
  interrupt(start(cmd), (data_dir / "cropmap").exists, delays(2, 1, 2.0)[0])
  for version in _version_dirs(data_dir):      # visible means whole
    assert _dataset(version) == want
  _build_in_process(ref / "zones", data_dir)   # the rerun (`tfds` imports for 6 s)
  [got] = _version_dirs(data_dir)
  assert _dataset(got) == want
  assert sorted(p.name for p in got.parent.iterdir()) == [".build.lock", got.name]
  assert temporaries(data_dir) == []


def test_a_second_tfds_build_on_one_data_dir_is_refused(ref, tmp_path):
  data_dir = tmp_path / "data"
  cmd = [*TFDS, f"--data_dir={data_dir}", f"--manual_dir={ref / 'zones'}"]
  lock = data_dir / "cropmap" / DATASET["name"] / ".build.lock"
  from cropcontracts import atomic
  with atomic.file_lock(lock):       # a build in progress
    second = subprocess.run([str(c) for c in cmd], cwd=REPO, env=env(), capture_output=True,
                            text=True, timeout=600)
  assert_tfds_error(second.returncode, second.stderr,
                    f"{lock}: another build of cropmap/{DATASET['name']} is running on this "
                    f"data_dir; wait for it to finish (a killed build holds no lock), then rerun")
  assert not _version_dirs(data_dir)
  killed = start([sys.executable, "-c", "import sys; from cropcontracts import atomic\n"
                  f"with atomic.file_lock({str(lock)!r}):\n  print('held', flush=True)\n"
                  "  sys.stdin.read()"])
  assert killed.stdout.readline() == "held\n"
  killed.kill()                      # a build killed while it held the lock
  killed.wait()
  assert _build_in_process(ref / "zones", data_dir) in _version_dirs(data_dir)  # no obstacle


TRAIN_OVERRIDES = dict(checkpoint_every=1, keep_last=2)   # a checkpoint at every step
TRAIN = [sys.executable, "-c", f"""
import sys
from tests.fixtures import FakeData, tiny_config
from jaxcrop import train
train.train_and_evaluate(tiny_config(**{TRAIN_OVERRIDES!r}), sys.argv[1], data=FakeData())
"""]


def rerun_training(w) -> None:
  """TRAIN's run on workdir w, in this process: the rerun after a kill (the kill is
  what needs a process of its own; a child's start and imports cost seconds)."""
  from jaxcrop import train
  from tests.fixtures import FakeData, tiny_config
  train.train_and_evaluate(tiny_config(**TRAIN_OVERRIDES), w, data=FakeData())


@pytest.fixture(scope="module")
def full_train(tiny_workdir):
  """An uninterrupted training run of TRAIN's config (its checkpoint cadence aside:
  the weights do not depend on it)."""
  return tiny_workdir[0]


def _params(workdir):
  from jaxcrop import checkpoint
  return checkpoint.load_trained(workdir, "last")


@pytest.mark.parametrize("sig, seed", [(signal.SIGKILL, 3), (signal.SIGTERM, 4)])
def test_training_interrupted_then_rerun_equals_an_uninterrupted_run(sig, seed,
                                                                     full_train,
                                                                     tmp_path_factory):
  import jax
  full = full_train
  w = tmp_path_factory.mktemp("train") / "w"
  last = w / "checkpoints" / "last"
  begun = lambda: last.exists() and any(last.iterdir())
  interrupt(start([*TRAIN, w]), begun, delays(seed, 1, 0.5)[0], sig)
  from jaxcrop import checkpoint
  mgr, _ = checkpoint.managers(w, read_only=True)
  step = mgr.latest_step()        # whatever reads as saved restores whole
  if step is not None:
    assert _params(w).step == step
  rerun_training(w)
  assert temporaries(w) == []
  got, want = _params(w), _params(full)
  assert got.step == want.step == 6
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b),
                                                       atol=1e-6), got.variables,
               want.variables)


def test_training_killed_mid_write_then_rerun_leaves_no_temporary(tmp_path):
  w = tmp_path / "w"
  kill_mid_write([*stopped_before_rename("val_best.json", TRAIN[2]), w])
  assert temporaries(w)
  rerun_training(w)
  assert temporaries(w) == []
  assert _params(w).step == 6


PREDICT_CODE = "import sys\nfrom jaxcrop import predict\nsys.exit(predict.main(sys.argv[1:]))"


def test_predict_killed_mid_write_then_rerun_leaves_no_temporary(tmp_path):
  from jaxcrop import predict
  from prep.demo import zonefolders
  from tests import fixtures as pt
  zone, w = zonefolders.write_zone(tmp_path / "zones" / "testz_0").path, tmp_path / "w"
  pt.write_workdir(w)
  out = tmp_path / "maps"
  args = [str(a) for a in ("--workdir", w, "--zone", zone, "--out", out, "--tile", 16,
                           "--overlap", 4)]
  kill_mid_write([*stopped_before_rename(zone.name, PREDICT_CODE), *args])
  [left] = temporaries(out)          # the zone's maps, whole, under their temporary name
  assert left.name.startswith(f".{zone.name}.") and (left / "map.json").is_file()
  assert predict.main(args) == 0     # the rerun
  assert temporaries(out) == []
  assert sorted(p.name for p in out.iterdir()) == [".lock", zone.name]


EVALUATE_CODE = """
import sys
from tests.fixtures import FakeData
from jaxcrop import evaluate
evaluate.evaluate(sys.argv[1], data=FakeData())
"""
EVALUATED = {"eval": [".lock", "confusion_parcel.png", "confusion_pixel.png", "metrics.json",
                      "metrics.md", "reliability_tier1.png", "reliability_tier2.png",
                      "reliability_tier3.png"],
             "baseline": [".lock", "model.pkl", "settings.json"]}


@pytest.mark.parametrize("folder, name", [("eval", "metrics.md"), ("baseline", "model.pkl")])
def test_evaluate_killed_mid_write_then_rerun_leaves_no_temporary(folder, name, full_train,
                                                                  tmp_path):
  """evaluate SIGKILLed inside a write of its metrics (`eval/`) or of the baseline
  it fits (`baseline/`), rerun: the killed run's temporary is gone."""
  from jaxcrop import evaluate
  from tests.fixtures import FakeData
  w = pathlib.Path(shutil.copytree(full_train, tmp_path / "w"))
  kill_mid_write([*stopped_before_rename(name, EVALUATE_CODE), w])
  [left] = temporaries(w)
  assert left.parent == w / folder and left.name.startswith(f".{name}.")
  evaluate.evaluate(w, data=FakeData())     # the rerun
  assert temporaries(w) == []
  for f, names in EVALUATED.items():
    assert sorted(p.name for p in (w / f).iterdir()) == names


CV_CODE = """
import sys
from jaxcrop import cv
from tests.fixtures import tiny_config
def fake_train(config, workdir, *, data=None):    # the CV's bookkeeping, training stubbed
  return {"best_val_macro_f1": config.optimizer.lr, "step": config.train.num_steps}
cv.train.train_and_evaluate = fake_train
c = tiny_config()
c.cv.evaluate = False
cv.run_cv(c, sys.argv[1])
"""


def test_cv_killed_mid_write_then_rerun_leaves_no_temporary(tmp_path, monkeypatch):
  """cv SIGKILLed inside the write of its results (`cv/`), rerun: the killed run's
  temporary is gone. The rerun runs CV_CODE in this process (a child's start and
  imports cost seconds; the stub it installs is undone at the test's end)."""
  from jaxcrop import cv
  w = tmp_path / "w"
  kill_mid_write([*stopped_before_rename("results.md", CV_CODE), w])
  [left] = temporaries(w)
  assert left.parent == w / "cv" and left.name.startswith(".results.md.")
  monkeypatch.setattr(cv.train, "train_and_evaluate", cv.train.train_and_evaluate)
  monkeypatch.setattr(sys, "argv", ["-c", str(w)])
  exec(compile(CV_CODE, "CV_CODE", "exec"), {"__name__": "__main__"})
  assert temporaries(w) == []
  assert sorted(p.name for p in (w / "cv").iterdir()) == [".lock", "results.json", "results.md"]


MOSAIC_CODE = "import sys\nfrom jaxcrop import mosaic\nsys.exit(mosaic.main(sys.argv[1:]))"


@pytest.mark.parametrize("name, folder", [
    ("classes.vrt", "utm31"), ("france_classes.tif", "."), ("areas.csv", "."),
    ("part-0.parquet", "parcels/departement=unknown")])
def test_mosaic_killed_mid_write_then_rerun_leaves_no_temporary(name, folder, tmp_path):
  """`jaxcrop.mosaic` SIGKILLed inside a write of the national product (a UTM VRT,
  a national COG with its scratch mosaic, the class areas, a parcels partition),
  rerun: the killed run's temporaries are gone from every folder of the product."""
  from cropcontracts import nomenclature
  from jaxcrop import mosaic
  from jaxcrop.maps import geotiff, tiling
  from prep.demo import zonefolders
  zone = zonefolders.write_zone(tmp_path / "zones" / "testz_0")
  shape = zone.zone.shape
  pred = tiling.Prediction(classes=np.zeros(shape, np.uint8),
                           confidence=np.full(shape, 80, np.uint8))
  geotiff.write_outputs(zone, pred, nomenclature.load(nomenclature.VERSION), tmp_path / "maps")
  out = tmp_path / "national"
  args = [str(a) for a in ("--maps", tmp_path / "maps", "--out", out, "-q")]
  kill_mid_write([*stopped_before_rename(name, MOSAIC_CODE), *args])
  left = [p for p in temporaries(out) if TEMPORARY.search(p.parent.name) is None]
  assert left and {p.parent for p in left} == {out / folder}
  assert any(p.name.startswith(f".{name}.") for p in left)
  assert mosaic.main(args) == 0      # the rerun
  assert temporaries(out) == []
  assert sorted(p.name for p in out.iterdir()) == [
      ".lock", "areas.csv", "collection.json", "france_classes.tif", "france_confidence.tif",
      "france_validity.tif", "parcels", "utm31"]
