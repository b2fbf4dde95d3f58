"""prep points: point tables -> points folders (prep/points.py, cropcontracts/pointfolder.py)."""
import json

import numpy as np
import pytest

from cropcontracts import pointfolder
from prep import points as points_lib
from prep.cli import main
from tests.fixtures import assert_error, run

HEADER = "point_id,lon,lat,date,B02,B03,B04,B08,class_name,group"
# Point a (winter wheat): two January values and a cloud (0), a March value and
# one with a band at 0 (not valid), February empty. Point b (maize): three June
# values. Point c: clouds only, dropped.
ROWS = """\
a,1.5,48.4,2023-01-05,100,200,300,400,winter_wheat,g1
a,1.5,48.4,2023-01-20,110,210,310,410,winter_wheat,g1
a,1.5,48.4,2023-01-25,0,0,0,0,winter_wheat,g1
a,1.5,48.4,2023-03-10,200,300,400,500,winter_wheat,g1
a,1.5,48.4,2023-03-12,900,0,900,900,winter_wheat,g1
b,1.6,48.5,2023-06-01,50,60,70,80,maize,g2
b,1.6,48.5,2023-06-11,1000,1000,1000,1000,maize,g2
b,1.6,48.5,2023-06-21,70,70,70,70,maize,g2
c,1.7,48.6,2023-05-01,0,0,0,0,winter_wheat,g1
"""
# By hand: a's January is the mean of its two middle values rounded half up,
# (100 + 110 + 1) // 2 = 105 …; February the mean of January and March, rounded
# half up, (105 + 200) / 2 = 152.5 -> 153 …; April to December repeat March.
# b's June is the per-band median of three: 70 70 70 80; every month repeats it.
JAN, MAR = [105, 205, 305, 405], [200, 300, 400, 500]
FEB = [153, 253, 353, 453]
A = np.array([JAN, FEB] + [MAR] * 10, np.uint16)
B = np.array([[70, 70, 70, 80]] * 12, np.uint16)


def _write(tmp_path, text, name="t.csv"):
  path = tmp_path / name
  path.write_text(text)
  return path


def test_hand_made_table_composites_and_folder(tmp_path, capsys):
  table = _write(tmp_path, HEADER + "\n" + ROWS)
  rc, out, err = run(main, ["points", "--table", table, "--year", 2023,
                            "--out", tmp_path / "pts"], capsys)
  assert rc == 0, err
  assert "2 of 3 points; dropped 1 without any valid value" in out
  pf = pointfolder.open_points(tmp_path / "pts")
  assert pf.point_ids == ["a", "b"] and pf.groups == ["g1", "g2"]
  np.testing.assert_array_equal(pf.image, np.stack([A, B]))
  np.testing.assert_array_equal(pf.valid_count[0], [2, 0, 1] + [0] * 9)
  np.testing.assert_array_equal(pf.valid_count[1], [0] * 5 + [3] + [0] * 6)
  assert pf.label.tolist() == [0, 5]             # winter_wheat, maize in v3
  assert pf.meta["format"] == "jaxcrop-points/1" and pf.nomenclature == "v3"
  assert pf.meta["counts"] == dict(rows=9, points=3, kept=2, dropped_no_valid=1,
                                   dropped_unlabelled=0, other_years=0)
  assert pf.meta["class_counts"] == {"winter_wheat": 1, "maize": 1}
  assert pf.months[0] == "2023-01" and pf.bands == ["B2", "B3", "B4", "B8"]


def test_wide_table_codes_and_years_give_the_same_composites(tmp_path):
  cols = ",".join(points_lib.WIDE)
  # The wide row holds a's monthly values with February empty (a gap) and b's June only.
  a_months = A.copy()
  a_months[1] = 0
  b_months = np.zeros_like(B)
  b_months[5] = B[5]
  row = lambda pid, m, code: (f"{pid},1.5,48.4,{code},2023,2023,"
                              + ",".join(str(v) for v in m.T.ravel()))
  text = "\n".join([f"point_id,lon,lat,code_cultu,rpg_edition,year,{cols}",
                    row("a", a_months, "BTH"), row("b", b_months, "MIS"),
                    row("old", b_months, "MIS").replace(",2023,2023,", ",2022,2022,")]) + "\n"
  meta = points_lib.make_points(_write(tmp_path, text), 2023, tmp_path / "pts")
  pf = pointfolder.open_points(tmp_path / "pts")
  np.testing.assert_array_equal(pf.image, np.stack([A, B]))
  assert pf.label.tolist() == [0, 5] and pf.meta["source"]["shape"] == "wide"
  assert meta["counts"]["other_years"] == 1 and pf.groups == ["", ""]


def _error(tmp_path, capsys, text, name="t.csv"):
  table = _write(tmp_path, text, name)
  rc, _, err = run(main, ["points", "--table", table, "--year", 2023,
                          "--out", tmp_path / "pts"], capsys)
  assert not (tmp_path / "pts").exists()
  return rc, err, table


@pytest.mark.parametrize("case", ["missing", "names", "codes", "duplicate", "date",
                                  "band", "two_labels"])
