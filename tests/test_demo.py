"""The demo region: raw inputs in the real formats, deterministic, learnable."""
import datetime
import json

import numpy as np
import pytest
import rasterio

from prep import demo
from prep.demo import crops, landcover, region, sensor, stac
from prep.demo import parcels as demo_parcels
from prep import zones as Z
from cropcontracts.errors import UserError


@pytest.fixture(scope="module")
def raw(demo_raw):
  """The session's small demo's raw inputs (`write_raw(seed=0, small=True)`), read-only."""
  return demo_raw


@pytest.fixture(scope="module")
def full():
  """The full demo's parcels and ground (seed 0), as `write_raw` draws them."""
  parcels = demo_parcels.make_parcels(region.FULL, seed=0)
  return parcels, sensor.make_ground(region.FULL, parcels, seed=0)


@pytest.fixture(scope="module")
def small():
  """The small demo's parcels and ground (seed 0): what the session's small demo was drawn from."""
  parcels = demo_parcels.make_parcels(region.SMALL, seed=0)
  return parcels, sensor.make_ground(region.SMALL, parcels, seed=0)


def _scene_dirs(raw, tile=region.TILE_NORTH):
  """The COG products of one tile (31UCQ: every date), in date order."""
  return sorted((d for d in (raw / "scenes").iterdir()
                 if f"_T{tile}_" in d.name and not d.name.endswith(".SAFE")),
                key=lambda d: d.name.split("_")[2])


def _tile(spec, name):
  return next(t for t in region.demo_tiles(spec) if t.name == name)


def test_demo_zones_two_regions_of_five_on_the_10m_grid():
  zones = region.demo_zones(region.FULL)
  assert [z.zone_id for z in zones[:5]] == [
      "demo-north_0", "demo-north_1", "demo-north_2", "demo-north_3", "demo-north_4"]
  assert sorted({z.region for z in zones}) == ["demo-north", "demo-south"]
  assert [z.index for z in zones] == [0, 1, 2, 3, 4] * 2
  h, w = region.FULL.scene_shape
  for i, a in enumerate(zones):
    assert (a.width, a.height, a.res, a.epsg, a.source) == (256, 256, 10.0, 32631, "demo")
    assert a.x0 % 10 == 0 and a.y0 % 10 == 0
    l, b, r, t = a.bounds
    assert l > region.SCENE_X0 and r < region.SCENE_X0 + w * 10
    assert t < region.SCENE_Y0 and b > region.SCENE_Y0 - h * 10
    for o in zones[i + 1:]:  # non-overlapping, at least one gap apart
      L, B, R, T = o.bounds
      assert l >= R + 100 or L >= r + 100 or b >= T + 100 or B >= t + 100
  assert 47.9 < zones[0].center_lat < 48.6 and 1.2 < zones[0].center_lon < 1.8


def test_zones_table_round_trips(raw):
  zones = Z.read_zones(raw / "zones.csv")
  assert [z.zone_id for z in zones] == ["demo-north_0", "demo-north_1",
                                        "demo-south_0", "demo-south_1"]
  assert all(z.shape == (48, 48) and z.source == "demo" for z in zones)
  # the RPG's share of each zone: what woods, village, water, margins and undeclared fields leave
  assert all(0.5 < z.cropland_fraction < 0.74 for z in zones)


