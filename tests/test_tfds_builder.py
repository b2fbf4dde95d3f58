"""The cropmap TFDS builder on tiny synthetic zone folders (2 regions x 4 zones,
40 x 36 px, 12 months, patches of 16 px: the session's `tiny_zones` and
`tiny_dataset`). The stock `tfds build` command line runs in-process (its
parser and command, as TFDS's own tests run it). The `tfds` script in a child
process, for what only a process shows (the one-line error and its exit status):
test_damaged.py::test_tfds_build_overwrite_over_a_good_dataset_checks_the_zones_first."""
import json
import os
import pathlib
import shutil
import sys

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from jaxcrop.input_pipeline import import_tf  # noqa: E402

import_tf()
import rasterio  # noqa: E402
import rasterio.windows  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

from cropcontracts import zonefolder  # noqa: E402
from cropcontracts.errors import UserError  # noqa: E402
from cropcontracts.zone import Zone  # noqa: E402
from tfds_builder.cropmap import cropmap_dataset_builder as cb  # noqa: E402
from cropcontracts import moments as moments_lib
from tfds_builder.cropmap import overwrite_guard  # noqa: E402
from tfds_builder.cropmap import patching  # noqa: E402
from prep.demo import zonefolders  # noqa: E402
from tests import fixtures as testing  # noqa: E402
from cropcontracts import nomenclature  # noqa: E402

NOM = nomenclature.load(cb.NOMENCLATURE)

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY = testing.TINY_BUILDER
VERSION = str(cb.Builder.VERSION)


def build(zones, data_dir, **download):
  builder = cb.Builder(config=cb.CropmapConfig(**TINY), data_dir=str(data_dir))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(zones), **download))
  return builder


@pytest.fixture(scope="module")
def zones(tiny_zones):
  return tiny_zones


@pytest.fixture(scope="module")
def built(tiny_dataset):
  return tiny_dataset.builder


def examples(builder, split):
  return list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)))


def assert_same_dataset(ours, other):
  """Same examples in the test split and a fold, same moments."""
  for split in ("test", "fold2"):
    a = {(e["zone_id"], e["row"], e["col"]): e for e in examples(ours, split)}
    b = {(e["zone_id"], e["row"], e["col"]): e for e in examples(other, split)}
    assert a.keys() == b.keys()
    for k, e in a.items():
      np.testing.assert_array_equal(e["image"], b[k]["image"])
      np.testing.assert_array_equal(e["label"], b[k]["label"])
  assert other.info.metadata["moments_per_fold"] == ours.info.metadata["moments_per_fold"]


@pytest.fixture
def tfds_build(monkeypatch):
  """tfds_build(*args): the stock `tfds build` command line in-process (its parser
  and build command, without absl's app.run); absl's exception handlers are
  restored afterwards."""
  from absl import app
  from tensorflow_datasets.scripts.cli import main
  monkeypatch.setattr(app, "EXCEPTION_HANDLERS", [])
  return lambda *args: main._parse_flags(["tfds", "build", *map(str, args)]).execute()


def test_assign_splits_round_robin_across_regions():
  zs = [Zone(f"{r}_{i}", r, r, i, 32631, 0.0, 0.0) for r in "ab" for i in range(4)]
  assert patching.assign_splits(zs, 3) == {
      "a_0": "test", "a_1": "fold0", "a_2": "fold1", "a_3": "fold2",
      "b_0": "test", "b_1": "fold0", "b_2": "fold1", "b_3": "fold2"}
  study = [Zone(f"r{r}_{i}", f"r{r}", "t", i, 32631, 0.0, 0.0)
           for r in range(8) for i in range(5)]
  split = patching.assign_splits(study, 3)
  sizes = {s: list(split.values()).count(s) for s in set(split.values())}
  assert sizes == {"test": 8, "fold0": 11, "fold1": 11, "fold2": 10}
  assert {z for z, s in split.items() if s == "test"} == {f"r{r}_0" for r in range(8)}


