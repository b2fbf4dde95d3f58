"""All of France, on the small demo: the country zone grid from the RPG."""
import json

import numpy as np
import pyogrio
import pyproj
import pytest
import shapely

from prep import cli, country
from prep import zones as zones_lib
from prep.labels import repair_geometries
from cropcontracts.errors import UserError


@pytest.fixture(scope="module")
def demo(small_demo):
  """The session's small demo (read-only): raw/ and zones/."""
  return small_demo


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
  from tests.fixtures import assert_error
  rc = cli.main(["zones", "--country", "--out", str(tmp_path / "z.csv")])
  assert_error(rc, capsys.readouterr().err,
               "zones --country needs --rpg FILE (the RPG PARCELLES_GRAPHIQUES file)")


def _meridian_parcels():
  """200 m square parcels (EPSG:2154) on a grid of points astride 0 degrees East."""
  to_l93 = pyproj.Transformer.from_crs(4326, 2154, always_xy=True)
  lon, lat = np.meshgrid(np.linspace(-0.08, 0.08, 33), np.linspace(43.6, 49.6, 61))
  x, y = to_l93.transform(lon.ravel(), lat.ravel())
  return shapely.box(x - 100, y - 100, x + 100, y + 100), lon.ravel()


def _covered(zones, geoms):
  """bool [N]: the parcel lies inside the kept squares of one grid."""
  out = np.zeros(len(geoms), bool)
  for utm in (30, 31):
    cover = shapely.union_all([shapely.box(*z.bounds) for z in zones if z.epsg == 32600 + utm])
    out |= shapely.contains(cover, country._to_utm(geoms, utm))
  return out


def test_every_parcel_astride_a_utm_edge_is_inside_a_square_of_its_grid():
  geoms, lon = _meridian_parcels()
  band = country.parcel_utm(geoms)
  assert (band == np.where(lon < 0, 30, 31)).all()    # the point on the surface: the centre
  assert (country.parcel_utm(geoms, utms=(31, 32)) == 31).all()    # clipped to the zones
  cov = country.Coverage()
  country.add_parcels(cov, geoms, 10_000.0)
  zones, inside = country.square_zones(cov, 10_000.0, 1000)
  assert _covered(zones, geoms).all()
  assert inside == pytest.approx(cov.parcel_m2, rel=2e-3)   # each parcel once (UTM scale)
  assert {z.epsg for z in zones} == {32630, 32631}
  # A square of grid 31 may have its centre west of 0 degrees (it holds band-31 parcels).
  assert any(country.utm_band(np.array([z.center_lon]))[0] == 30 for z in zones
             if z.epsg == 32631)
  # The rule on squares alone (all parcels in both grids, a square kept when its
  # centre is in its band) leaves slivers: parcels inside no square of either grid.
  both = country.Coverage()
  for utm in (30, 31):
    country.add_parcels(both, geoms, 10_000.0, utms=(utm,))
  everything, _ = country.square_zones(both, 10_000.0, 1000)
  centre_rule = [z for z in everything
                 if country.utm_band(np.array([z.center_lon]))[0] == z.epsg - 32600]
  assert (~_covered(centre_rule, geoms)).sum() > 100


# --- maps of many zones: shares, resume

@pytest.fixture(scope="module")
def trained():
  """A stand-in checkpoint: the 1x1-conv pixel model on the demo's 12 months."""
  import types
  from tests import fixtures as pt
  _, variables = pt.init(pt.PixelModel(), t=12)
  config = types.SimpleNamespace(model={"valid_count": "none"}, data={})   # what predict reads
  return types.SimpleNamespace(config=config, model=pt.PixelModel(), variables=variables,
                               meta=pt.make_meta(t=12))


@pytest.fixture
def fake_checkpoint(trained, monkeypatch):
  import sys
  import types
  fake = types.ModuleType("jaxcrop.checkpoint")
  fake.load_trained = lambda workdir, which="best": trained
  monkeypatch.setitem(sys.modules, "jaxcrop.checkpoint", fake)


@pytest.fixture
def mapped(monkeypatch):
  """Records the ids of the zones the model maps (`tiling.ZoneMapper`)."""
  from jaxcrop.maps import tiling
  calls, real = [], tiling.ZoneMapper.__call__

  def counting(self, imagery, **kw):
    calls.append(imagery.zone_id)
    return real(self, imagery, **kw)
  monkeypatch.setattr(tiling.ZoneMapper, "__call__", counting)
  return calls


