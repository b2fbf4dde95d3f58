"""The parser of every command line (cropcontracts.cli): one-line mistakes, subcommands;
`python -m prep`: help, the zones table, and user errors as one clean line (exit 2);
`python -m jaxcrop.train|evaluate|cv`: their argparse (jaxcrop.cli), the 0.2 flag spellings."""
import argparse
import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from cropcontracts import cli as base
from cropcontracts.errors import UserError
from prep import cli
from prep import zones as Z
from prep.labels import RPG_LAYER
from tests.fixtures import assert_error, private_copy

COMMANDS = ("zones", "gee", "composite", "stac", "labels", "demo")


@pytest.fixture(scope="module")
def raw(demo_raw, tmp_path_factory):
  """A copy of the session's demo raw inputs (tests write zones beside it)."""
  return private_copy(demo_raw, tmp_path_factory.mktemp("cli"))


def run(argv, capsys):
  """(exit status, stdout, stderr) of the CLI on argv."""
  try:
    rc = cli.main(["--quiet", *map(str, argv)])
  except SystemExit as e:   # argparse
    rc = e.code
  out, err = capsys.readouterr()
  return rc, out, err


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_help_with_examples(command, capsys):
  rc, out, _ = run([command, "--help"], capsys)
  assert rc == 0
  assert out.startswith(f"usage: python -m prep {command}")
  assert f"python -m prep {command}" in out.split("examples:")[1]


def test_top_level_help_lists_commands(capsys):
  rc, out, _ = run(["--help"], capsys)
  assert rc == 0 and all(c in out for c in COMMANDS)


def test_zones_lists_the_table(raw, capsys):
  rc, out, _ = run(["zones", "--zones-csv", raw / "zones.csv"], capsys)
  lines = out.splitlines()
  assert rc == 0 and len(lines) == 5
  assert lines[0].split() == ["id", "region", "EPSG", "centre", "(lat,", "lon)",
                              "cropland", "source"]
  z = Z.read_zones(raw / "zones.csv")[0]
  assert lines[1].split() == [z.zone_id, z.region, "32631", f"{z.center_lat:.4f},",
                              f"{z.center_lon:.4f}", f"{z.cropland_fraction:.2f}", "demo"]
  rc, out, _ = run(["zones", "--list"], capsys)
  table, note = out.split("\n\n")
  assert rc == 0 and len(table.splitlines()) == 41 and "chartres_0" in table
  # The committed zones are a layout around each town until WorldCover selects them.
  assert note.startswith("40 of 40 zones are provisional (fallback-cross:")
  assert "`python -m prep zones --select` (Earth Engine) replaces them" in note


def test_python_dash_m_prep_exits_2_without_traceback(tmp_path):
  res = subprocess.run([sys.executable, "-m", "prep", "labels", "--rpg",
                        tmp_path / "missing.gpkg", "--zones", "chartres_0",
                        "--out", tmp_path], capture_output=True, text=True)
  assert res.returncode == 2
  assert res.stderr.strip() == f"error: {tmp_path / 'missing.gpkg'}: RPG file not found"


COMMAND_CHOICES = "'zones', 'gee', 'composite', 'stac', 'beam', 'labels', 'points', 'demo'"


@pytest.mark.parametrize("argv, expected", [
    ([], "the following arguments are required: command"),
    (["zone"], f"argument command: invalid choice: 'zone' (choose from {COMMAND_CHOICES})"),
    (["labels", "--zones", "chartres_0", "--out", "x"],
     "the following arguments are required: --rpg"),
    (["gee", "--out", "x"], "one of the arguments --zones --all is required"),
    (["zones", "--list", "--select"], "argument --select: not allowed with argument --list"),
    (["demo", "--out", "x", "--seed", "one"], "argument --seed: invalid int value: 'one'"),
    (["labels", "--rpg", "r.gpkg", "--all", "--out", "x", "--unknown-codes", "maybe"],
     "argument --unknown-codes: invalid choice: 'maybe' (choose from 'error', 'ignore')"),
    (["beam", "--source", "gcs", "--all", "--out", "x"],
     "argument --source: invalid choice: 'gcs' (choose from 'gee', 'scenes', 'stac')"),
    (["gee", "--all", "--out"], "argument --out: expected one argument"),
    # a misspelt required flag is named as such, not as a missing one
    (["gee", "--all", "--ot", "x"], "--ot: unknown flag (did you mean --out?)"),
    (["demo", "--out", "x", "--smal"], "--smal: unknown flag (did you mean --small?)"),  # no abbrev
    (["stac", "--all", "--out", "x", "--quiet"],
     "--quiet: unknown flag of python -m prep stac; it goes before the command "
     "(python -m prep --quiet …)"),
    (["--quite", "zones"], "--quite: unknown flag (did you mean --quiet?)"),
    (["demo", "--out", "x", "stray"],
     "unexpected argument(s) stray: every option is a --flag (see --help)"),
])
def test_bad_argument_is_one_line(argv, expected, tmp_path, monkeypatch, capsys):
  monkeypatch.chdir(tmp_path)
  rc, out, err = run(argv, capsys)
  assert_error(rc, err, expected)
  assert out == "" and list(tmp_path.iterdir()) == []