def test_assign_splits_errors():
  zs = [Zone(f"a_{i}", "a", "a", i, 32631, 0.0, 0.0) for i in (0, 1, 2, 3)]
  with pytest.raises(UserError, match=r"^regions \['a'\] have no zone with index 0 \(the test "
                     r"split\); prep each region's zone of index 0 into the zone folders$"):
    patching.assign_splits(zs[1:], 3)
  with pytest.raises(UserError, match="only 2 non-test zone"):
    patching.assign_splits(zs[:3], 3)


def test_patch_origins():
  assert patching.patch_origins(40, 36, 16) == ([0, 16, 32], [0, 16, 32])
  assert patching.patch_origins(32, 33, 16) == ([0, 16], [0, 16, 32])


def test_moments_merge_equals_direct():
  rng = np.random.default_rng(0)
  img = rng.integers(0, 5000, (3, 10, 7, 4)).astype(np.uint16)
  img[rng.random(img.shape) < 0.3] = 0
  parts = [moments_lib.moments_of(img[:, i:i + 3]) for i in range(0, 10, 3)]
  mean, std = moments_lib.mean_std(moments_lib.merge_all(parts))
  x = np.where(img == 0, np.nan, img.astype(np.float64))
  np.testing.assert_allclose(mean, np.nanmean(x, axis=(1, 2)), rtol=1e-6)
  np.testing.assert_allclose(std, np.nanstd(x, axis=(1, 2)), rtol=1e-5)


def test_splits_membership_and_dropped_patches(built):
  md = built.info.metadata
  # Every split: 3 x 3 patches of 16 px per 40 x 36 zone, the edge ones padded;
  # test: 2 zones x 9; folds: 2 zones x (9 - 1 empty corner).
  assert {s: built.info.splits[s].num_examples for s in built.info.splits} == {
      "test": 18, "fold0": 16, "fold1": 16, "fold2": 16}
  assert md["dropped_empty_patches"] == {"test": 0, "fold0": 2, "fold1": 2, "fold2": 2}
  assert md["zones_per_split"]["test"] == ["alpha_0", "beta_0"]
  seen = {}
  for split in built.info.splits:
    ids = {ex["zone_id"].decode() for ex in examples(built, split)}
    assert ids == set(md["zones_per_split"][split])
    for z in ids:
      assert seen.setdefault(z, split) == split, f"{z} in {seen[z]} and {split}"
  assert len(seen) == 8
  keys = {(ex["row"], ex["col"]) for ex in examples(built, "fold0")}
  assert (0, 0) not in keys  # the unlabelled corner patch was dropped


def test_every_labelled_pixel_of_a_training_zone_is_in_exactly_one_patch(built, zones):
  """The 40 x 36 zones leave an 8-row and a 4-column strip past the whole
  16-px patches: they enter as padded patches, the padding labelled 255."""
  md = built.info.metadata
  for fold in ("fold0", "fold1", "fold2"):
    by_zone = {}
    for ex in examples(built, fold):
      by_zone.setdefault(ex["zone_id"].decode(), []).append(ex)
    assert sorted(by_zone) == md["zones_per_split"][fold]
    for zone_id, exs in by_zone.items():
      labels = zonefolder.open_zone(zones / zone_id).read_labels()
      h, w = labels.shape
      times = np.zeros((h, w), int)
      for ex in exs:
        r, c = int(ex["row"]), int(ex["col"])
        inside = ex["label"][:h - r, :w - c]
        np.testing.assert_array_equal(inside, labels[r:r + 16, c:c + 16])
        assert (ex["label"][h - r:] == 255).all() and (ex["label"][:, w - c:] == 255).all()
        times[r:r + 16, c:c + 16] += 1
      assert (times[labels != 255] == 1).all(), zone_id
      assert (labels[32:] != 255).any() and (labels[:, 32:] != 255).any()