def _predict(demo, out, *extra):
  from jaxcrop import predict
  return predict.main(["--workdir", "W", "--zone", str(demo / "zones"), "--out", str(out),
                       "--tile", "32", "--overlap", "8", *extra])


def test_two_processes_map_each_zone_exactly_once(demo, tmp_path, fake_checkpoint, mapped):
  from jaxcrop.maps import runner
  for i in (0, 1):
    assert _predict(demo, tmp_path, "--process-index", str(i), "--process-count", "2") == 0
  ids = sorted(z.zone_id for z in zones_lib.read_zones(demo / "raw" / "zones.csv"))
  assert sorted(mapped) == ids and len(set(mapped)) == 4
  assert mapped[:2] == [ids[0], ids[2]] and mapped[2:] == [ids[1], ids[3]]
  assert all(runner.is_complete(tmp_path / i) for i in ids)
  assert [p.name for p in tmp_path.glob(".*")] == [".lock"]   # no partial folder left


def test_a_killed_process_resumes_without_redoing_finished_zones(demo, tmp_path,
                                                                 fake_checkpoint, mapped,
                                                                 monkeypatch):
  from jaxcrop.maps import geotiff, runner
  real = geotiff.write_outputs
  written = []

  def dies_after_one(*a, **kw):
    if written:
      raise KeyboardInterrupt                           # the kill, during the 2nd write
    written.append(real(*a, **kw))
    return written[-1]
  from jaxcrop import predict
  monkeypatch.setattr(predict, "write_outputs", dies_after_one)
  args = ("--process-index", "0", "--process-count", "1", "--resume")
  assert _predict(demo, tmp_path, *args) == 130
  first = written[0].name
  stamp = (written[0] / "classes.tif").stat().st_mtime_ns
  assert [p.name for p in tmp_path.iterdir() if runner.is_complete(p)] == [first]
  monkeypatch.setattr(predict, "write_outputs", real)
  mapped.clear()
  assert _predict(demo, tmp_path, *args) == 0
  assert first not in mapped and len(mapped) == 3        # only the unfinished zones
  assert (tmp_path / first / "classes.tif").stat().st_mtime_ns == stamp
  assert sum(runner.is_complete(p) for p in tmp_path.iterdir()) == 4
  mapped.clear()
  assert _predict(demo, tmp_path, *args) == 0 and mapped == []


def test_resume_with_tiers_redoes_zones_mapped_without_them(demo, tmp_path, fake_checkpoint,
                                                            mapped, capsys):
  from jaxcrop.maps import runner
  one = ("--process-index", "0", "--process-count", "1", "--resume")
  assert _predict(demo, tmp_path, *one) == 0 and len(mapped) == 4
  first = sorted(p for p in tmp_path.iterdir() if runner.is_complete(p))[0]
  assert not runner.is_complete(first, runner.expected_files(tiers=True))
  mapped.clear()
  capsys.readouterr()
  assert _predict(demo, tmp_path, *one, "--tiers") == 0
  assert len(mapped) == 4                                 # all four lacked the tier maps
  assert ("4 to map (4 mapped before without classes_tier1.tif, classes_tier2.tif)"
          in capsys.readouterr().err)
  for p in tmp_path.glob("[!.]*"):
    assert runner.is_complete(p, runner.expected_files(tiers=True))
  assert [p.name for p in tmp_path.glob(".*")] == [".lock"]   # the old maps are gone
  mapped.clear()
  assert _predict(demo, tmp_path, *one, "--tiers") == 0 and mapped == []
  assert _predict(demo, tmp_path, *one) == 0 and mapped == []   # tiers are extra, not wrong
  assert runner.missing_files([first], runner.expected_files(tiers=True, probs=True)) == [
      "probabilities.tif", "probabilities_tier1.tif", "probabilities_tier2.tif"]


