"""Zone-years: one zone folder per zone and year (format jaxcrop-zone/3)."""
import json

import geopandas
import numpy as np
import pytest
from shapely.geometry import box

from cropcontracts import zonefolder
from cropcontracts.errors import UserError
from prep import cli
from prep.labels import make_zone_labels
from prep.zones import zone_around, write_zones
from tests.fixtures import assert_error, run

ZONE = zone_around("chartres_test", "Paris Basin", "Chartres", 0, 1.4890, 48.4439,
                   pixels=40)


def _imagery(folder, year):
  zonefolder.write_imagery(folder, ZONE, np.ones((2, 4, 40, 40), np.uint16),
                           np.ones((2, 40, 40), np.uint8), [f"{year}-06", f"{year}-07"])


def _rpg(path):
  x0, y0 = ZONE.x0, ZONE.y0
  geopandas.GeoDataFrame(
      [dict(ID_PARCEL="1", CODE_CULTU="BTH", CODE_GROUP="1", SURF_PARC=1.0,
            geometry=box(x0, y0 - 100, x0 + 100, y0))],
      geometry="geometry", crs=ZONE.crs).to_crs(2154).to_file(
          path, layer="PARCELLES_GRAPHIQUES", driver="GPKG")
  return path


def test_a_folder_records_its_year_and_refuses_another(tmp_path):
  folder = tmp_path / "2022" / ZONE.zone_id
  _imagery(folder, 2022)
  meta = json.loads((folder / "meta.json").read_text())
  assert (meta["format"], meta["year"]) == ("jaxcrop-zone/3", 2022)
  assert zonefolder.open_zone(folder).year == 2022
  with pytest.raises(UserError, match=(
      rf"^{folder}: holds zone-year 2022, not 2023; write the composites of 2023 into a "
      rf"folder of 2023's zone folders \(e.g. {tmp_path / '2023' / ZONE.zone_id}\)$")):
    _imagery(folder, 2023)
  _imagery(folder, 2022)                      # the same year: a rerun


def test_format_2_folders_are_read_with_the_year_of_their_months(tmp_path):
  _imagery(tmp_path / "z", 2021)
  meta = json.loads((tmp_path / "z" / "meta.json").read_text())
  del meta["year"]
  meta["format"] = "jaxcrop-zone/2"
  (tmp_path / "z" / "meta.json").write_text(json.dumps(meta))
  z = zonefolder.open_zone(tmp_path / "z")
  assert (z.format, z.year) == ("jaxcrop-zone/2", 2021)
  _imagery(tmp_path / "z", 2021)              # rewritten: format 3, with its year
  meta = json.loads((tmp_path / "z" / "meta.json").read_text())
  assert (meta["format"], meta["year"]) == ("jaxcrop-zone/3", 2021)


def test_labels_of_another_edition_are_refused_naming_the_file(tmp_path):
  rpg = _rpg(tmp_path / "RPG_2022.gpkg")
  _imagery(tmp_path / "2023" / "z", 2023)
  with pytest.raises(UserError, match=(
      rf"^RPG_2022.gpkg: RPG edition 2022 \(file name\) does not match the zone-year 2023 "
      rf"of {tmp_path / '2023' / 'z'}; label the folders of 2022 \(--out <root>/2022\) or "
      rf"pass the RPG of 2023$")):
    make_zone_labels(rpg, ZONE, tmp_path / "2023" / "z", progress=False)
  with pytest.raises(UserError, match=r"^RPG_2022.gpkg: RPG edition 2022 \(file name\) does "
                                      r"not match --year 2023; pass the RPG of 2023"):
    make_zone_labels(rpg, ZONE, tmp_path / "new", progress=False, year=2023)
  assert not (tmp_path / "new").exists()       # refused before anything is written
  info = make_zone_labels(rpg, ZONE, tmp_path / "2022" / "z", progress=False, year=2022)
  assert (info["rpg_edition"], info["rpg_edition_from"]) == (2022, "file name")
  with pytest.raises(UserError, match="holds zone-year 2022, not 2023"):
    _imagery(tmp_path / "2022" / "z", 2023)   # labels first: the edition is the year
  plain = _rpg(tmp_path / "parcels.gpkg")     # no year in the name: --year is the edition
  info = make_zone_labels(plain, ZONE, tmp_path / "y", progress=False, year=2019)
  assert (info["rpg_edition"], info["rpg_edition_from"]) == (2019, "--year")


def test_cli_labels_year_mismatch_is_one_line(tmp_path, capsys):
  rpg = _rpg(tmp_path / "RPG_2022.gpkg")
  write_zones([ZONE], tmp_path / "zones.csv")
  rc, _, err = run(cli.main, ["-q", "labels", "--rpg", rpg, "--all", "--zones-csv",
                              tmp_path / "zones.csv", "--out", tmp_path / "2023",
                              "--year", "2023"], capsys)
  assert_error(rc, err, "RPG_2022.gpkg: RPG edition 2022 (file name) does not match --year "
                        "2023; pass the RPG of 2023 (or --rpg-year when the file name is "
                        "wrong)")