def test_patches_round_trip_to_zone_files(built, zones):
  picked = [ex for ex in examples(built, "test") if ex["zone_id"] == b"alpha_0"]
  picked += examples(built, "fold1")[:2]
  assert any(ex["row"] == 32 and ex["col"] == 32 for ex in picked)
  for ex in picked:
    folder = zones / ex["zone_id"].decode()
    with rasterio.open(folder / "s2.tif") as src:
      t = rasterio.Affine(*ex["transform"])
      win = rasterio.windows.from_bounds(*rasterio.transform.array_bounds(16, 16, t),
                                         transform=src.transform)
      assert (round(win.row_off), round(win.col_off)) == (ex["row"], ex["col"])
      s2 = src.read(window=win, boundless=True, fill_value=0)
    image = s2.reshape(12, 4, 16, 16).transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(ex["image"], image)
    with rasterio.open(folder / "labels.tif") as src:
      label = src.read(1, window=win, boundless=True, fill_value=255)
    np.testing.assert_array_equal(ex["label"], label)
    with rasterio.open(folder / "parcels.tif") as src:
      parcels = src.read(1, window=win, boundless=True, fill_value=0)
    np.testing.assert_array_equal(ex["parcels"], parcels.astype(np.int32))
    assert parcels.dtype == np.uint32 and ex["parcels"].dtype == np.int32   # contracts 1, 2
    with rasterio.open(folder / "valid_count.tif") as src:
      np.testing.assert_array_equal(
          ex["valid_count"], src.read(window=win, boundless=True, fill_value=0))
    assert ex["epsg"] == 32631
    assert ex["region"] == {b"a": b"Alpha", b"b": b"Beta"}[ex["zone_id"][:1]]
  edge = next(ex for ex in picked if ex["row"] == 32 and ex["col"] == 32)
  assert (edge["label"][8:] == 255).all() and (edge["label"][:, 4:] == 255).all()
  assert (edge["image"][:, 8:] == 0).all() and (edge["image"][:, :, 4:] == 0).all()


def test_metadata_stats_and_counts_equal_numpy(built, zones):
  md = built.info.metadata
  for fold in ("fold0", "fold1", "fold2"):
    zfs = [zonefolder.open_zone(zones / z) for z in md["zones_per_split"][fold]]
    x = np.concatenate([z.read_image().astype(np.float64) for z in zfs], axis=1)
    x[x == 0] = np.nan
    mean, std = moments_lib.mean_std(moments_lib.Moments.from_json(md["moments_per_fold"][fold]))
    np.testing.assert_allclose(mean, np.nanmean(x, axis=(1, 2)), rtol=1e-6)
    np.testing.assert_allclose(std, np.nanstd(x, axis=(1, 2)), rtol=1e-5)
    labels = np.concatenate([z.read_labels().ravel() for z in zfs])   # the whole zones
    expected = np.bincount(labels[labels != 255], minlength=NOM.num_classes)
    assert md["class_pixel_counts"][fold] == expected.tolist()
    assert expected[NOM.background_id] > 0 and len(expected) == 24   # background counted
  norm = md["normalization"]
  assert norm["splits"] == "fold0+fold1+fold2"
  x = np.concatenate([zonefolder.open_zone(zones / z).read_image().astype(np.float64)
                      for f in ("fold0", "fold1", "fold2")
                      for z in md["zones_per_split"][f]], axis=1)
  x[x == 0] = np.nan
  np.testing.assert_allclose(norm["mean"], np.nanmean(x, axis=(1, 2)), rtol=1e-6)
  np.testing.assert_allclose(norm["std"], np.nanstd(x, axis=(1, 2)), rtol=1e-5)
  assert md["months"] == list(zonefolders.MONTHS) and md["bands"] == ["B2", "B3", "B4", "B8"]
  assert md["class_names"][0] == "winter_wheat" and len(md["tier2_of"]) == 24
  assert md["class_names"][-1] == md["tier2_names"][-1] == md["tier1_names"][-1] == \
      "non_agricultural"
  assert md["nomenclature_version"] == cb.NOMENCLATURE