def test_rpg_geopackage_layer_fields_crs_codes_areas(raw):
  import geopandas as gpd
  import pyogrio
  import shapely
  path = raw / "rpg_demo.gpkg"
  assert [l[0] for l in pyogrio.list_layers(path)] == ["PARCELLES_GRAPHIQUES"]
  gdf = gpd.read_file(path, layer="PARCELLES_GRAPHIQUES")
  assert gdf.crs.to_epsg() == 2154
  info = pyogrio.read_info(path, layer="PARCELLES_GRAPHIQUES")
  # IGN's layout: these fields in this order, upper case as the 2023 edition
  # documents them, geometry column the_geom, SURF_PARC a 32-bit real.
  assert list(info["fields"]) == ["ID_PARCEL", "CODE_CULTU", "CODE_GROUP", "CULTURE_D1",
                                  "CULTURE_D2", "SURF_PARC"]
  assert info["geometry_name"] == "the_geom" and info["geometry_type"] == "MultiPolygon"
  assert info["ogr_types"] == ["OFTString"] * 5 + ["OFTReal"]
  assert info["ogr_subtypes"][-1] == "OFSTFloat32"
  assert list(gdf.columns) == [*demo_parcels.RPG_FIELDS, "geometry"]
  # codes of the 2023 list: new ones (JAC MCS CAH) and changed meanings (CPL PPH)
  assert set(demo_parcels.CODES_2023) <= set(gdf.CODE_CULTU)
  assert gdf.ID_PARCEL.map(type).eq(str).all() and gdf.ID_PARCEL.is_unique
  assert set(gdf.CODE_CULTU) <= set(crops.CODES)
  assert (gdf.CODE_GROUP == gdf.CODE_CULTU.map(lambda c: crops.CODES[c][0])).all()
  assert {"BTH", "MIS"} <= set(gdf.CODE_CULTU)
  assert set(gdf.CULTURE_D1.dropna()) <= set(crops.CATCH_CROPS)
  assert gdf.SURF_PARC.between(0.5, 10).all()
  np.testing.assert_allclose(gdf.SURF_PARC, gdf.SURF_PARC.astype(float).round(2), atol=1e-6)
  # exactly one self-intersecting parcel; repaired, its area is the declared one
  invalid = ~shapely.is_valid(gdf.geometry.values)
  assert invalid.sum() == 1
  area = shapely.area(shapely.make_valid(gdf.geometry.values)) / 1e4
  np.testing.assert_allclose(area, gdf.SURF_PARC, atol=0.006)
  # in the area of the scenes (Lambert-93 around Chartres)
  l, b, r, t = gdf.total_bounds
  assert 580_000 < l < r < 610_000 and 6_780_000 < b < t < 6_810_000


def test_full_spec_parcels_tile_the_area_with_gaps(full):
  spec = region.FULL
  parcels, _ = full
  ha = np.array([g.area for g in parcels.geometry]) / 1e4
  assert ha.min() >= 0.5 and ha.max() <= 10
  h, w = spec.scene_shape
  cover = ha.sum() / (h * w * 100 / 1e4)
  assert 0.65 < cover < 0.85       # roads, hedges, woods, villages and water in between
  counts = {c: (parcels.code == c).sum() for c in set(parcels.code)}
  assert max(counts, key=counts.get) == "BTH"
  # the south grows sunflower and vines, the north none of the vines
  south = parcels.region == "demo-south"
  assert (parcels.code[south] == "TRN").mean() > (parcels.code[~south] == "TRN").mean()
  assert not np.isin(parcels.code[~south], ["VRC", "VRG"]).any()


def test_scene_files_formats_and_stac_items(raw):
  dirs = _scene_dirs(raw)
  assert len(dirs) == len(region.SMALL.scene_dates) == 25
  item = json.loads((dirs[0] / f"{dirs[0].name}.json").read_text())
  # Planetary Computer's kind: no baseline in the id, s2:processing_baseline declares it
  assert item["id"] == dirs[0].name == "S2A_MSIL2A_20230103T105031_R051_T31UCQ_20230103T170512"
  assert dirs[1].name.startswith("S2B_")
  assert item["type"] == "Feature" and item["properties"]["proj:epsg"] == 32631
  assert item["properties"]["datetime"].startswith("2023-01-03T")
  assert item["properties"]["s2:processing_baseline"] == "05.09"
  assert set(item["assets"]) == {"B02", "B03", "B04", "B08", "SCL"}
  lon0, lat0, lon1, lat1 = item["bbox"]
  assert 1.2 < lon0 < lon1 < 1.8 and 47.9 < lat0 < lat1 < 48.6
  tile = _tile(region.SMALL, region.TILE_NORTH)
  with rasterio.open(dirs[0] / "B08.tif") as b8, rasterio.open(dirs[0] / "SCL.tif") as scl:
    assert (b8.dtypes[0], scl.dtypes[0]) == ("uint16", "uint8")
    assert (b8.res, scl.res) == ((10.0, 10.0), (20.0, 20.0))
    assert b8.bounds == scl.bounds and b8.crs.to_epsg() == 32631
    assert (b8.height, b8.width) == (tile.height, tile.width)
    assert b8.profile["tiled"] and b8.profile["compress"] == "deflate"
    assert b8.nodata == 0