def test_help_beside_a_mistake_of_a_command(capsys):
  rc, out, err = run(["gee", "--bogus", "--help"], capsys)
  assert rc == 0 and err == "" and out.startswith("usage: python -m prep gee")


def test_unknown_zone_id(raw, capsys):
  rc, _, err = run(["labels", "--rpg", raw / "rpg_demo.gpkg", "--zones", "nowhere_9",
                    "--out", raw.parent / "z"], capsys)
  assert_error(rc, err, "unknown zone id(s) ['nowhere_9']; known: auch_0, auch_1, auch_2, "
               "auch_3, auch_4, beziers_0, beziers_1, beziers_2, beziers_3, beziers_4, "
               "carpentras_0, carpentras_1…")


def test_missing_zones_table(tmp_path, capsys):
  rc, _, err = run(["zones", "--zones-csv", tmp_path / "none.csv"], capsys)
  assert_error(rc, err, f"{tmp_path / 'none.csv'}: zones table not found")


# --- labels route: bad RPG files ---------------------------------------------

def _rpg(raw):
  import geopandas as gpd
  return gpd.read_file(raw / "rpg_demo.gpkg", layer=RPG_LAYER)


def _labels(raw, rpg, capsys, *extra, zone="demo-north_0"):
  return run(["labels", "--rpg", rpg, "--zones", zone, "--zones-csv",
              raw / "zones.csv", "--out", raw.parent / "zones", *extra], capsys)


def test_geopackage_without_the_layer(raw, tmp_path, capsys):
  gdf = _rpg(raw)
  path = tmp_path / "layers.gpkg"
  gdf.to_file(path, layer="parcels_2023")
  gdf.to_file(path, layer="other", mode="a")
  rc, _, err = _labels(raw, path, capsys)
  assert_error(rc, err, f"{path}: layer 'PARCELLES_GRAPHIQUES' not found; layers found: "
               f"parcels_2023, other; pass --layer with one of them")
  rc, _, err = _labels(raw, path, capsys, "--layer", "nope")
  assert_error(rc, err, f"{path}: layer 'nope' not found; layers found: parcels_2023, other; "
               f"pass --layer with one of them")


def test_geopackage_without_the_fields(raw, tmp_path, capsys):
  path = tmp_path / "nofield.gpkg"
  _rpg(raw).drop(columns="CODE_CULTU").to_file(path, layer=RPG_LAYER)
  rc, _, err = _labels(raw, path, capsys)
  assert_error(rc, err, f"{path} (layer PARCELLES_GRAPHIQUES): missing field(s) CODE_CULTU; "
               f"fields found: ID_PARCEL, CODE_GROUP, CULTURE_D1, CULTURE_D2, SURF_PARC; is it "
               f"an RPG PARCELLES_GRAPHIQUES file (RPG 2.x, 2015 or later)?")


def test_rpg_in_the_wrong_crs(raw, tmp_path, capsys):
  path = tmp_path / "wgs84.gpkg"
  _rpg(raw).to_crs(4326).to_file(path, layer=RPG_LAYER)
  rc, _, err = _labels(raw, path, capsys)
  assert_error(rc, err, f"{path}: CRS is EPSG:4326, expected EPSG:2154 (Lambert-93, "
               f"metropolitan France); reproject it (ogr2ogr -t_srs EPSG:2154) or pass the "
               f"metropolitan RPG file (overseas RPG files use other CRSs)")