def test_share_and_zones_table(demo, tmp_path, capsys):
  from jaxcrop.maps import runner
  assert runner.share(["c", "a", "d", "b", "e"], 1, 2) == ["b", "d"]
  with pytest.raises(UserError, match=r"--process-index 2 must be in \[0, "):
    runner.share(["a"], 2, 2)
  table = tmp_path / "z.csv"
  zones_lib.write_zones(zones_lib.read_zones(demo / "raw" / "zones.csv")[1:2], table)
  assert list(runner.zone_folders([demo / "zones"], table)) == ["demo-north_1"]
  zones_lib.write_zones([country.Zone("nowhere_0", "r", "t", 0, 32631, 0.0, 0.0)], table)
  from tests.fixtures import assert_error
  rc = _predict(demo, tmp_path / "o", "--zones-csv", str(table))
  assert_error(rc, capsys.readouterr().err, f"{table}: 1 zone(s) have no folder under "
               f"{demo / 'zones'} (first: nowhere_0); run prep for them")
  table.write_text("zone_id;region\nnowhere_0;r\n")      # the one reader: cropcontracts.zonetable
  rc = _predict(demo, tmp_path / "o", "--zones-csv", str(table))
  assert_error(rc, capsys.readouterr().err, f"{table}: zones table is ;-separated; write it "
               f"with commas (expected a CSV with columns zone_id, region, town, index, epsg, "
               f"x0, y0, width, height, res, center_lon, center_lat, cropland_fraction, source)")


def test_pipeline_overlaps_and_raises_the_first_error():
  import threading
  from jaxcrop.maps import runner
  seen, out = [], []
  lock = threading.Lock()

  def read(i):
    with lock:
      seen.append(("read", i))
    return i * 10

  n = runner.run_pipelined(range(5), read, lambda i, d: d + 1, lambda i, r: out.append(r),
                         prefetch=2)
  assert n == 5 and out == [1, 11, 21, 31, 41]

  def bad(i, d):
    if i == 2:
      raise RuntimeError("model failed")
    return d
  out.clear()
  with pytest.raises(RuntimeError, match="model failed"):
    runner.run_pipelined(range(5), read, bad, lambda i, r: out.append(r))
  assert out == [0, 10]                                  # what was done before is written


# --- the national product

@pytest.fixture(scope="module")
def maps(demo, trained, tmp_path_factory):
  """The demo zones' maps from the stand-in model (as jaxcrop.predict writes them)."""
  from cropcontracts import nomenclature
  from cropcontracts.zonefolder import find_zones
  from jaxcrop.maps import geotiff, tiling
  out = tmp_path_factory.mktemp("maps")
  apply_fn = lambda v, x: trained.model.apply(v, x)
  for z in find_zones(demo / "zones"):
    pred = tiling.predict_zone(apply_fn, trained.variables, z, trained.meta,
                               tiling.MapSettings(tile=32, overlap=8))
    geotiff.write_outputs(z, pred, nomenclature.load("v1"), out)
  return out


def test_utm_vrt_equals_the_zone_maps(maps, tmp_path):
  import rasterio
  from jaxcrop.maps import national
  found = national.zone_maps(maps)
  path = national.utm_vrt(found, "classes", tmp_path / "utm31" / "classes.vrt")
  with rasterio.open(path) as vrt:
    assert vrt.crs.to_epsg() == 32631 and vrt.res == (10.0, 10.0)
    assert vrt.tags()["NOMENCLATURE"] == "v1"
    for z, folder in found:
      with rasterio.open(folder / "classes.tif") as src:
        want = src.read(1)
      win = rasterio.windows.from_bounds(*z.bounds, transform=vrt.transform)
      np.testing.assert_array_equal(vrt.read(1, window=win), want)
    gap = vrt.read(1, window=rasterio.windows.Window(48, 0, 10, 48))   # between zones
    assert (gap == 255).all()


def test_national_cog_equals_the_zone_maps_wherever_they_cover(maps, tmp_path):
  import rasterio
  from jaxcrop.maps import national
  found = national.zone_maps(maps)
  path = national.national_cog(found, "classes", tmp_path / "fr.tif", block=50, cog_block=64)
  with rasterio.open(path) as src:
    assert src.crs.to_epsg() == 2154 and src.res == (10.0, 10.0)
    assert src.transform.c % 10 == 0 and src.overviews(1) == [2]
    france, T = src.read(1), src.transform
    assert src.colormap(1)[0][:3] != (0, 0, 0) and src.tags()["NOMENCLATURE"] == "v1"
  rr, cc = np.mgrid[:france.shape[0], :france.shape[1]]
  x, y = T.c + (cc + 0.5) * 10, T.f - (rr + 0.5) * 10
  u, v = pyproj.Transformer.from_crs(2154, 32631, always_xy=True).transform(x, y)
  want = np.full(france.shape, 255, np.uint8)
  for z, folder in found:
    with rasterio.open(folder / "classes.tif") as zsrc:
      band = zsrc.read(1)
    col, row = np.floor((u - z.x0) / 10).astype(int), np.floor((z.y0 - v) / 10).astype(int)
    inside = (col >= 0) & (col < z.width) & (row >= 0) & (row < z.height)
    want[inside] = band[row[inside], col[inside]]
  np.testing.assert_array_equal(france, want)
  assert (france != 255).sum() > 0.9 * 4 * 48 * 48 * 0.9