def test_products_declare_baseline_0509_and_its_offset_as_real_ones_do(raw):
  """SAFE (MTD_MSIL2A.xml), Earth Search, Planetary Computer and CDSE items; none says
  'harmonized'; every product's numbers carry the +1000 offset."""
  from prep import s2_products
  scenes_dir = raw / "scenes"
  kinds = {"safe": 0, "earth-search": 0, "planetary": 0, "cdse": 0}
  for d in scenes_dir.iterdir():
    if d.name.endswith(".SAFE"):
      kinds["safe"] += 1
      assert "_N0509_" in d.name or "_N0510_" in d.name
      mtd = s2_products.read_mtd(d / "MTD_MSIL2A.xml")
      assert mtd["baseline"] in ("05.09", "05.10") and mtd["product_uri"] == d.name
      assert mtd["offsets"] == {b: -1000 for b in s2_products.MTD_BANDS}
      assert len(list(d.glob("GRANULE/L2A_*/IMG_DATA/R10m/T31UCP_*_B0[2348]_10m.jp2"))) == 4
      assert len(list(d.glob("GRANULE/L2A_*/IMG_DATA/R20m/T31UCP_*_SCL_20m.jp2"))) == 1
      continue
    props = json.loads((d / f"{d.name}.json").read_text())["properties"]
    assert props.get("earthsearch:boa_offset_applied") is not True
    if "processing:version" in props:
      kinds["cdse"] += 1
      assert "_N0509_" in d.name or "_N0510_" in d.name
    elif "earthsearch:boa_offset_applied" in props:
      kinds["earth-search"] += 1
      assert d.name.endswith("_0_L2A") and "_N05" in props["s2:product_uri"]
    else:
      kinds["planetary"] += 1
      assert props["s2:processing_baseline"] in ("05.09", "05.10")
  assert kinds == {"safe": 9, "earth-search": 16, "planetary": 25, "cdse": 25}


def test_same_acquisition_on_two_overlapping_tiles_and_a_neighbour_utm_tile(raw):
  spec = region.SMALL
  north, south, west = (_tile(spec, n) for n in
                        (region.TILE_NORTH, region.TILE_SOUTH, region.TILE_WEST))
  assert north.rows[0] < south.rows[0] < north.rows[1] < south.rows[1]   # they overlap
  date = spec.scene_dates[1]                                            # 2023-01-18, S2B
  names = [n for _, _, n in stac.products_of(spec, 1, date)]
  with rasterio.open(raw / "scenes" / names[0] / "B04.tif") as a, \
       rasterio.open(raw / "scenes" / names[1] / "B04.tif") as b:
    an, bn = a.read(1), b.read(1)
    ov = south.rows[0] - north.rows[0], north.rows[1] - south.rows[0]
    np.testing.assert_array_equal(an[ov[0]:], bn[:ov[1]])              # identical numbers
    assert (an[ov[0]:] > 0).mean() > 0.5
  with rasterio.open(raw / "scenes" / names[2] / "B04.tif") as c:
    assert c.crs.to_epsg() == 32630 and c.transform.c % 60 == 0
  # zone pixels of the western strip lie in no UTM-31 tile
  zone = region.demo_zones(spec)[0]
  assert zone.x0 < region.SCENE_X0 + north.cols[0] * 10.0


def test_clouds_flagged_nodata_consistent_and_a_month_without_observation(raw):
  cloudy, valid_dec = [], None
  for d in _scene_dirs(raw):
    scl = rasterio.open(d / "SCL.tif").read(1)
    b2 = rasterio.open(d / "B02.tif").read(1)
    s10 = np.repeat(np.repeat(scl, 2, 0), 2, 1)
    assert ((b2 == 0) == (s10 == 0)).all()
    cloudy.append(np.isin(scl, [8, 9, 10]).mean())
    if d.name.split("_")[2][4:6] == "12":
      ok = (scl >= 4) & (scl <= 7)
      valid_dec = ok if valid_dec is None else valid_dec | ok
  cloudy = np.array(cloudy)
  assert 0.1 < cloudy.mean() < 0.6
  assert (cloudy < 0.05).sum() >= 3 and (cloudy > 0.8).sum() >= 1
  assert 0 < (~valid_dec).mean() < 1    # gap filling has work to do in December