def test_unknown_rpg_code(raw, tmp_path, capsys):
  gdf = _rpg(raw)
  gdf.loc[gdf.index[::7], "CODE_CULTU"] = "QQQ"
  path = tmp_path / "codes.gpkg"
  gdf.to_file(path, layer=RPG_LAYER)
  rc, _, err = _labels(raw, path, capsys, "--rpg-year", "2023")
  assert_error(rc, err, "codes.gpkg: 1 RPG CODE_CULTU value(s) not in nomenclature v3 for RPG "
               "edition 2023: QQQ (1 parcel, 3.90 ha); add them to "
               "cropcontracts/data/rpg_codes_v3.csv (tier3 `ignore` to skip them) and bump the "
               "version, or pass --unknown-codes ignore to leave them unlabelled")


def test_zone_without_parcels(raw, capsys):
  rc, _, err = run(["labels", "--rpg", raw / "rpg_demo.gpkg", "--zones", "chartres_0",
                    "--out", raw.parent / "zones"], capsys)
  assert_error(rc, err, "zone chartres_0 has no RPG parcel in rpg_demo.gpkg; is it the right "
               "region/vintage?")


def test_output_folder_holding_another_zone(raw, tmp_path, capsys):
  zones = Z.read_zones(raw / "zones.csv")
  rc, out, err = _labels(raw, raw / "rpg_demo.gpkg", capsys)
  assert rc == 0 and "labels: 1 zone folder(s)" in out, err
  # Another table names a zone of another grid with the same id.
  other = tmp_path / "zones.csv"
  Z.write_zones([dataclasses.replace(zones[1], zone_id=zones[0].zone_id)], other)
  rc, _, err = run(["labels", "--rpg", raw / "rpg_demo.gpkg", "--zones",
                    zones[0].zone_id, "--zones-csv", other,
                    "--out", raw.parent / "zones"], capsys)
  z = zones[0].zone_id
  assert_error(rc, err, f"{raw.parent / 'zones' / z}: already holds zone '{z}' on another "
               f"grid; choose another output folder or delete it to write '{z}'")


def test_labels_command_writes_labels_equal_to_class_of_parcels(raw, capsys):
  from cropcontracts import zonefolder
  rc, out, err = _labels(raw, raw / "rpg_demo.gpkg", capsys, zone="demo-south_1")
  assert rc == 0, err
  folder = raw.parent / "zones" / "demo-south_1"
  zf = zonefolder.ZoneFolder(folder, zonefolder._read_meta(folder),
                             Z.read_zones(raw / "zones.csv")[3])
  table, parcels, labels = zf.parcel_table(), zf.read_parcels(), zf.read_labels()
  class_of = np.concatenate([[255], table.class_id.to_numpy()]).astype(np.uint8)
  np.testing.assert_array_equal(labels[parcels > 0], class_of[parcels][parcels > 0])
  background = int((labels == 23).sum())      # non_agricultural, outside the parcels only
  assert zf.meta["labels"]["background_pixels"] == background == (labels[parcels == 0] == 23).sum()
  assert zf.meta["labels"]["parcels"] == len(table) > 3
  assert zf.meta["labels"]["invalid_repaired"] <= 1


# --- composite route: bad scenes ---------------------------------------------

@pytest.fixture
def scenes(raw, tmp_path):
  """A private copy of the small demo's scenes (tests break them)."""
  import shutil
  return shutil.copytree(raw / "scenes", tmp_path / "scenes")


def _composite(raw, scenes, out, capsys, zone="demo-north_0"):
  return run(["composite", "--scenes", scenes, "--zones", zone, "--zones-csv",
              raw / "zones.csv", "--out", out], capsys)


def _scene(scenes, month="04"):
  return sorted(d for d in scenes.iterdir() if d.name.split("_")[2][4:6] == month)[0]


def test_composite_command_writes_imagery(raw, scenes, tmp_path, capsys):
  from cropcontracts import zonefolder
  rc, out, err = _composite(raw, scenes, tmp_path / "z", capsys)
  assert rc == 0, err
  zf = zonefolder.open_zone(tmp_path / "z" / "demo-north_0")
  assert zf.read_image().shape == (12, 48, 48, 4)