def test_overlapping_zones_keep_the_nearest_centre(tmp_path):
  import affine
  import rasterio
  from cropcontracts.zone import Zone
  from jaxcrop.maps import national
  a = Zone("a_0", "r", "t", 0, 2154, x0=0.0, y0=100.0, width=10, height=10)
  b = Zone("b_0", "r", "t", 0, 2154, x0=50.0, y0=100.0, width=10, height=10)
  for z, v in ((a, 1), (b, 2)):
    (tmp_path / z.zone_id).mkdir()
    with rasterio.open(tmp_path / z.zone_id / "classes.tif", "w", driver="GTiff", width=10,
                       height=10, count=1, dtype="uint8", crs=z.crs,
                       transform=z.transform) as dst:
      dst.write(np.full((1, 10, 10), v, np.uint8))
  found = [(a, tmp_path / "a_0"), (b, tmp_path / "b_0")]
  out = national.mosaic_block(found, national.zone_centres([a, b]), "classes",
                            affine.Affine(10, 0, 0, 0, -10, 100), (0, 0, 1, 16))
  # a covers x 0..100, b 50..150; centres 50 and 100: the bisector is x = 75, whose
  # pixel (a tie) keeps the first zone by id; x 150..160 is in no zone
  assert out[0].tolist() == [1] * 8 + [2] * 7 + [255]


def test_parcels_once_partitioned_by_departement(maps, tmp_path, capsys):
  import geopandas as gpd
  import pandas as pd
  from jaxcrop import mosaic as mosaic_cli
  zone_rows = pd.concat([gpd.read_file(p / "parcels.gpkg") for p in sorted(maps.iterdir())
                         if (p / "parcels.gpkg").is_file()])
  # synthetic départements: the demo region cut in two at x = 560 km (Lambert-93)
  deps = gpd.GeoDataFrame({"INSEE_DEP": ["28", "45"]}, geometry=[
      shapely.box(500_000, 6_700_000, 560_000, 6_900_000),
      shapely.box(560_000, 6_700_000, 700_000, 6_900_000)], crs=2154)
  deps.to_file(tmp_path / "dep.gpkg")
  out = tmp_path / "fr"
  assert mosaic_cli.main(["--maps", str(maps), "--out", str(out), "--departements",
                          str(tmp_path / "dep.gpkg"), "--gpkg", "-q", "--block", "64"]) == 0
  parts = sorted(p.parent.name for p in (out / "parcels").glob("*/part-0.parquet"))
  got = pd.concat([gpd.read_parquet(out / "parcels" / d / "part-0.parquet").assign(dep=d)
                   for d in parts])
  assert got.crs.to_epsg() == 2154
  assert sorted(got["ID_PARCEL"]) == sorted(set(zone_rows["ID_PARCEL"]))   # each once
  x = shapely.get_x(shapely.point_on_surface(got.geometry.values))
  assert (got["dep"] == np.where(x < 560_000, "departement=28", "departement=45")).all()
  assert len(gpd.read_file(out / "parcels.gpkg")) == len(got)
  import rasterio
  assert {p.name for p in out.iterdir()} >= {"utm31", "france_classes.tif",
                                              "france_confidence.tif", "france_validity.tif",
                                              "parcels", "areas.csv"}
  with rasterio.open(out / "france_validity.tif") as src, \
      rasterio.open(out / "france_classes.tif") as classes, \
      rasterio.open(out / "utm31" / "validity.vrt") as vrt:
    assert src.count == vrt.count == 2
    assert src.descriptions == vrt.descriptions == ("clear_acquisitions",
                                                     "gap_filled_months")
    v = src.read()
    assert ((v[0] == 255) == (classes.read(1) == 255)).all()     # evidence wherever a class is
    assert v[0][v[0] != 255].max() > 0
  # areas.csv: every classified pixel of the national COG once, in its département
  areas = pd.read_csv(out / "areas.csv", dtype={"departement": str})
  with rasterio.open(out / "france_classes.tif") as src:
    france = src.read(1)
  assert areas["pixels"].sum() == (france != 255).sum()
  assert set(areas["departement"]) <= {"28", "45", "unknown"}
  np.testing.assert_allclose(areas["area_ha"], areas["pixels"] / 100, atol=0.005)