def test_tfds_build_command_matches_the_builder_api(built, zones, tmp_path, tfds_build):
  """The stock `tfds build` (the builder module loaded from its folder, as
  `cropmap.cropmap_dataset_builder`; a JSON --config) writes the dataset the
  builder API writes."""
  tfds_build(REPO / "tfds_builder" / "cropmap", f"--config={json.dumps(TINY)}",
             f"--data_dir={tmp_path}", f"--manual_dir={zones}")
  assert "cropmap.cropmap_dataset_builder" in sys.modules
  assert_same_dataset(built, tfds.builder_from_directory(tmp_path / "cropmap" / "tiny" / VERSION))


def test_beam_pipeline_matches_the_builder_api(built, zones, tmp_path, monkeypatch):
  """The documented Beam build (`--beam_pipeline_options=runner=DirectRunner`):
  Beam writes every shard, the local generator is never called."""
  import apache_beam as beam

  def local(*_):
    raise AssertionError("the local generator ran under Beam")
  monkeypatch.setattr(cb.Builder, "_generate_local", staticmethod(local))
  options = beam.options.pipeline_options.PipelineOptions(flags=["--runner=DirectRunner"])
  beamed = build(zones, tmp_path, beam_options=options)
  assert_same_dataset(built, beamed)


def test_empty_manual_dir_is_a_clear_error(tmp_path, tfds_build):
  (tmp_path / "empty").mkdir()
  with pytest.raises(UserError, match=rf"^--manual_dir={tmp_path / 'empty'}: holds no zone "
                     r"folder \(no \*/meta.json\); config france2023 needs the zone folders "
                     r"written by prep, e.g. `tfds build tfds_builder/cropmap "
                     r"--config=france2023 --manual_dir=out/zones`$"):
    tfds_build("tfds_builder/cropmap", "--config=france2023", f"--data_dir={tmp_path / 'd'}",
               f"--manual_dir={tmp_path / 'empty'}")
  # nothing but the (empty) build lock, which a later build reuses
  assert [p.name for p in (tmp_path / "d").glob("cropmap/france2023/*")] == [".build.lock"]


def _broken_copy(zones, tmp_path):
  return testing.private_copy(zones, tmp_path)


def test_missing_file_names_zone_and_file(zones, tmp_path):
  root = _broken_copy(zones, tmp_path)
  (root / "beta_2" / "parcels.tif").unlink()
  with pytest.raises(UserError, match=r"zone beta_2: .*beta_2/parcels.tif is missing"):
    build(root, tmp_path / "data")


def test_mismatched_grids_name_zone_and_file(zones, tmp_path):
  root = _broken_copy(zones, tmp_path)
  path = root / "alpha_1" / "labels.tif"
  with rasterio.open(path) as src:
    profile, data = src.profile, src.read()
  profile["transform"] = rasterio.Affine(10, 0, 123450.0, 0, -10, 5_500_000.0)
  with rasterio.open(path, "w", **profile) as dst:
    dst.write(data)
  with pytest.raises(UserError, match=r"zone alpha_1: .*alpha_1/labels.tif is on grid"):
    build(root, tmp_path / "data")


def test_nomenclature_version_mismatch(zones, tmp_path):
  root = _broken_copy(zones, tmp_path)
  meta_path = root / "beta_3" / "meta.json"
  meta = json.loads(meta_path.read_text())
  meta["labels"]["nomenclature"] = "v0"
  meta_path.write_text(json.dumps(meta))
  with pytest.raises(UserError, match=r"zone beta_3: .*meta.json says nomenclature 'v0', "
                     rf"the builder config expects '{cb.NOMENCLATURE}'"):
    build(root, tmp_path / "data")


def test_zones_labelled_with_v2_are_refused_with_the_upgrade_command(zones, tmp_path):
  root = _broken_copy(zones, tmp_path)
  shutil.rmtree(root / "alpha_3")
  zonefolders.write_zone(root / "alpha_3", zonefolders.synthetic_zone(
      "alpha_3", region="Alpha", index=3, height=40, width=36), months=zonefolders.MONTHS,
      version="v2")
  with pytest.raises(UserError) as e:
    build(root, tmp_path / "data")
  assert str(e.value) == (
      f"zone alpha_3: {root / 'alpha_3' / 'meta.json'} says nomenclature 'v2', the builder "
      f"config expects 'v3'; relabel with `python -m prep labels` or build a config for 'v2'")


