"""Test-wide settings and the session's shared fixtures.

Settings: TensorFlow quiet and off any accelerator, JAX on CPU, XLA compiling
fast rather than optimizing; one JAX compilation cache for the whole run,
in-process and, through the environment, in every child process
(`compilation_cache`).

Shared fixtures, built once per run (under pytest-xdist: once for all workers,
by the first that needs one, under a file lock): the small demo and its raw
inputs, the tiny synthetic zones, a dataset built from each, and a trained
workdir of each kind. They are read-only by convention; each one checks at
the end of the session that no test wrote into it (the test that did is the
one to fix: `fixtures.private_copy` gives a test its own copy to damage or
extend).
"""
from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")
# The tests compile hundreds of tiny programs and run each a few times: XLA's LLVM
# optimizations cost more than they save there (a tiny training run: 17 s of CPU, 7 s
# without). Results move in the last bits (5e-7 on the tiny run's weights), inside every
# tolerance; runs compared exactly run under the same flags. Child processes inherit them.
_FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FAST_COMPILE}".strip()
# One OpenMP thread per process (scikit-learn's gradient boosting, the baseline): the
# suite runs two workers on two cores, and libgomp's threads spin at each barrier while
# the other worker holds the core: the tiny baseline's fit took 0.75-13.5 s with two
# threads on the loaded machine, 0.04 s with one. Child processes inherit it. Set before
# any OpenMP runtime loads (scikit-learn is imported later, by the code under test).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import jax  # noqa: E402  (after JAX_PLATFORMS)

# The compilation cache, as the environment of child processes carries it.
_CACHE_ENV = ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS")

# The files whose tests take longest (child processes, trainings), longest first, as
# measured (pytest --durations=0, summed per file). Under `-n 2 --dist loadfile` a file
# is one worker's unit and the run ends when the busier worker does: these start first,
# the rest fill in behind them. (xdist's own order, by number of tests, started the
# longest file, test_resume.py, last: one worker ran alone for a minute.)
HEAVIEST_FIRST = ("test_resume.py", "test_train.py", "test_damaged.py", "test_benchmarks.py",
                  "test_pipeline_e2e.py", "test_stac.py", "test_predict.py", "test_model.py",
                  "test_cli.py", "test_evaluate.py", "test_dataset_years.py", "test_in_season.py",
                  "test_points_e2e.py", "test_hierarchy.py", "test_plots.py")


def pytest_configure(config):
  """`--dist loadfile` takes the files in collection order (`pytest_collection_modifyitems`)."""
  if getattr(config.option, "dist", "no") == "loadfile":
    config.option.loadscopereorder = False


def pytest_collection_modifyitems(items):
  """HEAVIEST_FIRST's files first, in its order; every other file after, as collected."""
  rank = {name: i for i, name in enumerate(HEAVIEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session")
def shared_root(request, tmp_path_factory) -> pathlib.Path:
  """The run's temporary folder; under pytest-xdist, the one every worker shares
  (a worker's own is a folder of it)."""
  base = tmp_path_factory.getbasetemp()
  return base.parent if hasattr(request.config, "workerinput") else base


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(shared_root):
  """The runs below compile the same functions: one disk cache for the run, for
  this process (jax.config) and for the child processes it starts (environment)."""
  cache = shared_root / "jax_cache"
  cache.mkdir(exist_ok=True)
  old_env = {k: os.environ.get(k) for k in _CACHE_ENV}
  os.environ.update(dict(zip(_CACHE_ENV, (str(cache), "0"))))
  old = {k: getattr(jax.config, k) for k in
         ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")}
  jax.config.update("jax_compilation_cache_dir", str(cache))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  yield cache
  for k, v in old.items():
    jax.config.update(k, v)
  for k, v in old_env.items():
    if v is None:
      os.environ.pop(k, None)
    else:
      os.environ[k] = v


# --------------------------------------------------------------------------- #
# Built once, read by many

def _fingerprint(root: pathlib.Path) -> dict:
  """{relative path: (size, mtime)} of every file under root."""
  return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
          for p in sorted(root.rglob("*")) if p.is_file()}


@contextlib.contextmanager
def _read_only(root: pathlib.Path):
  """Yields root; at the end, fails if a file under it changed, appeared or went."""
  before = _fingerprint(root)
  yield root
  after = _fingerprint(root)
  changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
  assert not changed, (f"a test wrote into the shared fixture {root}: {changed[:10]}; "
                       f"shared fixtures are read-only: take a fixtures.private_copy")


def _built_once(root: pathlib.Path, name: str, build) -> pathlib.Path:
  """`root/name`, which `build(path)` writes once per run: the first worker to
  get here builds it under a lock, the others wait and reuse it."""
  from cropcontracts import atomic
  out, done = root / name, root / f".{name}.done"
  with atomic.file_lock(root / f".{name}.lock"):
    if not done.exists():
      if out.exists():           # a build that failed in another worker
        shutil.rmtree(out)
      build(out)
      done.touch()
  return out


def _builder(data_dir: pathlib.Path, config: dict):
  """The cropmap Builder of `config` (a CropmapConfig's fields) on data_dir."""
  from tfds_builder.cropmap import cropmap_dataset_builder as cb
  return cb.Builder(config=cb.CropmapConfig(**config), data_dir=str(data_dir))


def _build(zones: pathlib.Path, data_dir: pathlib.Path, config: dict) -> None:
  """Builds the cropmap dataset of `config` from `zones` into data_dir."""
  import tensorflow_datasets as tfds
  _builder(data_dir, config).download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(zones)))