def test_areas_per_departement_leave_the_background_out(tmp_path):
  """A hand-made national classes COG of nomenclature v3 (classes 0, 5, 23 =
  non_agricultural, nodata), split between two départements at x = 40 m."""
  import affine
  import geopandas as gpd
  import rasterio
  from cropcontracts import nomenclature
  from jaxcrop.maps import national
  from jaxcrop.maps.geotiff import class_tags
  v3 = nomenclature.load("v3")
  band = np.array([[0, 0, 23, 23, 5, 5],
                   [0, 23, 23, 255, 5, 0]], np.uint8)
  with rasterio.open(tmp_path / "fr.tif", "w", driver="GTiff", width=6, height=2, count=1,
                     dtype="uint8", crs="EPSG:2154", nodata=255,
                     transform=affine.Affine(10, 0, 0, 0, -10, 20)) as dst:
    dst.write(band, 1)
    dst.update_tags(**class_tags(v3))
  deps = gpd.GeoDataFrame({"INSEE_DEP": ["28", "45"]}, geometry=[
      shapely.box(0, 0, 40, 20), shapely.box(40, 0, 100, 20)], crs=2154)
  deps.to_file(tmp_path / "dep.gpkg")
  rows = national.class_areas(tmp_path / "fr.tif", departements=tmp_path / "dep.gpkg",
                              block=4)              # blocks of 4 px: two columns of blocks
  assert [(r["departement"], r["class_name"], r["pixels"]) for r in rows] == [
      ("28", "winter_wheat", 3), ("45", "winter_wheat", 1), ("45", "maize", 3)]
  assert rows[0]["area_ha"] == pytest.approx(0.03)
  alone = national.class_areas(tmp_path / "fr.tif")            # no layer: all `unknown`
  assert [(r["departement"], r["class_id"], r["pixels"]) for r in alone] == [
      ("unknown", 0, 4), ("unknown", 5, 3)]
  national.write_areas(alone, tmp_path / "areas.csv")
  assert (tmp_path / "areas.csv").read_text() == (
      "departement,class_id,class_name,pixels,area_ha\n"
      "unknown,0,winter_wheat,4,0.04\nunknown,5,maize,3,0.03\n")


@pytest.mark.parametrize("argv, expected", [
    ([], "the following arguments are required: --maps, --out"),
    (["--mpas", "m", "--out", "o"], "--mpas: unknown flag (did you mean --maps?)"),
    (["--maps", "m", "--out", "o", "--block", "x"], "argument --block: invalid int value: 'x'"),
    (["--maps", "m", "--out", "o", "--no-gpkg"], "--no-gpkg: unknown flag (did you mean "
                                                "--gpkg?)"),
    (["--maps", "m", "--out", "o", "fr"],
     "unexpected argument(s) fr: every option is a --flag (see --help)"),
])
def test_mosaic_argument_mistake_is_one_line(argv, expected, tmp_path, monkeypatch, capsys):
  from jaxcrop import mosaic as mosaic_cli
  from tests.fixtures import assert_error, run
  monkeypatch.chdir(tmp_path)
  rc, out, err = run(mosaic_cli.main, argv, capsys)
  assert_error(rc, err, expected)
  assert out == "" and list(tmp_path.iterdir()) == []


def test_mosaic_help(capsys):
  from jaxcrop import mosaic as mosaic_cli
  from tests.fixtures import run
  rc, out, err = run(mosaic_cli.main, ["--help"], capsys)
  assert rc == 0 and err == "" and out.startswith("usage: python -m jaxcrop.mosaic")
  assert "--departement-field DEPARTEMENT_FIELD" in out
  assert "(default: INSEE_DEP)" in " ".join(out.split())


