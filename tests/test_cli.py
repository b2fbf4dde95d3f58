"""`python -m prep`: help, the zones table, and user errors as one clean line (exit 2)."""
import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from prep import cli
from prep import demo
from prep import zones as Z

COMMANDS = ("zones", "gee", "composite", "labels", "demo")


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
  path = tmp_path_factory.mktemp("cli") / "raw"
  demo.write_raw(path, seed=0, small=True, progress=False)
  return path


def run(argv, capsys):
  """(exit status, stdout, stderr) of the CLI on argv."""
  try:
    rc = cli.main(["--quiet", *map(str, argv)])
  except SystemExit as e:   # argparse
    rc = e.code
  out, err = capsys.readouterr()
  return rc, out, err


def assert_user_error(rc, err, *fragments):
  """Exit 2 and exactly one stderr line `error: …` holding every fragment."""
  assert rc == 2, err
  lines = err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), err
  assert "Traceback" not in err
  for f in fragments:
    assert f in lines[0], (f, lines[0])


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
  assert rc == 0 and len(out.splitlines()) == 41 and "chartres_0" in out


def test_python_dash_m_prep_exits_2_without_traceback(tmp_path):
  res = subprocess.run([sys.executable, "-m", "prep", "labels", "--rpg",
                        tmp_path / "missing.gpkg", "--zones", "chartres_0",
                        "--out", tmp_path], capture_output=True, text=True)
  assert res.returncode == 2
  assert res.stderr.strip() == f"error: {tmp_path / 'missing.gpkg'}: RPG file not found"


def test_bad_argument_is_a_usage_error(capsys):
  rc, _, err = run(["labels", "--zones", "chartres_0", "--out", "x"], capsys)
  assert rc == 2 and "the following arguments are required: --rpg" in err
  rc, _, err = run(["demo", "--out", "x", "--seed", "one"], capsys)
  assert rc == 2 and "invalid int value: 'one'" in err


def test_unknown_zone_id(raw, capsys):
  rc, _, err = run(["labels", "--rpg", raw / "rpg_demo.gpkg", "--zones", "nowhere_9",
                    "--out", raw.parent / "z"], capsys)
  assert_user_error(rc, err, "unknown zone id(s) ['nowhere_9']")


def test_missing_zones_table(tmp_path, capsys):
  rc, _, err = run(["zones", "--zones-csv", tmp_path / "none.csv"], capsys)
  assert_user_error(rc, err, "none.csv: zones table not found")


# --- labels route: bad RPG files ---------------------------------------------

def _rpg(raw):
  import geopandas as gpd
  return gpd.read_file(raw / "rpg_demo.gpkg", layer=demo.RPG_LAYER)


def _labels(raw, rpg, capsys, *extra, zone="demo-north_0"):
  return run(["labels", "--rpg", rpg, "--zones", zone, "--zones-csv",
              raw / "zones.csv", "--out", raw.parent / "zones", *extra], capsys)


def test_geopackage_without_the_layer(raw, tmp_path, capsys):
  gdf = _rpg(raw)
  path = tmp_path / "layers.gpkg"
  gdf.to_file(path, layer="parcels_2023")
  gdf.to_file(path, layer="other", mode="a")
  rc, _, err = _labels(raw, path, capsys)
  assert_user_error(rc, err, "no layer PARCELLES_GRAPHIQUES not found",
                    "parcels_2023, other", "--layer")
  rc, _, err = _labels(raw, path, capsys, "--layer", "nope")
  assert_user_error(rc, err, "layer 'nope' not found")


def test_geopackage_without_the_fields(raw, tmp_path, capsys):
  path = tmp_path / "nofield.gpkg"
  _rpg(raw).drop(columns="CODE_CULTU").to_file(path, layer=demo.RPG_LAYER)
  rc, _, err = _labels(raw, path, capsys)
  assert_user_error(rc, err, "missing field(s) CODE_CULTU")


def test_rpg_in_the_wrong_crs(raw, tmp_path, capsys):
  path = tmp_path / "wgs84.gpkg"
  _rpg(raw).to_crs(4326).to_file(path, layer=demo.RPG_LAYER)
  rc, _, err = _labels(raw, path, capsys)
  assert_user_error(rc, err, "CRS is EPSG:4326, expected EPSG:2154")


def test_unknown_rpg_code(raw, tmp_path, capsys):
  gdf = _rpg(raw)
  gdf.loc[gdf.index[::7], "CODE_CULTU"] = "QQQ"
  path = tmp_path / "codes.gpkg"
  gdf.to_file(path, layer=demo.RPG_LAYER)
  rc, _, err = _labels(raw, path, capsys)
  assert_user_error(rc, err, "codes.gpkg", "not in nomenclature v1: QQQ")


def test_zone_without_parcels(raw, capsys):
  rc, _, err = run(["labels", "--rpg", raw / "rpg_demo.gpkg", "--zones", "chartres_0",
                    "--out", raw.parent / "zones"], capsys)
  assert_user_error(rc, err, "zone chartres_0 has no RPG parcel in rpg_demo.gpkg")


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
  assert_user_error(rc, err, f"already holds zone '{zones[0].zone_id}' on another grid")


def test_labels_command_writes_labels_equal_to_class_of_parcels(raw, capsys):
  from prep import zonefolder
  rc, out, err = _labels(raw, raw / "rpg_demo.gpkg", capsys, zone="demo-south_1")
  assert rc == 0, err
  folder = raw.parent / "zones" / "demo-south_1"
  zf = zonefolder.ZoneFolder(folder, zonefolder._read_meta(folder),
                             Z.read_zones(raw / "zones.csv")[3])
  table, parcels, labels = zf.parcel_table(), zf.read_parcels(), zf.read_labels()
  class_of = np.concatenate([[255], table.class_id.to_numpy()]).astype(np.uint8)
  np.testing.assert_array_equal(labels, class_of[parcels])
  assert zf.meta["labels"]["parcels"] == len(table) > 3
  assert zf.meta["labels"]["invalid_repaired"] <= 1