def test_same_seed_same_bytes_other_seed_other_arrays(raw, tmp_path):
  again = tmp_path / "raw"
  demo.write_raw(again, seed=0, small=True, progress=False)
  first = _scene_dirs(raw)[5]
  for f in ("B04.tif", "SCL.tif", f"{first.name}.json"):
    assert (first / f).read_bytes() == (again / "scenes" / first.name / f).read_bytes()
  for f in ("zones.csv", "landcover_demo.tif"):
    assert (raw / f).read_bytes() == (again / f).read_bytes()
  import geopandas as gpd
  a, b = (gpd.read_file(p / "rpg_demo.gpkg") for p in (raw, again))
  assert a.drop(columns="geometry").equals(b.drop(columns="geometry"))
  assert a.geometry.geom_equals_exact(b.geometry, 0).all()
  other = tmp_path / "other"
  demo.write_raw(other, seed=1, small=True, progress=False)
  assert not np.array_equal(rasterio.open(first / "B04.tif").read(),
                            rasterio.open(other / "scenes" / first.name / "B04.tif").read())
  assert not np.array_equal(rasterio.open(raw / "landcover_demo.tif").read(),
                            rasterio.open(other / "landcover_demo.tif").read())


def test_scene_files_are_the_documented_draws(raw, small):
  """Acquisition i is `observe` of the ground drawn from seed 0 with `default_rng([0, 100 + i])`
  and the December front of `[0, 4]` (prep.demo.sensor), cut per tile (`stac.cut`) and
  stored with the +1000 offset of its baseline, in COG and in lossless JPEG 2000."""
  spec = region.SMALL
  _, ground = small
  front = sensor.december_front(spec, seed=0)
  for i in (0, 23):                       # a January and a December acquisition
    date = spec.scene_dates[i]
    dn, scl, facts = sensor.observe(ground, date, np.random.default_rng([0, 100 + i]), front)
    for tile, kind, name in stac.products_of(spec, i, date):
      t_dn, t_scl = stac.cut(spec, tile, dn, scl)
      folder = raw / "scenes" / name
      if kind == "safe":
        files = [next(folder.glob(f"GRANULE/*/IMG_DATA/R10m/*_{b}_10m.jp2"))
                 for b in stac.BAND_FILES]
        files.append(next(folder.glob("GRANULE/*/IMG_DATA/R20m/*_SCL_20m.jp2")))
      else:
        files = [folder / f"{b}.tif" for b in (*stac.BAND_FILES, "SCL")]
        item = json.loads((folder / f"{name}.json").read_text())
        assert item["properties"]["eo:cloud_cover"] == facts["eo:cloud_cover"]
      for f, band in zip(files, t_dn):
        stored = rasterio.open(f).read(1)
        np.testing.assert_array_equal(stored, np.where(band == 0, 0, band + 1000))
      np.testing.assert_array_equal(rasterio.open(files[-1]).read(1), t_scl)


def test_rerun_keeps_files_and_another_seed_is_refused(raw):
  b4 = _scene_dirs(raw)[3] / "B04.tif"
  before = b4.stat().st_mtime_ns
  stamp = demo.write_raw(raw, seed=0, small=True, progress=False)
  assert (stamp["n_acquisitions"], stamp["n_products"], stamp["n_safe_products"]) == (25, 75, 9)
  assert b4.stat().st_mtime_ns == before
  with pytest.raises(UserError, match=r"holds a demo made with seed=0 small=True, "
                     r"not seed=3 small=True"):
    demo.write_raw(raw, seed=3, small=True, progress=False)


def test_an_interrupted_raw_folder_is_completed_only_with_its_seed(raw, tmp_path):
  import shutil
  part = tmp_path / "raw"
  shutil.copytree(raw, part)
  stamp = json.loads((part / "demo.json").read_text())
  (part / "demo.json").write_text(json.dumps({**stamp, "complete": False}))
  lost = _scene_dirs(part)[-1]
  shutil.rmtree(lost)
  with pytest.raises(UserError, match="holds a demo made with seed=0"):
    demo.write_raw(part, seed=1, small=True, progress=False)
  assert demo.write_raw(part, seed=0, small=True, progress=False)["complete"]
  assert (lost / "B08.tif").read_bytes() == (raw / "scenes" / lost.name / "B08.tif").read_bytes()
  (tmp_path / "other").mkdir()
  (tmp_path / "other" / "notes.txt").write_text("mine")
  with pytest.raises(UserError, match="exists and is not a demo folder"):
    demo.write_raw(tmp_path / "other", seed=0, small=True, progress=False)