def test_months_mismatch(zones, tmp_path):
  root = _broken_copy(zones, tmp_path)
  shutil.rmtree(root / "alpha_3")
  zonefolders.write_zone(root / "alpha_3", zonefolders.synthetic_zone(
      "alpha_3", region="Alpha", index=3, height=40, width=36), seed=1,
      months=zonefolders.MONTHS[:6])
  with pytest.raises(UserError, match=r"zone alpha_3: .*s2.tif has months .* all zones "
                     r"of a dataset must share months and bands"):
    build(root, tmp_path / "data")


def test_demo_source_generates_zones_unless_manual_dir_has_them(zones, tmp_path,
                                                                 monkeypatch):
  """The demo config calls prep.demo.make_demo(<download_dir>/cropmap_demo)."""
  import types
  calls = []

  def make_demo(out_dir, seed=0):
    calls.append((pathlib.Path(out_dir), seed))
    shutil.copytree(zones, pathlib.Path(out_dir) / "zones")
    return pathlib.Path(out_dir) / "zones"

  import prep
  fake = types.SimpleNamespace(make_demo=make_demo)
  monkeypatch.setitem(sys.modules, "prep.demo", fake)
  monkeypatch.setattr(prep, "demo", fake, raising=False)  # when already imported
  config = cb.CropmapConfig(name="demo_tiny", source="demo", patch_size=16)
  builder = cb.Builder(config=config, data_dir=str(tmp_path / "a"))
  builder.download_and_prepare(download_dir=str(tmp_path / "dl"))
  assert calls == [(tmp_path / "dl" / "cropmap_demo", 0)]
  assert builder.info.splits["test"].num_examples == 18
  builder = cb.Builder(config=config, data_dir=str(tmp_path / "b"))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(zones)))
  assert len(calls) == 1 and builder.info.splits["fold0"].num_examples == 16


def test_bare_tfds_build_builds_the_demo_only(tiny_zones, tmp_path, tfds_build, monkeypatch):
  """`tfds build tfds_builder/cropmap` with no --config: the demo, generated on
  the fly (here the tiny zones stand in for the region, minutes to write), and
  no other config (france2023 needs a --manual_dir)."""
  from prep import demo
  monkeypatch.setattr(demo, "make_demo", lambda out_dir, seed=0: testing.private_copy(
      tiny_zones, out_dir))
  tfds_build("tfds_builder/cropmap", f"--data_dir={tmp_path / 'd'}")
  assert sorted(p.name for p in (tmp_path / "d" / "cropmap").iterdir()
                if p.is_dir() and not p.name.startswith(".")) == ["demo"]
  assert (tmp_path / "d" / "downloads" / "cropmap_demo" / tiny_zones.name).is_dir()
  ds = tfds.load("cropmap", split="test", data_dir=str(tmp_path / "d"))
  first = next(iter(tfds.as_numpy(ds)))
  assert first["image"].shape == (12, 64, 64, 4) and first["label"].shape == (64, 64)