def test_truncated_geotiff_scene(raw, scenes, tmp_path, capsys):
  band = _scene(scenes) / "B04.tif"
  band.write_bytes(band.read_bytes()[: band.stat().st_size // 2])
  rc, _, err = _composite(raw, scenes, tmp_path / "z", capsys)
  assert_error(rc, err, f"{band}: unreadable (Chunk and warp failed); the file may be "
               f"truncated or corrupt — re-download scene {band.parent.name} or remove it")
  assert not (tmp_path / "z" / "demo-north_0" / "s2.tif").exists()


def test_scenes_outside_the_zone(raw, scenes, tmp_path, capsys):
  """chartres_0 (a study zone) is far from the demo scenes."""
  rc, _, err = run(["composite", "--scenes", scenes, "--zones", "chartres_0",
                    "--out", tmp_path / "z"], capsys)
  assert_error(rc, err, f"zone chartres_0: none of the 75 scenes in {scenes} is of 2023 and "
               f"covers the zone (75 of 2023, bounds (372260.0, 5361740.0, 382260.0, "
               f"5371740.0) in EPSG:32631); add scenes of that tile and year")
  assert not (tmp_path / "z" / "chartres_0").exists()


def test_scene_without_crs(raw, scenes, tmp_path, capsys):
  import rasterio
  band = _scene(scenes) / "B02.tif"
  with rasterio.open(band) as src:
    profile, data = src.profile, src.read()
  profile.pop("crs")
  band.unlink()
  with rasterio.open(band, "w", **profile) as dst:
    dst.write(data)
  rc, _, err = _composite(raw, scenes, tmp_path / "z", capsys)
  assert_error(rc, err, f"{band}: no CRS; re-download scene {band.parent.name}")


def test_corrupt_jp2_scene(raw, scenes, tmp_path, capsys):
  safe = scenes / ("S2A_MSIL2A_20230415T105031_N0509_R051_T31UCP_"
                   "20230415T162036.SAFE")
  img = safe / "GRANULE" / "L2A_T31UCP_A040000_20230415T105031" / "IMG_DATA"
  for res, names in (("R10m", ("B02", "B03", "B04", "B08")), ("R20m", ("SCL",))):
    (img / res).mkdir(parents=True)
    for b in names:
      (img / res / f"T31UCP_20230415T105031_{b}_{res[1:]}.jp2").write_bytes(
          b"\x00\x00\x00\x0cjP  \r\n\x87\n" + b"garbage" * 50)
  rc, _, err = _composite(raw, scenes, tmp_path / "z", capsys)
  assert_error(rc, err, f"{img / 'R10m' / 'T31UCP_20230415T105031_B02_10m.jp2'}: unreadable "
               f"(No code-stream in JP2 file); the file may be truncated or corrupt — "
               f"re-download scene {safe.name[:-len('.SAFE')]} or remove it")


def test_scene_missing_a_band(raw, scenes, tmp_path, capsys):
  d = _scene(scenes, "07")
  (d / "B03.tif").unlink()
  rc, _, err = _composite(raw, scenes, tmp_path / "z", capsys)
  assert_error(rc, err, f"{d / 'B03.tif'}: scene {d.name} lacks this band; re-download the "
               f"scene or remove its folder")


def test_month_without_scene_is_gap_filled_with_a_warning(raw, scenes, tmp_path, capsys):
  import shutil
  from cropcontracts import zonefolder
  for d in list(scenes.iterdir()):
    if d.name.split("_")[2][4:6] == "03":
      shutil.rmtree(d)
  rc, _, err = _composite(raw, scenes, tmp_path / "z", capsys)
  assert rc == 0
  assert err.strip() == ("warning: zone demo-north_0: no scene in 2023-03; these months "
                         "are gap filled from their neighbours")
  zf = zonefolder.open_zone(tmp_path / "z" / "demo-north_0")
  assert zf.meta["imagery"]["months_without_scene"] == ["2023-03"]
  assert (zf.read_valid_count()[2] == 0).all() and (zf.read_image()[2] > 0).all()


def test_no_scene_of_the_year(raw, scenes, tmp_path, capsys):
  rc, _, err = run(["composite", "--scenes", scenes, "--zones", "demo-north_0",
                    "--zones-csv", raw / "zones.csv", "--out", tmp_path / "z",
                    "--year", "2021"], capsys)
  assert_error(rc, err, f"zone demo-north_0: none of the 75 scenes in {scenes} is of 2021 and "
               f"covers the zone (0 of 2021, bounds (390150.0, 5349390.0, 390630.0, "
               f"5349870.0) in EPSG:32631); add scenes of that tile and year")


def test_scene_folder_missing(raw, tmp_path, capsys):
  rc, _, err = _composite(raw, tmp_path / "nope", tmp_path / "z", capsys)
  assert_error(rc, err, f"{tmp_path / 'nope'}: scene folder not found")


def test_composite_into_a_folder_holding_another_zone(raw, scenes, tmp_path, capsys):
  zones = Z.read_zones(raw / "zones.csv")
  rc, _, err = _composite(raw, scenes, tmp_path / "z", capsys)
  assert rc == 0, err
  other = tmp_path / "zones.csv"
  Z.write_zones([dataclasses.replace(zones[1], zone_id=zones[0].zone_id)], other)
  rc, _, err = run(["composite", "--scenes", scenes, "--zones", zones[0].zone_id,
                    "--zones-csv", other, "--out", tmp_path / "z"], capsys)
  z = zones[0].zone_id
  assert_error(rc, err, f"{tmp_path / 'z' / z}: already holds zone '{z}' on another grid; "
               f"choose another output folder or delete it to write '{z}'")


def test_demo_command_prints_where_outputs_are(small_demo, tmp_path, capsys):
  d = private_copy(small_demo, tmp_path)      # made: the command finds it whole and prints
  rc, out, err = run(["demo", "--out", d, "--small"], capsys)
  assert rc == 0, err
  assert f"demo zone folders: {d / 'zones'} (4 zones)" in out
  rc, _, err = run(["demo", "--out", d, "--small", "--seed", "2"], capsys)
  assert_error(rc, err, f"{d / 'raw'}: holds a demo made with seed=0 small=True, "
               f"not seed=2 small=True; choose another output folder or delete it")


# --- Earth Engine routes (offline: Earth Engine mocked) -----------------------

def test_gee_runs_every_zone_into_its_folder(raw, tmp_path, monkeypatch, capsys):
  from prep import gee
  calls = []
  monkeypatch.setattr(gee, "composite_zone_from_gee", lambda zone, folder, **kw:
                      calls.append((zone.zone_id, folder, kw)) or {})
  projects = []
  monkeypatch.setattr(gee, "initialize", projects.append)
  rc, out, err = run(["gee", "--all", "--zones-csv", raw / "zones.csv", "--out",
                      tmp_path, "--year", "2022", "--project", "my-proj", "--workers", "5"],
                     capsys)
  assert rc == 0, err
  calls.sort(key=lambda c: c[0])                   # two zones in flight: any order
  assert [c[0] for c in calls] == ["demo-north_0", "demo-north_1", "demo-south_0",
                                   "demo-south_1"]
  assert calls[2][1] == tmp_path / "demo-south_0"
  assert projects == ["my-proj"]                   # once for the run, not per zone
  pool = calls[0][2].pop("pool")
  assert pool.workers == 5 and all(c[2].pop("pool") is pool for c in calls[1:])
  assert calls[0][2] == dict(year=2022, progress=False, overwrite=False)
  assert out.strip() == f"gee composites: 4 zone folder(s) under {tmp_path}"


def test_gee_without_credentials_is_one_line(tmp_path, monkeypatch, capsys):
  import ee

  def no_credentials(*a, **k):
    raise ee.EEException("Please authorize access to your Earth Engine account by "
                         "running\n\nearthengine authenticate\n")
  monkeypatch.setattr(ee, "Initialize", no_credentials)
  monkeypatch.delenv("JAXCROP_EE_KEY", raising=False)
  monkeypatch.delenv("JAXCROP_EE_PROJECT", raising=False)
  rc, _, err = run(["gee", "--zones", "chartres_0", "--out", tmp_path], capsys)
  assert_error(rc, err, "Earth Engine: cannot initialize (project=None): Please authorize "
               "access to your Earth Engine account by running; run `earthengine "
               "authenticate` (or set JAXCROP_EE_KEY to a service-account key JSON) and set "
               "JAXCROP_EE_PROJECT to your Google Cloud project")
  assert not (tmp_path / "chartres_0" / "s2.tif").exists()


def test_zones_select_writes_the_table(raw, tmp_path, monkeypatch, capsys):
  from prep import select_zones
  chosen = Z.read_zones(raw / "zones.csv")[:3]
  seen = {}
  monkeypatch.setattr(select_zones, "select_zones",
                      lambda **kw: seen.update(kw) or chosen)
  rc, out, err = run(["zones", "--select", "--out", tmp_path / "z.csv"], capsys)
  assert rc == 0, err
  assert Z.read_zones(tmp_path / "z.csv") == chosen
  assert seen == dict(progress=False, project=None, seed=0)
  assert out.strip() == f"wrote 3 zones to {tmp_path / 'z.csv'}"
  rc, out, err = run(["zones", "--select", "--seed", "7", "--out", tmp_path / "z.csv"], capsys)
  assert rc == 0 and seen["seed"] == 7, err


# --- python -m jaxcrop.train | evaluate | cv (jaxcrop.cli) ---------------------

def _jaxcrop(name):
  import importlib
  return importlib.import_module(f"jaxcrop.{name}")


@pytest.mark.parametrize("name", ["train", "evaluate", "cv"])
def test_every_jaxcrop_flag_is_explained(name):
  parser = _jaxcrop(name).build_parser()
  for action in parser._actions:       # pylint: disable=protected-access
    assert action.help and len(action.help) > 20, action.option_strings


def test_switches_and_their_0_2_spellings(capsys):
  parser = _jaxcrop("evaluate").build_parser()
  assert parser.parse_args(["--workdir", "w"]).baseline is True
  assert parser.parse_args(["--workdir", "w", "--no-baseline"]).baseline is False
  assert capsys.readouterr().err == ""
  for old, new, value in (("--nobaseline", "--no-baseline", False),
                          ("--baseline=false", "--no-baseline", False),
                          ("--baseline=1", "--baseline", True)):
    assert parser.parse_args(["--workdir", "w", old]).baseline is value
    assert capsys.readouterr().err == f"notice: {old} is deprecated, use {new}\n"
  assert _jaxcrop("cv").build_parser().parse_args(["--noretrain"]).retrain is False
  train = _jaxcrop("train").build_parser()
  assert train.parse_args([]).multihost is False
  assert train.parse_args(["--multihost"]).multihost is True
  assert train.parse_args(["--nomultihost"]).multihost is False
  assert capsys.readouterr().err == ("notice: --noretrain is deprecated, use --no-retrain\n"
                                     "notice: --nomultihost is deprecated, use --no-multihost\n")


def test_an_old_spelling_carries_on_after_its_notice(tmp_path, capsys):
  """The whole stderr of a 0.2 command line: the notice, then the command's own line."""
  rc = _jaxcrop("evaluate").main(["--workdir", str(tmp_path / "w"), "--nobaseline"])
  assert rc == 2
  assert capsys.readouterr().err == (
      "notice: --nobaseline is deprecated, use --no-baseline\n"
      f"error: {tmp_path}/w/config.json not found: not a training workdir (run python -m "
      f"jaxcrop.train --workdir first)\n")


@pytest.mark.parametrize("name, argv, expected", [
    ("evaluate", ["--max_batches", "0"], "argument --max_batches: must be at least 1, got 0"),
    ("evaluate", ["--max_batches", "x"], "argument --max_batches: expected an integer, got 'x'"),
    ("evaluate", ["--nobaselin"], "--nobaselin: unknown flag (did you mean --no-baseline?)"),
    ("evaluate", ["-workdir", "w"], "-workdir: unknown flag (did you mean --workdir?)"),
    ("evaluate", ["--config.seed=1"], "--config.seed: unknown flag"),   # evaluate has no config
    ("evaluate", ["--baseline=maybe"], "--baseline=maybe: expected --baseline or --no-baseline"),
    ("evaluate", ["--no-baseline=1"],
     "argument --baseline/--no-baseline: ignored explicit argument '1'"),
    ("cv", ["--workdir", "w", "--", "x"],
     "unexpected argument(s) -- x: every option is a --flag (see --help)"),
    ("train", ["--config"], "argument --config: expected one argument"),
])
def test_jaxcrop_argument_mistakes_are_one_line(name, argv, expected, capsys):
  rc = _jaxcrop(name).main(argv)
  assert rc == 2
  assert capsys.readouterr().err == f"error: {expected}\n"     # no usage dump


def test_config_overrides_with_a_space_apply_in_order():
  parser = _jaxcrop("train").build_parser()
  args = parser.parse_args(["--config", "configs/hybrid.py:tiny", "--config.optimizer.lr",
                            "-0.5", "--config.seed=1", "--workdir", "w", "--config.seed", "2"])
  assert args.config.optimizer.lr == -0.5 and args.config.seed == 2 and args.workdir == "w"
  assert parser.parse_args(["--workdir", "w"]).config is None


# --- cropcontracts.cli: the parser of every command line ---------------------

def _tool() -> base.ArgumentParser:
  """A command with a flag of its own and two subcommands."""
  p = base.ArgumentParser("tool", "A tool.\n\n  tool sub --size N")
  p.add_argument("--verbose", action="store_true")
  sub = p.add_subparsers(dest="command", required=True, metavar="command")
  s = sub.add_parser("sub", description="One line of prose that is long enough to be wrapped "
                                        "to the terminal's width by argparse, as before.")
  s.add_argument("--size", type=int, required=True)
  s.add_argument("--name", choices=("a", "b"), default="a")
  sub.add_parser("other").add_argument("--seed", type=int, default=0)
  return p


def test_subcommands_are_parsers_of_the_same_kind():
  p = _tool()
  args = p.parse_args(["--verbose", "sub", "--size", "3"])
  assert (args.verbose, args.command, args.size, args.name) == (True, "sub", 3, "a")
  assert p.parse_args(["other"]).seed == 0
  with pytest.raises(UserError, match=r"^argument --name: invalid choice: 'c' \(choose from "
                                      r"'a', 'b'\)$"):
    p.parse_args(["sub", "--size", "3", "--name", "c"])
  with pytest.raises(UserError, match=r"^--seed: unknown flag$"):   # another subcommand's
    p.parse_args(["sub", "--size", "3", "--seed", "1"])
  with pytest.raises(UserError, match=r"^--nme: unknown flag \(did you mean --name\?\)$"):
    p.parse_args(["sub", "--size", "3", "--nme", "b"])


def test_a_misspelt_required_flag_leaves_the_parser_as_it_was():
  p = _tool()
  with pytest.raises(UserError, match=r"^--szie: unknown flag \(did you mean --size\?\)$"):
    p.parse_args(["sub", "--szie", "3"])
  with pytest.raises(UserError, match=r"^the following arguments are required: --size$"):
    p.parse_args(["sub"])         # still required
  with pytest.raises(UserError, match=r"^the following arguments are required: command$"):
    p.parse_args([])


def test_main_runs_the_body_and_turns_mistakes_into_one_line(capsys):
  assert base.main(_tool(), lambda args: args.size + 1, ["sub", "--size", "6"]) == 7
  assert base.main(_tool(), lambda args: None, ["other"]) == 0
  assert base.main(_tool(), lambda args: 0, ["sub", "--size", "x"]) == 2
  assert capsys.readouterr().err == "error: argument --size: invalid int value: 'x'\n"


def test_help_keeps_written_line_breaks_and_wraps_one_line_prose(monkeypatch, capsys):
  monkeypatch.setenv("COLUMNS", "60")
  for argv in (["--help"], ["sub", "--help"]):
    with pytest.raises(SystemExit) as e:
      _tool().parse_args(argv)
    assert e.value.code == 0
  top, sub = capsys.readouterr().out.split("usage: tool sub")
  assert "\n\nA tool.\n\n  tool sub --size N\n" in top     # as written
  assert "\n\nOne line of prose that is long enough to be wrapped to the\nterminal's " in sub
  assert max(len(line) for line in sub.splitlines()) <= 58


def test_help_wins_over_a_mistake_without_subcommands(capsys):
  p = base.ArgumentParser("flat", "Flat.")
  p.add_argument("--n", type=int, required=True)
  with pytest.raises(SystemExit) as e:
    p.parse_args(["--n", "x", "--bogus", "-h"])
  assert e.value.code == 0 and capsys.readouterr().out.startswith("usage: flat [-h] --n N")
  with pytest.raises(UserError, match=r"^unexpected argument\(s\) -- -h: "):   # after --
    p.parse_args(["--n", "2", "--", "-h"])
