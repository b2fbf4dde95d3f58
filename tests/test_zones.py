"""The zone grid: UTM zone, snapping to the Sentinel-2 10 m grid, the zones table, finding
zone folders."""
import math

import numpy as np
import pytest

from prep import zones as Z
from cropcontracts import zonefolder, zonetable
from cropcontracts.errors import UserError


def test_utm_epsg_of_study_towns():
  assert Z.utm_epsg(1.489, 48.44) == 32631    # Chartres: 0°E-6°E
  assert Z.utm_epsg(-1.21, 48.12) == 32630    # Vitré: 6°W-0°
  assert Z.utm_epsg(7.36, 48.08) == 32632     # Colmar: 6°E-12°E
  assert Z.utm_epsg(-70.0, -33.0) == 32719    # southern hemisphere
  with pytest.raises(UserError):
    Z.utm_epsg(0.0, 85.0)


def test_zone_around_is_on_the_10m_grid_and_contains_its_centre():
  z = Z.zone_around("t_0", "R", "T", 0, 1.489, 48.44, pixels=1000)
  assert z.epsg == 32631
  assert z.x0 % 10 == 0 and z.y0 % 10 == 0
  left, bottom, right, top = z.bounds
  assert (right - left, top - bottom) == (10_000.0, 10_000.0)
  import pyproj
  x, y = pyproj.Transformer.from_crs(4326, 32631, always_xy=True).transform(1.489, 48.44)
  assert abs((left + right) / 2 - x) <= 5 and abs((bottom + top) / 2 - y) <= 5
  assert z.transform @ (0, 0) == (z.x0, z.y0)
  assert z.transform @ (1000, 1000) == (right, bottom)


def test_study_table_has_40_zones_8_regions_non_overlapping():
  zones = Z.read_zones()
  assert len(zones) == 40
  by_region = {}
  for z in zones:
    by_region.setdefault(z.region, []).append(z)
    assert (z.width, z.height, z.res) == (1000, 1000, 10.0)
    assert z.x0 % 10 == 0 and z.y0 % 10 == 0
    assert z.epsg == Z.utm_epsg(z.center_lon, z.center_lat)
  assert len(by_region) == 8
  for zs in by_region.values():
    assert sorted(z.index for z in zs) == [0, 1, 2, 3, 4]
    for a in zs:
      for b in zs:
        if a is b:
          continue
        al, ab, ar, at = a.bounds
        bl, bb, br, bt = b.bounds
        assert ar <= bl or br <= al or at <= bb or bt <= ab, (a.zone_id, b.zone_id)


def test_bounds_in_lambert93_contain_the_zone(tmp_path):
  z = Z.read_zones()[0]
  l, b, r, t = z.bounds_in("EPSG:2154")
  import pyproj
  tr = pyproj.Transformer.from_crs(z.epsg, 2154, always_xy=True)
  xs = np.linspace(z.bounds[0], z.bounds[2], 7)
  ys = np.linspace(z.bounds[1], z.bounds[3], 7)
  X, Y = tr.transform(*np.meshgrid(xs, ys))
  assert X.min() >= l - 1e-6 and X.max() <= r + 1e-6
  assert Y.min() >= b - 1e-6 and Y.max() <= t + 1e-6


def test_zones_table_round_trip_and_errors(tmp_path):
  zs = Z.read_zones()[:3]
  p = tmp_path / "z.csv"
  Z.write_zones(zs, p)
  back = Z.read_zones(p)
  assert [z.zone_id for z in back] == [z.zone_id for z in zs]
  assert back[1].x0 == zs[1].x0 and math.isnan(back[1].cropland_fraction)
  Z.write_zones(zs + zs[:1], p)
  with pytest.raises(UserError, match="duplicate zone ids"):
    Z.read_zones(p)
  with pytest.raises(UserError, match="unknown zone id"):
    Z.select(zs, ["nowhere_9"])
  with pytest.raises(UserError, match="not found"):
    Z.read_zones(tmp_path / "missing.csv")


def test_prep_reads_and_writes_zones_tables_with_the_one_reader(tmp_path):
  assert Z.write_zones is zonetable.write_zones
  zs = Z.read_zones()[:2]
  zonetable.write_zones(zs, tmp_path / "z.csv")
  key = lambda zones: [(z.zone_id, z.epsg, z.x0, z.y0, z.center_lon) for z in zones]
  assert key(Z.read_zones(tmp_path / "z.csv")) == key(zonetable.read_zones(tmp_path / "z.csv"))
  assert key(zonetable.read_zones(tmp_path / "z.csv")) == key(zs)
  (tmp_path / "bad.csv").write_text("zone_id;region\nx_0;r\n")
  with pytest.raises(UserError, match=r"bad.csv: zones table is ;-separated"):
    Z.read_zones(tmp_path / "bad.csv")


def test_zone_paths_finds_folders_without_opening_them(tmp_path):
  """A folder with a meta.json is a zone folder to find; only open_zone reads it
  (here it would refuse: the imagery stage never ran)."""
  for name in ("b_1", "a_0"):
    (tmp_path / "zones" / name).mkdir(parents=True)
    (tmp_path / "zones" / name / "meta.json").write_text("{}")
  (tmp_path / "zones" / "notes").mkdir()
  (tmp_path / "one_2").mkdir()
  (tmp_path / "one_2" / "meta.json").write_text("{}")
  found = zonefolder.zone_paths([tmp_path / "zones", tmp_path / "one_2"])
  assert found == {"a_0": tmp_path / "zones" / "a_0", "b_1": tmp_path / "zones" / "b_1",
                   "one_2": tmp_path / "one_2"}
  with pytest.raises(UserError, match=r"a_0: no meta.json; run `python -m prep composite`"):
    zonefolder.resolve_zones([tmp_path / "zones"])
  with pytest.raises(UserError, match=r"notes: holds no zone folder \(no \*/meta.json\)"):
    zonefolder.zone_paths([tmp_path / "zones" / "notes"])
  with pytest.raises(UserError, match=r"nowhere: folder of zone folders does not exist"):
    zonefolder.zone_paths([tmp_path / "nowhere"])