def test_the_tfds_internals_the_overwrite_guard_relies_on(built, zones, tmp_path, tfds_build):
  """Each internal that overwrite_guard's docstring names, as TFDS has it now.
  A failure here means TFDS changed: read overwrite_guard.py before anything."""
  from absl import app
  from tensorflow_datasets.core.utils import file_utils
  from tensorflow_datasets.scripts.cli import build as cli_build
  # (1) the command line's builder factory, where overwrite_guard expects it.
  assert cli_build.__name__ == overwrite_guard.CLI_BUILD_MODULE
  assert callable(getattr(cli_build, overwrite_guard.CLI_BUILDER_FACTORY, None))
  # (1, 2, 4) --overwrite over a good dataset with a broken zone: the factory asked
  # is_prepared and got False (else it deleted the dataset), the overwrite reached
  # download_and_prepare (which checked the zones), the one-line errors were installed.
  data_dir = tmp_path / "d"
  version = pathlib.Path(shutil.copytree(built.data_dir, data_dir / "cropmap" / "tiny" / VERSION))
  broken = testing.private_copy(zones, tmp_path)
  (broken / "alpha_2" / "parcels.tif").unlink()
  args = [REPO / "tfds_builder" / "cropmap", f"--config={json.dumps(TINY)}",
          f"--data_dir={data_dir}", "--overwrite"]
  with pytest.raises(UserError, match=r"zone alpha_2: .*parcels.tif is missing"):
    tfds_build(*args, f"--manual_dir={broken}")
  assert (version / "dataset_info.json").is_file()
  assert [type(h) for h in app.EXCEPTION_HANDLERS] == [overwrite_guard.OneLineErrors]
  # ... and with good zones it overwrites: the old version set aside, then dropped.
  (version / "stale.txt").write_text("from the old build")
  tfds_build(*args, f"--manual_dir={zones}")
  assert not (version / "stale.txt").exists() and (version / "dataset_info.json").is_file()
  assert sorted(p.name for p in version.parent.iterdir()) == [".build.lock", VERSION]
  # Elsewhere is_prepared is TFDS's own.
  assert cb.Builder(config=cb.CropmapConfig(**TINY), data_dir=str(data_dir)).is_prepared()
  # (3) TFDS's temporary build folders: what prepare removes after a killed build.
  tmp = pathlib.PurePath(file_utils._get_incomplete_dir(str(version)))
  assert tmp.parent == version.parent and tmp.match(
      *overwrite_guard.killed_builds(version)), tmp


def test_france2023_is_found_by_name_but_not_listed():
  assert [c.name for c in cb.Builder.BUILDER_CONFIGS] == ["demo"]
  assert cb.Builder.get_builder_config("france2023").source == "manual"
  assert cb.Builder(config="france2023", data_dir="/nonexistent").builder_config.name == \
      "france2023"
  assert cb.Builder.get_builder_config("nope") is None


def test_dataset_version_follows_the_nomenclature():
  """Moving prep to another nomenclature must come with a new dataset VERSION:
  update cb.NOMENCLATURE, bump cb.Builder.VERSION and add a release note."""
  from cropcontracts import nomenclature
  assert cb.NOMENCLATURE == nomenclature.VERSION, (
      "prep's nomenclature changed: bump the cropmap VERSION, add a RELEASE_NOTES "
      "entry and set cropmap_dataset_builder.NOMENCLATURE")
  assert str(cb.Builder.VERSION) in cb.Builder.RELEASE_NOTES
  assert cb.CropmapConfig(name="x").nomenclature == cb.NOMENCLATURE


def test_demo_on_a_bucket_is_generated_locally(tmp_path, monkeypatch):
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
  assert cb._demo_dir("gs://b/tfds/downloads") == tmp_path / "jaxcrop" / "cropmap_demo"
  assert cb._demo_dir(tmp_path / "dl") == tmp_path / "dl" / "cropmap_demo"


def test_a_build_removes_a_killed_builds_folder_never_a_live_ones(zones, tmp_path):
  """TFDS's `incomplete.*` folder of a build killed in the data_dir goes when the
  next build takes the build lock; while another build holds the lock, this one
  is refused and the folder (that build's) stays."""
  from cropcontracts import atomic
  config_dir = tmp_path / "data" / "cropmap" / TINY["name"]
  left = config_dir / f"{overwrite_guard.INCOMPLETE_PREFIX}k1ll3d_{VERSION}"
  (left / "fold0").mkdir(parents=True)
  root = _broken_copy(zones, tmp_path)
  (root / "beta_2" / "parcels.tif").unlink()        # the build stops at the zones
  with atomic.file_lock(config_dir / cb.BUILD_LOCK):  # a live build
    with pytest.raises(UserError, match=r"another build of cropmap/tiny is running"):
      build(root, tmp_path / "data")
  assert left.is_dir()
  with pytest.raises(UserError, match=r"zone beta_2: .*beta_2/parcels.tif is missing"):
    build(root, tmp_path / "data")
  assert sorted(p.name for p in config_dir.iterdir()) == [cb.BUILD_LOCK]