def _class_ndvi(ground, parcels, codes, days):
  """Mean clean NDVI [len(codes), len(days)] of the parcels of each code."""
  code_of_pixel = np.array(["", *parcels.code])[ground.pid]
  out = np.zeros((len(codes), len(days)))
  for j, doy in enumerate(days):
    refl, _ = sensor.surface_reflectance(ground, doy)
    ndvi = (refl[3] - refl[2]) / (refl[3] + refl[2])
    for i, c in enumerate(codes):
      out[i, j] = ndvi[code_of_pixel == c].mean()
  return out


def test_phenology_separates_summer_from_winter_crops_but_not_cereals(full):
  parcels, ground = full
  days = np.arange(5, 366, 10)
  codes = ["BTH", "ORH", "MIS", "CZH", "PPH", "PTR"]
  ndvi = _class_ndvi(ground, parcels, codes, days)
  peak = dict(zip(codes, days[ndvi.argmax(1)]))
  assert 100 <= peak["BTH"] <= 160 and 190 <= peak["MIS"] <= 240
  assert peak["ORH"] < peak["BTH"] + 5
  jan, jul = 0, np.searchsorted(days, 200)
  bth, orh, mis, czh, pph, ptr = ndvi
  assert czh[jan] > bth[jan] + 0.15 and mis[jan] < 0.3    # rapeseed green in winter
  assert mis[jul] > bth[jul] + 0.3                        # maize green, wheat harvested
  assert np.abs(bth - orh).max() < 0.3                    # cereals are close
  assert np.abs(pph - ptr).mean() < 0.1                   # grasslands are close
  assert ndvi.max() > 0.8 and ndvi.min() > 0.05


# --- the land outside the fields (prep.demo.landcover) ------------------------

def _zone_kinds(spec, ground) -> dict:
  return {z.zone_id: ground.kind[region.zone_window(spec, z)] for z in region.demo_zones(spec)}


def test_a_quarter_to_two_fifths_of_each_zone_is_not_farmland(full, small):
  """Woods, village, water and margins cover 25-40 % of every zone, at both sizes; each zone
  has a village, water and woods, and a few % of undeclared fields."""
  lc = landcover
  for spec, (_, ground) in ((region.FULL, full), (region.SMALL, small)):
    for zid, kind in _zone_kinds(spec, ground).items():
      assert 0.25 <= np.isin(kind, lc.NON_AGRICULTURAL).mean() <= 0.40, zid
      assert 0.01 <= (kind == lc.UNDECLARED).mean() <= 0.06, zid
      assert {lc.FIELD, lc.MARGIN, lc.VILLAGE, lc.WATER} <= set(np.unique(kind)), zid
      assert np.isin(kind, [lc.DECIDUOUS, lc.EVERGREEN]).mean() > 0.05, zid
    assert set(np.unique(ground.kind)) == set(lc.KINDS)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_other_seeds_keep_the_share_in_range(seed):
  spec = region.SMALL
  ground = sensor.make_ground(spec, demo_parcels.make_parcels(spec, seed), seed)
  for zid, kind in _zone_kinds(spec, ground).items():
    assert 0.25 <= np.isin(kind, landcover.NON_AGRICULTURAL).mean() <= 0.40, (seed, zid)


def test_margins_are_thin_strips_between_fields(full):
  """Hedges, tracks and roads: nearly every margin pixel touches a field."""
  from scipy import ndimage
  _, ground = full
  margin = ground.kind == landcover.MARGIN
  fields = np.isin(ground.kind, [landcover.FIELD, landcover.UNDECLARED])
  assert (ndimage.binary_dilation(fields)[margin]).mean() > 0.9
  assert ndimage.binary_erosion(margin, np.ones((5, 5))).sum() < 0.01 * margin.sum()


def _monthly_reflectance(ground, mask) -> np.ndarray:
  """Clean reflectance [12, 4, N] mid-month of the pixels of `mask` whose neighbours share it
  (the half-pixel blur reaches one pixel)."""
  from scipy import ndimage
  inner = ndimage.binary_erosion(mask, np.ones((3, 3)))
  return np.stack([sensor.surface_reflectance(ground, int(d))[0][:, inner]
                   for d in np.arange(15, 366, 30.4)])