# --- composites with Beam

def test_beam_pipeline_equals_the_one_process_route_bit_for_bit(demo, tmp_path):
  from prep import beam_composites
  out = tmp_path / "beam"
  zones = zones_lib.read_zones(demo / "raw" / "zones.csv")[::3]   # north_0, south_1
  ids = [z.zone_id for z in zones]
  assert cli.main(["-q", "beam", "--source", "scenes", "--scenes", str(demo / "raw" / "scenes"),
                   "--zones-csv", str(demo / "raw" / "zones.csv"), "--zones", *ids,
                   "--out", str(out), "--", "--runner", "DirectRunner"]) == 0
  for i in ids:                       # make_demo composited them with `prep composite`
    for f in ("s2.tif", "valid_count.tif"):
      assert (out / i / f).read_bytes() == (demo / "zones" / i / f).read_bytes(), (i, f)
    ours = json.loads((out / i / "meta.json").read_text())
    theirs = json.loads((demo / "zones" / i / "meta.json").read_text())
    assert ours["imagery"] == theirs["imagery"] and ours["zone"] == theirs["zone"]
  rows = beam_composites.read_summary(out)
  assert [r["zone_id"] for r in rows] == sorted(ids) and not any(r["skipped"] for r in rows)
  # a rerun skips the complete zones
  beam_composites.run(zones, out, source="scenes", scenes=demo / "raw" / "scenes")
  assert all(r["skipped"] for r in beam_composites.read_summary(out))


def test_beam_upload_puts_meta_json_last(tmp_path, monkeypatch):
  from prep import beam_composites
  order = []
  monkeypatch.setattr(beam_composites.atomic, "write_bytes",
                      lambda path, data: order.append(path.rsplit("/", 1)[1]))
  (tmp_path / "z").mkdir()
  for n in ("meta.json", "s2.tif", "valid_count.tif"):
    (tmp_path / "z" / n).write_text(n)
  beam_composites.upload(tmp_path / "z", "gs://b/zones/z")
  assert order == ["s2.tif", "valid_count.tif", "meta.json"]


# --- the country dry run

def test_country_projection_by_hand():
  from benchmarks import country as bc
  measured = dict(composite_s_per_px=2e-5, finish_s_per_px=1e-6, zone_bytes_per_px=50.0,
                  scene_bytes_per_px=400.0, scenes_per_zone=30, predict_s_per_px=4e-6,
                  map_bytes_per_px=2.0, measured_on="hand")
  line = bc.project(measured, zones=5500, zone_pixels=10**6, workers=[1, 8],
                    gee_s_per_request=20.0)
  assert line["name"] == "country_projection" and line["projection"] is True
  assert line["requests"]["gee_compute_pixels"] == 5500 * 12 == 66_000
  assert line["bytes"]["gee_fetched"] == 5500 * 10**6 * 12 * 9
  assert line["bytes"]["zone_folders_written"] == 5500 * 50 * 10**6
  one, eight = line["wall_s_by_workers"]["1"], line["wall_s_by_workers"]["8"]
  # 1 worker: 8 requests in flight; 8 workers: capped at the account's 40
  assert one["gee_requests_in_flight"] == 8 and eight["gee_requests_in_flight"] == 40
  assert one["gee_s"] == round(66_000 * 20 / 8 + 5.5e9 * 1e-6)           # 165,000 + 5,500
  assert eight["gee_s"] == round(66_000 * 20 / 40 + 5.5e9 * 1e-6 / 8)
  assert one["scenes_s"] == 110_000 and eight["predict_s"] == round(5.5e9 * 4e-6 / 8)
  assert line["km2"] == 550_000
  assert bc.zones_of(None) == (5500, 10**6)


def test_benchmarks_dry_run_runs_the_country_projection(monkeypatch, tmp_path):
  from benchmarks import cli as bench_cli
  ran = []
  monkeypatch.setattr(bench_cli, "run_stage",
                      lambda module, args=(): ran.append((module, list(args))) or [])
  assert bench_cli.main(["--dry-run", "--zones-csv", "z.csv", "--workers", "4", "16"]) == 0
  assert ran == [("benchmarks.country",
                  ["--dry-run", "--zones-csv", "z.csv", "--workers", "4", "16"])]
