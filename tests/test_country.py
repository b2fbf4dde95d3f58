"""All of France, on the small demo: the country zone grid from the RPG."""
import json

import numpy as np
import pyogrio
import pyproj
import pytest
import shapely

from prep import cli, country
from prep import zones as zones_lib
from prep.demo import make_demo
from prep.labels import repair_geometries


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
  root = tmp_path_factory.mktemp("demo")
  make_demo(root, small=True, progress=False)
  return root


def _brute_force(rpg, side):
  """Exact parcel area per square of the UTM 31N grid, one intersection at a time."""
  g = np.asarray(pyogrio.read_dataframe(rpg, columns=[]).geometry.values, dtype=object)
  fixed, keep, _ = repair_geometries(g)
  t = pyproj.Transformer.from_crs(2154, 32631, always_xy=True)
  utm = shapely.transform(fixed[keep], lambda xy: np.stack(t.transform(*xy.T), 1))
  x0, y0, x1, y1 = shapely.total_bounds(utm)
  area = {}
  for c in range(int(x0 // side), int(x1 // side) + 1):
    for r in range(int(y0 // side), int(y1 // side) + 1):
      box = shapely.box(c * side, r * side, (c + 1) * side, (r + 1) * side)
      a = sum(shapely.intersection(p, box).area for p in utm)
      if a > 0:
        area[(c * side, (r + 1) * side)] = a / side**2
  return area


@pytest.mark.parametrize("pixels", [1000, 48])
def test_country_squares_are_the_squares_holding_parcels(demo, pixels, tmp_path):
  rpg = demo / "raw" / "rpg_demo.gpkg"
  zones, summary = country.country_zones([rpg], pixels=pixels, chunk_km=0.3,
                                         progress=False)   # many chunks: no double count
  want = _brute_force(rpg, pixels * 10.0)
  got = {(z.x0, z.y0): z.cropland_fraction for z in zones}
  assert sorted(got) == sorted(want)
  assert [got[k] for k in sorted(got)] == pytest.approx([want[k] for k in sorted(want)],
                                                        abs=2e-6)
  assert {z.epsg for z in zones} == {32631} and summary["parcels"] == 69
  assert all(z.width == z.height == pixels and z.x0 % (pixels * 10) == 0 for z in zones)
  assert len({z.zone_id for z in zones}) == len(zones)
  # every demo zone lies inside the country's squares
  demo_zones = zones_lib.read_zones(demo / "raw" / "zones.csv")
  cover = shapely.union_all([shapely.box(*z.bounds) for z in zones])
  assert all(cover.contains(shapely.box(*z.bounds)) for z in demo_zones)


def test_country_zones_on_the_10km_grid_of_the_demo(demo):
  zones, _ = country.country_zones([demo / "raw" / "rpg_demo.gpkg"], progress=False)
  # the demo region (near Chartres, UTM 31N) straddles the northing 5350 km
  assert [z.zone_id for z in zones] == ["utm31_0390_5360", "utm31_0390_5350"]
  assert zones[1].bounds == (390000.0, 5340000.0, 400000.0, 5350000.0)
  assert zones[1].center_lon == pytest.approx(1.5856, abs=1e-3)


def test_cli_writes_a_zones_table_stages_read(demo, tmp_path, capsys):
  out = tmp_path / "fr.csv"
  assert cli.main(["-q", "zones", "--country", "--rpg", str(demo / "raw" / "rpg_demo.gpkg"),
                   "--out", str(out), "--min-fraction", "0.001"]) == 0
  summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  zones = zones_lib.read_zones(out)
  assert [z.zone_id for z in zones] == ["utm31_0390_5350"]      # 0.03 % dropped
  assert summary["zones"] == 1 and summary["per_utm_zone"] == {"UTM 31N": 1}
  assert zones[0].source == "rpg-country" and zones[0].region == "UTM 31N"


def test_cli_country_needs_the_rpg(tmp_path, capsys):
  assert cli.main(["zones", "--country", "--out", str(tmp_path / "z.csv")]) == 2
  assert "zones --country needs --rpg FILE" in capsys.readouterr().err


def test_squares_belong_to_the_utm_zone_of_their_centre():
  cov = country.Coverage()
  # a 10 km square of grid 31 whose centre is west of 0 degrees East (UTM 30's band)
  # is not a zone of grid 31; the same square of grid 30 is
  lon_edge = 0.0
  t31 = pyproj.Transformer.from_crs(4326, 32631, always_xy=True)
  x, y = t31.transform(lon_edge - 0.01, 46.0)
  c, r = int(x // 10_000), int(y // 10_000)
  cov.add(31, np.array([c, c + 1]), np.array([r, r]), np.array([5e6, 5e6]))
  zones, inside = country.square_zones(cov, 10_000.0, 1000)
  assert [z.epsg for z in zones] == [32631] and zones[0].x0 == (c + 1) * 10_000
  assert country.utm_band(np.array([zones[0].center_lon]))[0] == 31 and inside == 5e6