def test_each_kind_of_land_has_its_own_reflectance_and_seasons(full):
  lc = landcover
  _, ground = full
  jan, jul = 0, 6
  refl = {k: _monthly_reflectance(ground, ground.kind == k)
          for k in (lc.DECIDUOUS, lc.EVERGREEN, lc.VILLAGE, lc.WATER)}
  mean = {k: r.mean(-1) for k, r in refl.items()}            # [12, 4]
  nir = {k: m[:, 3] for k, m in mean.items()}
  ndvi = {k: (m[:, 3] - m[:, 2]) / (m[:, 3] + m[:, 2]) for k, m in mean.items()}
  # water: dark in every band, NIR very low all year
  assert refl[lc.WATER][:, 3].max() < 0.03 and mean[lc.WATER].max() < 0.06
  # village: the same in every month (no phenology), brighter than woods and water
  village = refl[lc.VILLAGE]
  np.testing.assert_allclose(village, np.broadcast_to(village[:1], village.shape), atol=1e-6)
  visible = {k: m[:, :3].sum(1) for k, m in mean.items()}
  for k in (lc.DECIDUOUS, lc.EVERGREEN, lc.WATER):
    assert (visible[lc.VILLAGE] > visible[k] + 0.05).all(), k
  assert (ndvi[lc.VILLAGE] < 0.45).all()
  # deciduous woods green up in spring and lose their leaves in winter; evergreens stay dark
  ratio = {k: nir[k][jul] / nir[k][jan] for k in (lc.DECIDUOUS, lc.EVERGREEN)}
  assert ratio[lc.DECIDUOUS] > 1.6 and abs(ratio[lc.EVERGREEN] - 1) < 0.02
  assert ndvi[lc.DECIDUOUS][jan] < 0.55 and ndvi[lc.DECIDUOUS][jul] > 0.8
  assert np.argmax(np.diff(nir[lc.DECIDUOUS])) in (2, 3)          # green-up: April-May
  assert mean[lc.EVERGREEN][:, 2].max() < 0.03 and (ndvi[lc.EVERGREEN] > 0.75).all()
  assert nir[lc.EVERGREEN].max() < nir[lc.DECIDUOUS][jul] - 0.08


def test_scl_marks_water_as_water_a_valid_class(small):
  """SCL 6 on the 20 m pixels that are water (3 of their 4 pixels or more), unless a
  cloud, shadow or no-data covers them; nowhere else. 6 is in the valid range."""
  from cropcontracts.zonefolder import VALID_SCL
  assert 6 in VALID_SCL
  spec = region.SMALL
  _, ground = small
  front = sensor.december_front(spec, seed=0)
  water20 = sensor._down(ground.water.astype(np.float32)) > 0.5
  assert water20.sum() > 20
  for i in (4, 10, 16):
    date = spec.scene_dates[i]
    _, scl, _ = sensor.observe(ground, date, np.random.default_rng([0, 100 + i]), front)
    assert np.isin(scl[water20], [0, 3, 6, 7, 8, 9, 10]).all(), date
    assert (scl[water20] == 6).mean() > 0.3 and not (scl[~water20] == 6).any(), date