def test_table_mistakes_are_one_line_naming_file_and_column(tmp_path, capsys, case):
  rows = ROWS
  header = HEADER
  if case == "missing":
    header = header.replace(",B04", "")
    rows = "\n".join(",".join(r.split(",")[:6] + r.split(",")[7:]) for r in
                     rows.splitlines()) + "\n"
  elif case == "names":
    rows = rows.replace("maize", "corn").replace("c,1.7,48.6,2023-05-01,0,0,0,0,winter_wheat",
                                                 "c,1.7,48.6,2023-05-01,0,0,0,0,wheat")
  elif case == "codes":
    header = header.replace("class_name", "code_cultu")
    rows = rows.replace("winter_wheat", "BTH").replace("maize", "XYZ")
  elif case == "duplicate":
    rows += "b,1.6,48.5,2023-06-11,1,1,1,1,maize,g2\n"
  elif case == "date":
    rows = rows.replace("2023-06-21", "2024-06-21")
  elif case == "band":
    rows = rows.replace("1000,1000,1000,1000", "1000,1000,n/a,1000")
  elif case == "two_labels":
    rows = rows.replace("2023-01-20,110,210,310,410,winter_wheat", "2023-01-20,110,210,310,410,maize")
  rc, err, t = _error(tmp_path, capsys, header + "\n" + rows)
  expected = {
      "missing": f"{t}: long point table lacks column(s) B04 (docs/points.md)",
      "names": f"{t}: column class_name: 2 name(s) not in nomenclature v3: corn (3 rows), "
               f"wheat (1 row); the names are the tier3 column of "
               f"cropcontracts/data/classes_v3.csv",
      "codes": f"{t}: column code_cultu: 1 code(s) not in nomenclature v3 for their "
               f"rpg_edition: XYZ in 2023 (3 rows); add them to "
               f"cropcontracts/data/rpg_codes_v3.csv or fix rpg_edition",
      "duplicate": f"{t}: column point_id: 1 duplicate point_id, date row(s), e.g. "
                   f"('b', '2023-06-11'); keep one row per point_id, date",
      "date": f"{t}: column date: 1 row(s) outside 2023, e.g. row 9 (2024-06-21); "
              f"composites are of one year (--year)",
      "band": f"{t}: column B04, row 8: 'n/a' is not a number in [0, 65535]",
      "two_labels": f"{t}: column class_name: point a has several values "
                    f"(['maize', 'winter_wheat']); one per point",
  }[case]
  assert_error(rc, err, expected)


def test_a_table_not_found_and_an_old_folder_format(tmp_path, capsys):
  rc, _, err = run(main, ["points", "--table", tmp_path / "no.csv", "--year", 2023,
                          "--out", tmp_path / "pts"], capsys)
  assert_error(rc, err, f"{tmp_path / 'no.csv'}: point table not found")
  table = _write(tmp_path, HEADER + "\n" + ROWS)
  points_lib.make_points(table, 2023, tmp_path / "pts")
  meta = json.loads((tmp_path / "pts" / "meta.json").read_text())
  (tmp_path / "pts" / "meta.json").write_text(json.dumps({**meta, "format": "jaxcrop-points/0"}))
  with pytest.raises(Exception, match="format 'jaxcrop-points/0', this code reads "
                                      "jaxcrop-points/1: rewrite it with `python -m prep points"):
    pointfolder.open_points(tmp_path / "pts")


def test_demo_points_option_mistakes_are_one_line(tmp_path, capsys, monkeypatch):
  from prep import demo
  monkeypatch.setattr(demo, "make_demo", lambda out, **kw: tmp_path)
  rc, _, err = run(main, ["-q", "demo", "--out", tmp_path / "d", "--small", "--points", -1],
                   capsys)
  assert_error(rc, err, "--points -1: a number of points, 0 or more")
  rc, _, err = run(main, ["-q", "demo", "--out", tmp_path / "d", "--small", "--points", 1000],
                   capsys)
  assert_error(rc, err, "--points 1000: the demo region has 65 labelled parcels; ask for at "
                        "most 65 points (one per parcel)")
  assert not (tmp_path / "d" / "raw" / "points.csv").exists()


def test_a_geoparquet_table_in_another_crs_reads_as_the_csv(tmp_path):
  import io
  import geopandas as gpd
  import pandas as pd
  df = pd.read_csv(io.StringIO(HEADER + "\n" + ROWS))
  df["date"] = pd.to_datetime(df["date"])
  g = gpd.GeoDataFrame(df.drop(columns=["lon", "lat"]), crs=4326,
                       geometry=gpd.points_from_xy(df.lon, df.lat)).to_crs(32631)
  g.to_parquet(tmp_path / "t.parquet")
  points_lib.make_points(tmp_path / "t.parquet", 2023, tmp_path / "pts")
  pf = pointfolder.open_points(tmp_path / "pts")
  np.testing.assert_array_equal(pf.image, np.stack([A, B]))
  assert [(r["lon"], r["lat"]) for r in pf.table] == [("1.5000000", "48.4000000"),
                                                       ("1.6000000", "48.5000000")]