def _trained(config, data, out: pathlib.Path) -> None:
  """Trains config into out/workdir; the summary it returns goes to out/result.json."""
  from jaxcrop import train
  result = train.train_and_evaluate(config, out / "workdir", data=data)
  (out / "result.json").write_text(json.dumps(
      result, default=lambda a: a.tolist() if hasattr(a, "tolist") else str(a)))


def _shared_dataset(root: pathlib.Path, name: str, zones: pathlib.Path, config: dict):
  """Yields `fixtures.Dataset` of the cropmap dataset of `config` (CropmapConfig
  fields) on `zones`, built once per run, read-only."""
  from tests import fixtures
  out = _built_once(root, name, lambda d: _build(zones, d, config))
  with _read_only(out):
    yield fixtures.Dataset(out, _builder(out, config))


def _shared_workdir(root: pathlib.Path, name: str, config, data=None):
  """Yields (workdir, summary) of `config` trained on `data` (None: the dataset the
  config names), built once per run, read-only."""
  out = _built_once(root, name, lambda d: _trained(config, data, d))
  with _read_only(out):
    yield out / "workdir", json.loads((out / "result.json").read_text())


@pytest.fixture(scope="session")
def small_demo(shared_root) -> pathlib.Path:
  """`prep.demo.make_demo(small=True)`: the folder holding `raw/` and `zones/`
  (2 regions x 2 zones of 48 px, 12 months)."""
  from prep import demo
  with _read_only(_built_once(shared_root, "small_demo", lambda out: demo.make_demo(
      out, seed=0, small=True, progress=False))) as out:
    yield out


@pytest.fixture(scope="session")
def demo_raw(small_demo) -> pathlib.Path:
  """The small demo's raw inputs: `zones.csv`, `rpg_demo.gpkg`, `scenes/`, `demo.json`."""
  return small_demo / "raw"


@pytest.fixture(scope="session")
def tiny_zones(shared_root) -> pathlib.Path:
  """`prep.demo.zonefolders.write_zones()`: 2 regions x 4 zones of 40 x 36 px, 12 months."""
  from prep.demo import zonefolders
  with _read_only(_built_once(shared_root, "tiny_zones", zonefolders.write_zones)) as out:
    yield out


@pytest.fixture(scope="session")
def tiny_dataset(tiny_zones, shared_root):
  """The cropmap dataset `fixtures.TINY_BUILDER` (16-px patches, 3 folds) of
  `tiny_zones`: `fixtures.Dataset(data_dir, builder)`."""
  from tests import fixtures
  yield from _shared_dataset(shared_root, "tiny_dataset", tiny_zones, fixtures.TINY_BUILDER)


@pytest.fixture(scope="session")
def demo_dataset(small_demo, shared_root):
  """The cropmap dataset `fixtures.DEMO_BUILDER` (16-px patches, 2 folds) of the
  small demo's zones: `fixtures.Dataset(data_dir, builder)`."""
  from tests import fixtures
  yield from _shared_dataset(shared_root, "demo_dataset", small_demo / "zones",
                             fixtures.DEMO_BUILDER)


@pytest.fixture(scope="session")
def demo_workdir(demo_dataset, shared_root):
  """(workdir, summary): `fixtures.demo_train_config` trained on `demo_dataset`
  (4 steps, validation and checkpoints at 2 and 4), and the summary
  `train_and_evaluate` returned."""
  from tests import fixtures
  yield from _shared_workdir(shared_root, "demo_workdir",
                             fixtures.demo_train_config(demo_dataset.data_dir))


@pytest.fixture(scope="session")
def tiny_workdir(shared_root):
  """(workdir, summary): `fixtures.tiny_config()` trained on `fixtures.FakeData`
  (6 steps: `last` checkpoints 4 and 6), and the summary `train_and_evaluate`
  returned."""
  from tests import fixtures
  yield from _shared_workdir(shared_root, "tiny_workdir", fixtures.tiny_config(),
                             fixtures.FakeData())