def test_undeclared_fields_grow_crops_but_have_no_rpg_polygon(raw, full, small):
  import geopandas as gpd
  import shapely
  parcels, ground = small
  und = np.flatnonzero(~parcels.declared)
  assert und.size >= 3
  assert not np.isin(parcels.code[und], ["BOR", "SNE", *demo_parcels.CODES_2023]).any()
  assert (ground.kind[np.isin(ground.pid, und + 1)] == landcover.UNDECLARED).all()
  rpg = gpd.read_file(raw / "rpg_demo.gpkg").to_crs(region.EPSG)
  assert len(rpg) == parcels.declared.sum()
  rpg_area = shapely.union_all(shapely.make_valid(rpg.geometry.values))
  undeclared = np.array(parcels.geometry, dtype=object)[und]
  assert shapely.area(shapely.intersection(undeclared, rpg_area)).max() < 1.0   # m²
  # Their crops follow the phenology of the same crops declared (the full demo: 100+ fields;
  # the seasonal crops: catch crops and mowing dates differ field to field).
  parcels, ground = full
  days = np.arange(15, 366, 30.4).astype(int)
  ndvi = []
  for d in days:
    r, _ = sensor.surface_reflectance(ground, int(d))
    ndvi.append((r[3] - r[2]) / (r[3] + r[2]))
  ndvi = np.stack(ndvi)                                                      # [12, H, W]
  declared = np.concatenate([[False], parcels.declared])[ground.pid]
  pheno = np.concatenate([[""], parcels.pheno])[ground.pid]
  compared = 0
  for name in set(parcels.pheno[~parcels.declared]):
    undecl = (pheno == name) & ~declared & (ground.pid > 0)
    decl = (pheno == name) & declared
    a, b = ndvi[:, undecl].mean(1), ndvi[:, decl].mean(1)
    if undecl.sum() > 200 and np.ptp(b) > 0.3:
      assert np.corrcoef(a, b)[0, 1] > 0.9 and abs(int(a.argmax()) - int(b.argmax())) <= 1, name
      assert np.ptp(a) > 0.3, name
      compared += 1
  assert compared >= 8


def test_parcels_do_not_overlap_woods_village_or_water(raw, full, small, small_demo):
  import geopandas as gpd
  import shapely
  from cropcontracts import zonefolder
  for parcels, _ in (full, small):
    land = shapely.union_all([parcels.land.shapes[k] for k in landcover.SHAPED])
    geoms = np.array(parcels.geometry, dtype=object)
    assert shapely.area(shapely.intersection(geoms, land)).max() < 1e-3         # m²
  parcels, ground = small
  rpg = gpd.read_file(raw / "rpg_demo.gpkg").to_crs(region.EPSG).geometry.values
  valid = shapely.is_valid(rpg)           # the invalid one's loop pokes 3 m out of its field
  assert shapely.area(shapely.intersection(rpg[valid], land)).max() < 1.0  # Lambert-93 round trip
  for zf in zonefolder.find_zones(small_demo / "zones", require_labels=True):
    kind = ground.kind[region.zone_window(region.SMALL, zf.zone)]
    assert not np.isin(kind[zf.read_parcels() > 0], landcover.SHAPED).any(), zf.zone.zone_id


def test_worldcover_classes_of_each_kind():
  lc = landcover
  kind = np.array([[lc.FIELD, lc.UNDECLARED, lc.MARGIN, lc.DECIDUOUS],
                   [lc.EVERGREEN, lc.VILLAGE, lc.WATER, lc.FIELD]], np.uint8)
  pid = np.array([[1, 2, 0, 0], [0, 0, 0, 3]])
  np.testing.assert_array_equal(lc.worldcover(kind, pid, np.array(["BTH", "PPH", "PTR"])),
                                [[40, 30, 30, 10], [10, 50, 80, 30]])


def test_landcover_raster_is_the_truth_in_worldcover_classes(raw, small):
  parcels, ground = small
  with rasterio.open(raw / "landcover_demo.tif") as src:
    wc, cmap = src.read(1), src.colormap(1)
    assert src.crs.to_epsg() == region.EPSG and src.nodata == 0
    assert src.transform == region.scene_transform(region.SMALL)
  np.testing.assert_array_equal(wc, landcover.worldcover(ground.kind, ground.pid, parcels.code))
  assert set(np.unique(wc)) == {10, 30, 40, 50, 80}
  kind = ground.kind
  assert (wc[kind == landcover.WATER] == 80).all() and (wc[kind == landcover.VILLAGE] == 50).all()
  assert np.isin(wc[kind == landcover.UNDECLARED], [30, 40]).all()
  assert {k: cmap[k][:3] for k in (10, 40, 80)} == {10: (0, 100, 0), 40: (240, 150, 255),
                                                    80: (0, 100, 200)}


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_picture_of_the_land_shows_each_kind_and_the_zones(small, tmp_path):
  _, ground = small
  landcover.write_png(tmp_path / "land.png", region.SMALL, ground.kind)
  with rasterio.open(tmp_path / "land.png") as src:
    img, cmap = src.read(1), src.colormap(1)
  assert img.shape == region.SMALL.scene_shape
  assert {k: cmap[k][:3] for k in landcover.COLOURS} == landcover.COLOURS
  for zone in region.demo_zones(region.SMALL):
    rows, cols = region.zone_window(region.SMALL, zone)
    np.testing.assert_array_equal(img[rows, cols], ground.kind[rows, cols])
    assert (img[rows.start - 1, cols.start - 1:cols.stop + 1] == 0).all()   # the outline
    assert (img[rows.stop, cols.start - 1:cols.stop + 1] == 0).all()


# --- the whole demo through the scenes and labels routes ----------------------

# `small_demo`: the session's make_demo(small=True) (conftest.py), read-only.


def test_make_demo_writes_valid_zone_folders(small_demo):
  from cropcontracts import zonefolder
  root = small_demo / "zones"
  folders = zonefolder.find_zones(root, require_labels=True)
  assert [z.zone_id for z in folders] == ["demo-north_0", "demo-north_1",
                                          "demo-south_0", "demo-south_1"]
  for zf in folders:
    img = zf.read_image()
    assert img.shape == (12, 48, 48, 4) and img.dtype == np.uint16
    assert zf.months == [f"2023-{m:02d}" for m in range(1, 13)]
    assert (img > 0).mean() > 0.99             # gap filled
    parcels, labels = zf.read_parcels(), zf.read_labels()
    class_of = np.concatenate([[255], zf.parcel_table().class_id]).astype(np.uint8)
    inside = parcels > 0                      # outside: background or the margin (prep labels)
    np.testing.assert_array_equal(labels[inside], class_of[parcels][inside])
    assert np.isin(labels[~inside], (255, 23)).all()
    assert 0.55 < inside.mean() < 0.75
    assert (labels == 23).mean() > 0.1          # woods, village, water: the background
  # December has pixels without any valid observation somewhere in the region.
  dec = np.concatenate([zf.read_valid_count()[11].ravel() for zf in folders])
  assert (dec == 0).any() and (dec > 0).any()


def test_demo_labels_match_the_parcels_the_scenes_were_drawn_from(small_demo, small):
  """The zone folders' parcels are the declared ones the scenes were drawn from (not the
  undeclared fields: no RPG polygon, so no parcel there)."""
  from cropcontracts import zonefolder
  root = small_demo / "zones"
  spec = region.SMALL
  parcels, ground = small
  code_of_pid = np.array(["", *np.where(parcels.declared, parcels.code, "")])
  for zf in zonefolder.find_zones(root, require_labels=True):
    truth = code_of_pid[ground.pid[region.zone_window(spec, zf.zone)]]
    table = zf.parcel_table()
    codes = np.concatenate([[""], table.CODE_CULTU.to_numpy(str)])[zf.read_parcels()]
    assert (codes == truth).mean() > 0.99


def test_demo_composites_show_summer_and_winter_crops(small_demo):
  from cropcontracts import zonefolder
  root = small_demo / "zones"
  ndvi_by_code = {}
  for zf in zonefolder.find_zones(root, require_labels=True):
    img = zf.read_image().astype(float)
    ndvi = (img[..., 3] - img[..., 2]) / (img[..., 3] + img[..., 2] + 1e-9)  # [T, H, W]
    codes = np.concatenate([[""], zf.parcel_table().CODE_CULTU.to_numpy(str)])
    code = codes[zf.read_parcels()]
    for c in ("BTH", "MIS", "ORH", "TRN", "CZH"):
      if (code == c).any():
        ndvi_by_code.setdefault(c, []).append(ndvi[:, code == c])
  mean = {c: np.concatenate(v, 1).mean(1) for c, v in ndvi_by_code.items()}
  assert "BTH" in mean and ("MIS" in mean or "TRN" in mean)
  summer = mean.get("MIS", mean.get("TRN"))
  assert mean["BTH"][4] > summer[4] + 0.2      # May: wheat green, summer crop bare
  assert summer[7] > mean["BTH"][7] + 0.2      # August: the reverse


def test_make_demo_rerun_skips_complete_zones(small_demo):
  out, root = small_demo, small_demo / "zones"
  s2 = root / "demo-south_1" / "s2.tif"
  before = s2.stat().st_mtime_ns
  assert demo.make_demo(out, seed=0, progress=False, small=True) == root
  assert s2.stat().st_mtime_ns == before
