"""Local scenes route: tiny synthetic STAC/COG items and SAFE products."""
import json
import pathlib
import warnings

import numpy as np
import pytest
import rasterio
from affine import Affine

from cropcontracts import zonefolder
from prep import scenes
from cropcontracts.errors import UserError
from cropcontracts.zone import Zone

EPSG = 32631
ZONE = Zone("t_0", "Test", "Town", 0, EPSG, x0=400_000.0, y0=5_000_000.0,
            width=30, height=30)
# Scenes: 40 x 40 px at 10 m, 10 px up-left of the zone (zone pixel (r, c) is
# scene pixel (r + 10, c + 10)); SCL 20 x 20 px at 20 m on the same origin.
SX0, SY0 = 399_900.0, 5_000_100.0


def _write(path, arr, res, x0=SX0, y0=SY0, driver="GTiff", epsg=EPSG, **opts):
  path.parent.mkdir(parents=True, exist_ok=True)
  with rasterio.open(path, "w", driver=driver, width=arr.shape[1],
                     height=arr.shape[0], count=1, dtype=arr.dtype.name,
                     crs=f"EPSG:{epsg}", transform=Affine(res, 0, x0, 0, -res, y0),
                     nodata=0, **opts) as dst:
    dst.write(arr, 1)


def _scl(clouds=(), cls=9, base=4):
  """uint8 [20, 20] SCL; `clouds` are zone pixels (r, c), r and c even."""
  scl = np.full((20, 20), base, np.uint8)
  for r, c in clouds:
    scl[(r + 10) // 2, (c + 10) // 2] = cls
  return scl


def write_item(root, item_id, date, value, *, scl=None, props=None,
               x0=SX0, y0=SY0, zero_at=None, epsg=EPSG, size=40):
  """A STAC item whose band c is `value + c` everywhere (B08 0 at `zero_at`).

  Without `props` the item says its offset is already removed, as Earth
  Search's do (`earthsearch:boa_offset_applied`).
  """
  folder = pathlib.Path(root) / item_id
  for c, band in enumerate(scenes.BAND_FILES):
    arr = np.full((size, size), value + c, np.uint16)
    if zero_at is not None and band == "B08":
      arr[zero_at[0] + 10, zero_at[1] + 10] = 0
    _write(folder / f"{band}.tif", arr, 10.0, x0, y0, epsg=epsg)
  _write(folder / "SCL.tif", _scl() if scl is None else scl, 20.0, x0, y0, epsg=epsg)
  if props is None:
    props = {"earthsearch:boa_offset_applied": True}
  item = {"type": "Feature", "stac_version": "1.0.0", "id": item_id,
          "properties": {"datetime": f"{date}T10:56:21Z", "proj:epsg": epsg,
                         **props}}
  (folder / f"{item_id}.json").write_text(json.dumps(item))
  return folder


@pytest.fixture
def scene_dir(tmp_path):
  d = tmp_path / "scenes"
  write_item(d, "s0", "2023-01-05", 100, scl=_scl([(0, 0)]), zero_at=(5, 5))
  write_item(d, "s1", "2023-01-20", 200)
  write_item(d, "s2", "2023-02-10", 320, scl=_scl([(10, 10)], cls=8))
  write_item(d, "s3", "2023-04-01", 400)
  write_item(d, "s4", "2023-04-15", 500)
  write_item(d, "old", "2022-06-01", 900)
  write_item(d, "far", "2023-01-10", 700, x0=500_000.0)       # outside the zone
  for name in ("s0", "s1", "s2", "s3", "s4"):                  # never valid pixel
    scl = rasterio.open(d / name / "SCL.tif").read(1)
    scl[(20 + 10) // 2, (20 + 10) // 2] = 3
    _write(d / name / "SCL.tif", scl, 20.0)
  return d


def _composite(tmp_path, scene_dir):
  out = tmp_path / "zones" / ZONE.zone_id
  with pytest.warns(UserWarning, match="no scene in 2023-03, 2023-05"):
    info = scenes.composite_zone_from_scenes(scene_dir, ZONE, out, progress=False)
  return out, info


def test_composite_values_counts_and_gaps(tmp_path, scene_dir):
  out, info = _composite(tmp_path, scene_dir)
  zf = zonefolder.open_zone(out)
  img = zf.read_image()                       # [T, H, W, C]
  count = zf.read_valid_count()
  c = np.arange(4)
  np.testing.assert_array_equal(img[0, 15, 15], 150 + c)   # Jan: mean 100, 200
  np.testing.assert_array_equal(img[0, 0, 0], 200 + c)     # s0 cloudy (SCL 9)
  np.testing.assert_array_equal(img[0, 1, 1], 200 + c)     # same 20 m SCL pixel
  np.testing.assert_array_equal(img[0, 2, 2], 150 + c)     # next 20 m pixel clear
  np.testing.assert_array_equal(img[0, 5, 5], 200 + c)     # s0 B08 = 0: nodata
  np.testing.assert_array_equal(img[1, 15, 15], 320 + c)   # Feb
  # Feb cloudy and no March scene: two gaps between Jan 150 and Apr 450, linear.
  np.testing.assert_array_equal(img[1, 10, 10], 250 + c)
  np.testing.assert_array_equal(img[2, 10, 10], 350 + c)
  np.testing.assert_array_equal(img[2, 15, 15], 385 + c)   # Mar: no scene, filled
  np.testing.assert_array_equal(img[3, 15, 15], 450 + c)   # Apr
  np.testing.assert_array_equal(img[11, 15, 15], 450 + c)  # trailing: last value
  assert not img[:, 20:22, 20:22].any()                    # never valid: stays 0
  assert count[0, 15, 15] == 2 and count[0, 0, 0] == 1 and count[0, 5, 5] == 1
  assert count[1, 10, 10] == 0 and count[2].max() == 0
  assert info["scenes_used"] == 5
  assert info["scenes_outside_zone"] == 1 and info["scenes_other_years"] == 1
  assert info["scenes_per_month"] == [2, 1, 0, 2] + [0] * 8
  assert info["months_without_scene"][:2] == ["2023-03", "2023-05"]
  assert info["nodata_pixels"] == 4
  # Filled: Mar + May..Dec everywhere but the 4 never-valid pixels, Feb at 4.
  assert info["gap_filled_fraction"] == pytest.approx(
      (9 * (900 - 4) + 4) / (12 * 900), abs=1e-6)
  assert zf.meta["imagery"]["source"] == "local-scenes"


def test_output_raster_format(tmp_path, scene_dir):
  out, _ = _composite(tmp_path, scene_dir)
  with rasterio.open(out / "s2.tif") as src:
    assert src.crs.to_epsg() == EPSG and src.count == 48
    assert src.transform == ZONE.transform and src.dtypes[0] == "uint16"
    assert src.descriptions[0] == "2023-01 B2" and src.descriptions[47] == "2023-12 B8"
  with rasterio.open(out / "valid_count.tif") as src:
    assert src.count == 12 and src.dtypes[0] == "uint8"


def test_stac_asset_hrefs_and_earth_search_names(tmp_path):
  """Assets may be named blue..scl and live elsewhere than <band>.tif."""
  folder = write_item(tmp_path, "es", "2023-06-01", 1500)
  (folder / "data").mkdir()
  names = {"B02": "blue", "B03": "green", "B04": "red", "B08": "nir", "SCL": "scl"}
  assets = {}
  for band, key in names.items():
    if band == "B08":   # remote href: the downloaded copy keeps the file name
      (folder / "B08.tif").rename(folder / "T31UCP_B08.tif")
      assets[key] = {"href": "https://example.invalid/tiles/31/U/CP/T31UCP_B08.tif"}
    else:               # relative href into a sub-folder
      (folder / f"{band}.tif").rename(folder / "data" / f"{key}.tif")
      assets[key] = {"href": f"data/{key}.tif"}
  item = json.loads((folder / "es.json").read_text())
  (folder / "es.json").write_text(json.dumps(dict(item, assets=assets)))
  scene = scenes._stac_scene(folder / "es.json")
  assert scene.bands[0] == folder / "data" / "blue.tif"
  assert scene.bands[3] == folder / "T31UCP_B08.tif"
  assert scene.scl == folder / "data" / "scl.tif"
  bands, valid = scenes.read_scene(scene, ZONE)
  np.testing.assert_array_equal(bands[:, 0, 0], [1500, 1501, 1502, 1503])
  assert valid.all()
  (folder / "T31UCP_B08.tif").unlink()
  with pytest.raises(UserError, match="T31UCP_B08.tif: scene es lacks this band"):
    scenes.read_scene(scene, ZONE)


def test_harmonization_offset_from_baseline(tmp_path):
  folder = write_item(tmp_path, "new", "2023-06-01", 1500,
                      props={"s2:processing_baseline": "05.09"})
  scene = scenes._stac_scene(folder / "new.json")
  assert scene.offsets == (-1000,) * 4
  bands, valid = scenes.read_scene(scene, ZONE)
  np.testing.assert_array_equal(bands[:, 0, 0], [500, 501, 502, 503])
  assert valid.all()
  folder = write_item(tmp_path, "done", "2023-06-01", 1500,
                      props={"s2:processing_baseline": "05.09",
                             "earthsearch:boa_offset_applied": True})
  done = scenes._stac_scene(folder / "done.json")
  # Earth Search's flag is wrong on some items: the baseline wins, and it is said.
  assert (done.offsets, done.offset_overruled) == ((-1000,) * 4, True)
  # Keyed on the baseline, not the date: a reprocessed 2019 product has the offset.
  folder = write_item(tmp_path, "old", "2019-06-01", 1500,
                      props={"s2:processing_baseline": "05.00"})
  assert scenes._stac_scene(folder / "old.json").offsets == (-1000,) * 4


def test_item_after_2022_without_baseline_is_refused(tmp_path):
  write_item(tmp_path / "s", "nobase", "2023-06-01", 1500, props={})
  with pytest.raises(UserError, match=r"^STAC item nobase: acquired 2023-06-01 but no "
                                      r"processing baseline found"):
    scenes.discover_scenes(tmp_path / "s")


def test_dark_pixel_stays_valid_after_offset(tmp_path):
  folder = write_item(tmp_path, "dark", "2023-06-01", 999,
                      props={"s2:boa_add_offset": -1000})
  bands, valid = scenes.read_scene(scenes._stac_scene(folder / "dark.json"), ZONE)
  np.testing.assert_array_equal(bands[:, 3, 3], [1, 1, 1, 2])   # max(DN-1000, 1)
  assert valid.all()


def test_truncated_geotiff_names_the_file(tmp_path, scene_dir):
  path = scene_dir / "s1" / "B04.tif"
  data = path.read_bytes()
  path.write_bytes(data[: len(data) // 2])
  with pytest.raises(UserError, match=r"B04\.tif: unreadable .*re-download scene s1"):
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      scenes.composite_zone_from_scenes(scene_dir, ZONE, tmp_path / "out",
                                        progress=False)
  assert not (tmp_path / "out" / "s2.tif").exists()


def test_missing_band(tmp_path, scene_dir):
  (scene_dir / "s3" / "B08.tif").unlink()
  with pytest.raises(UserError, match=r"B08\.tif: scene s3 lacks this band"):
    scenes.composite_zone_from_scenes(scene_dir, ZONE, tmp_path / "out",
                                      progress=False)


def test_headers_are_read_once_until_a_band_changes(scene_dir, monkeypatch):
  """footprint opens a scene's 4 band headers once per process (every zone of a run
  asks about every scene, twice); a band rewritten under its name is checked again."""
  [scene] = [s for s in scenes.discover_scenes(scene_dir) if s.scene_id == "s1"]
  opened, real = [], rasterio.open
  monkeypatch.setattr(rasterio, "open", lambda path, *a, **k: opened.append(path) or
                      real(path, *a, **k))
  first = scenes.footprint(scene)
  assert len(opened) == 5                         # B02 (CRS, bounds), then the 4 checked
  assert scenes.footprint(scene) == first and len(opened) == 5
  band = scene_dir / "s1" / "B04.tif"
  band.unlink()
  _write(band, np.full((20, 20), 202, np.uint16), 20.0)     # delivered at 20 m
  with pytest.raises(UserError, match=r"B04\.tif: 20 x 20 m pixels, expected the band's "
                     r"native 10 m"):
    scenes.footprint(scene)


def test_no_scene_covers_the_zone(tmp_path):
  d = tmp_path / "scenes"
  write_item(d, "far", "2023-01-10", 700, x0=500_000.0)
  write_item(d, "old", "2022-01-10", 700)
  with pytest.raises(UserError, match="none of the 2 scenes .* is of 2023 and covers"):
    scenes.composite_zone_from_scenes(d, ZONE, tmp_path / "out", progress=False)


def test_empty_or_missing_scene_dir(tmp_path):
  (tmp_path / "empty").mkdir()
  with pytest.raises(UserError, match="no Sentinel-2 L2A scene found"):
    scenes.composite_zone_from_scenes(tmp_path / "empty", ZONE, tmp_path / "o")
  (tmp_path / "empty" / "S2A_MSIL2A_20230415T105031_N0509_R051_T31UCP_x.zip").touch()
  with pytest.raises(UserError, match=r"x\.zip and 0 more are zipped: unzip them first"):
    scenes.composite_zone_from_scenes(tmp_path / "empty", ZONE, tmp_path / "o")
  with pytest.raises(UserError, match="scene folder not found"):
    scenes.composite_zone_from_scenes(tmp_path / "nope", ZONE, tmp_path / "o")


def test_bad_item_json(tmp_path):
  folder = write_item(tmp_path / "s", "x", "2023-01-01", 100)
  (folder / "x.json").write_text("{}")
  with pytest.raises(UserError, match=r"x\.json: not a STAC item"):
    scenes.discover_scenes(tmp_path / "s")


def _write_safe(root, name, value, *, mtd_offset=None):
  safe = root / f"{name}.SAFE"
  tile = "T31UCP"
  img = safe / "GRANULE" / f"L2A_{tile}_A000001_20230612T105619" / "IMG_DATA"
  stamp = name.split("_")[2]
  jp2 = dict(driver="JP2OpenJPEG", QUALITY=100, REVERSIBLE="YES")
  for c, band in enumerate(scenes.BAND_FILES):
    _write(img / "R10m" / f"{tile}_{stamp}_{band}_10m.jp2",
           np.full((40, 40), value + c, np.uint16), 10.0, **jp2)
  _write(img / "R20m" / f"{tile}_{stamp}_SCL_20m.jp2", _scl([(0, 0)]), 20.0, **jp2)
  if mtd_offset is not None:
    (safe / "MTD_MSIL2A.xml").write_text(
        "<root><BOA_ADD_OFFSET_VALUES_LIST>"
        + "".join(f'<BOA_ADD_OFFSET band_id="{i}">{mtd_offset}</BOA_ADD_OFFSET>'
                  for i in range(13))
        + "</BOA_ADD_OFFSET_VALUES_LIST></root>")
  return safe


def test_safe_products(tmp_path):
  d = tmp_path / "safe"
  _write_safe(d, "S2B_MSIL2A_20230612T105619_N0509_R094_T31UCP_20230612T140000",
              1600, mtd_offset=-1000)
  _write_safe(d, "S2A_MSIL2A_20230620T105619_N0509_R094_T31UCP_20230620T140000",
              1800)                                     # no MTD: baseline -> -1000
  _write_safe(d, "S2A_MSIL2A_20230801T105619_N0300_R094_T31UCP_20230801T140000",
              700)                                      # old baseline: no offset
  found = scenes.discover_scenes(d)
  assert [s.offsets for s in found] == [(-1000,) * 4, (-1000,) * 4, (0,) * 4]
  assert [s.spacecraft for s in found] == ["B", "A", "A"]
  assert [str(s.date) for s in found] == ["2023-06-12", "2023-06-20", "2023-08-01"]
  out = tmp_path / "out"
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    info = scenes.composite_zone_from_scenes(d, ZONE, out, progress=False)
  img = zonefolder.open_zone(out).read_image()
  c = np.arange(4)
  np.testing.assert_array_equal(img[5, 15, 15], 700 + c)   # mean of 600, 800
  assert not img[:, 0, 0].any() and info["nodata_pixels"] == 4   # always cloudy
  np.testing.assert_array_equal(img[7, 15, 15], 700 + c)   # August
  np.testing.assert_array_equal(img[6, 15, 15], 700 + c)   # July filled
  np.testing.assert_array_equal(img[0, 15, 15], 700 + c)   # leading: next value
  assert info["scenes_per_month"][5] == 2


def test_truncated_jp2_names_the_file(tmp_path):
  safe = _write_safe(tmp_path / "safe",
                     "S2B_MSIL2A_20230612T105619_N0509_R094_T31UCP_20230612T140000", 1600)
  path = next(safe.rglob("*_B03_10m.jp2"))
  path.write_bytes(path.read_bytes()[:200])
  with pytest.raises(UserError, match=r"B03_10m\.jp2: unreadable .*re-download scene S2B"):
    scenes.composite_zone_from_scenes(tmp_path / "safe", ZONE, tmp_path / "out",
                                      progress=False)


# --- one acquisition, several tiles -----------------------------------------

A, B = {"platform": "sentinel-2a"}, {"platform": "sentinel-2b"}


def _props(extra):
  return {"earthsearch:boa_offset_applied": True, **extra}


def _june(tmp_path, d):
  out = tmp_path / "out"
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    info = scenes.composite_zone_from_scenes(d, ZONE, out, progress=False)
  zf = zonefolder.open_zone(out)
  return zf.read_image()[5], zf.read_valid_count()[5], info


def test_same_acquisition_on_two_tiles_is_one_observation(tmp_path):
  d = tmp_path / "scenes"
  write_item(d, "a_T31TCJ", "2023-06-01", 1000, props=_props(A))
  # The neighbouring tile of the same UTM zone, same acquisition: values differ a
  # little (tile-wise processing) and its first 20 m row is cloudy on the first tile.
  write_item(d, "a_T31TDJ", "2023-06-01", 1010, props=_props(A))
  cloudy = _scl([(r, c) for r in (0,) for c in range(0, 30, 2)])
  _write(d / "a_T31TCJ" / "SCL.tif", cloudy, 20.0)
  write_item(d, "b", "2023-06-11", 2000, props=_props(B))
  img, count, info = _june(tmp_path, d)
  c = np.arange(4)
  # One observation per acquisition: median of (1000, 2000), not of (1000, 1010, 2000).
  np.testing.assert_array_equal(img[15, 15], 1500 + c)
  assert count[15, 15] == 2 and count.max() == 2
  # Where the first tile is cloudy the other tile of the acquisition fills in.
  np.testing.assert_array_equal(img[0, 3], (1010 + 2000 + 1) // 2 + c)
  assert count[0, 3] == 2
  assert info["scenes_per_month"][5] == 3 and info["acquisitions_per_month"][5] == 2
  # Another spacecraft on the same date is another acquisition.
  write_item(d, "c", "2023-06-11", 3000, props=_props(A))
  img, count, _ = _june(tmp_path, d)
  assert count[15, 15] == 3
  np.testing.assert_array_equal(img[15, 15], 2000 + c)


def test_neighbouring_utm_zone_fills_only_where_own_tile_is_invalid(tmp_path):
  import rasterio.warp
  d = tmp_path / "scenes"
  # The zone's own tile (EPSG:32631): clouds on the zone's first 20 m row and the
  # right part of the zone outside its footprint (it ends at zone column 20).
  own = write_item(d, "z_own", "2023-06-01", 1000, props=_props(A), size=30)
  _write(own / "SCL.tif", _scl([(0, c) for c in range(0, 20, 2)]), 20.0)
  # The same acquisition on a tile of UTM zone 30 (sorts first by id): 3000.
  left, bottom, right, top = rasterio.warp.transform_bounds(
      f"EPSG:{EPSG}", "EPSG:32630", *ZONE.bounds, densify_pts=21)
  x0, y0 = np.floor(left / 10) * 10 - 200, np.ceil(top / 10) * 10 + 200
  size = int(max(right - left, top - bottom) / 10) + 60
  folder = d / "a_utm30"
  for c, band in enumerate(scenes.BAND_FILES):
    _write(folder / f"{band}.tif", np.full((size, size), 3000 + c, np.uint16), 10.0,
           x0, y0, epsg=32630)
  _write(folder / "SCL.tif", np.full((size // 2, size // 2), 4, np.uint8), 20.0,
         x0, y0, epsg=32630)
  (folder / "a_utm30.json").write_text(json.dumps(
      {"type": "Feature", "id": "a_utm30", "properties": dict(
          _props(A), datetime="2023-06-01T10:56:21Z", **{"proj:epsg": 32630})}))
  found = [s for s in scenes.discover_scenes(d)]
  assert [s.scene_id for g in scenes.acquisitions(found, ZONE) for s in g] == [
      "z_own", "a_utm30"]
  img, count, info = _june(tmp_path, d)
  c = np.arange(4)
  np.testing.assert_array_equal(img[10, 10], 1000 + c)    # own tile valid: own value
  np.testing.assert_array_equal(img[0, 5], 3000 + c)      # own tile cloudy: zone 30
  np.testing.assert_array_equal(img[10, 25], 3000 + c)    # outside own footprint
  assert (count == 1).all()                               # one acquisition everywhere
  assert (img[:, :, 0] > 0).all()
  assert info["acquisitions_per_month"][5] == 1 and info["scenes_per_month"][5] == 2


def test_zone_off_the_grid_is_refused_before_reading(tmp_path, scene_dir):
  off = Zone("t_0", "Test", "Town", 0, EPSG, x0=400_005.0, y0=5_000_000.0,
             width=30, height=30)
  with pytest.raises(UserError, match=r"^zone t_0: corner x0=400005\.0.* off the 10 m "
                                      r"Sentinel-2 grid"):
    scenes.composite_zone_from_scenes(scene_dir, off, tmp_path / "out", progress=False)
  assert not (tmp_path / "out").exists()


def test_cli_refuses_an_off_grid_zones_row_before_any_zone(tmp_path, scene_dir, capsys):
  from prep import cli
  from prep import zones as zones_lib
  ok = Zone("a_0", "Test", "Town", 0, EPSG, x0=400_000.0, y0=5_000_000.0,
            width=30, height=30)
  off = Zone("b_0", "Test", "Town", 1, EPSG, x0=400_000.0, y0=5_000_005.0,
             width=30, height=30)
  table = tmp_path / "zones.csv"
  zones_lib.write_zones([ok, off], table)
  rc = cli.main(["--quiet", "composite", "--scenes", str(scene_dir), "--zones-csv",
                 str(table), "--all", "--out", str(tmp_path / "zones")])
  err = capsys.readouterr().err.strip()
  assert rc == 2 and len(err.splitlines()) == 1, err
  assert err.startswith(f"error: {table}: zone b_0: corner x0=400000.0, y0=5000005.0")
  assert "set x0=400000, y0=5000000, res=10 in its row of the zones table" in err
  assert not (tmp_path / "zones").exists()            # not even the good zone


# --- the real Flanders series through `prep composite` -----------------------

from tests.real_samples import REAL, needs_real  # noqa: E402

FLANDERS = REAL / "flanders_patch_0000280849BAC91C"
_NC = "S2_L2A_{res}_0000280849BAC91C_32631_2018-08-01_2019-11-30.nc"


def _read_flanders():
  """The real series: datetimes [T], uint16 [T, 4, 64, 64], uint8 SCL [T, 32, 32],
  and the upper-left corners of the 10 m and 20 m grids (from the pixel centres)."""
  import datetime
  h5py = pytest.importorskip("h5py")            # NetCDF4 files are HDF5
  with h5py.File(FLANDERS / _NC.format(res="10m")) as f10, \
       h5py.File(FLANDERS / _NC.format(res="20m")) as f20:
    units = f10["timestamp"].attrs["units"]
    t0 = datetime.datetime.fromisoformat(units.removeprefix("seconds since "))
    stamps = [t0 + datetime.timedelta(seconds=int(s)) for s in f10["timestamp"][:]]
    assert (f20["timestamp"][:] == f10["timestamp"][:]).all()
    bands = np.stack([f10[b][:] for b in ("B02", "B03", "B04", "B08")], axis=1)
    scl = f20["SCL"][:]
    corners = [(float(f["x"][0]) - r / 2, float(f["y"][0]) + r / 2)
               for f, r in ((f10, 10), (f20, 20))]
  return stamps, bands, scl, corners


def _write_flanders_items(root, stamps, bands, scl, corners):
  """One Earth Search-like STAC item + tiled GeoTIFFs per date: the layout users
  download (COGs are read the same way; GDAL's COG writer is 4x slower here)."""
  (x10, y10), (x20, y20) = corners
  for stamp, dn, cls in zip(stamps, bands, scl):
    iid = f"S2_31UES_{stamp:%Y%m%d}_0_L2A"        # spacecraft unknown in the source
    folder = root / iid
    for band, arr in zip(("B02", "B03", "B04", "B08"), dn):
      _write(folder / f"{band}.tif", arr, 10.0, x10, y10, epsg=32631, tiled=True,
             blockxsize=64, blockysize=64, compress="deflate")
    _write(folder / "SCL.tif", cls, 20.0, x20, y20, epsg=32631, tiled=True,
           blockxsize=32, blockysize=32, compress="deflate")
    item = {"type": "Feature", "stac_version": "1.0.0", "id": iid,
            "properties": {"datetime": f"{stamp:%Y-%m-%dT%H:%M:%S}Z",
                           "proj:epsg": 32631, "s2:mgrs_tile": "31UES"},
            "assets": {b: {"href": f"{b}.tif"} for b in (*scenes.BAND_FILES, "SCL")}}
    (folder / f"{iid}.json").write_text(json.dumps(item))


@needs_real
def test_real_flanders_series_through_prep_composite(tmp_path, capsys):
  from prep import cli
  from prep import zones as zones_lib
  stamps, bands, scl, corners = _read_flanders()
  assert len(stamps) == 72 and corners == [(574680.0, 5622440.0)] * 2
  # dates.txt's clear fractions are those of this SCL (read check).
  lines = [l.split() for l in (FLANDERS / "dates.txt").read_text().splitlines()
           if l and not l.startswith("#")]
  assert [l[0] for l in lines] == [f"{s:%Y-%m-%dT%H:%M:%S}" for s in stamps]
  clear = np.isin(scl, (4, 5, 6, 7)).mean(axis=(1, 2))
  np.testing.assert_allclose(clear, [float(l[1]) for l in lines], atol=5e-4)
  # 2019, plus the last two scenes of 2018 (skipped as of another year).
  keep = [i for i, s in enumerate(stamps) if s.year == 2019 or s.month == 12][-50:]
  _write_flanders_items(tmp_path / "scenes", [stamps[i] for i in keep], bands[keep],
                        scl[keep], corners)
  zone = Zone("flanders_0", "Flanders", "Gent", 0, 32631, x0=574680.0, y0=5622440.0,
              width=64, height=64, source="real-sample")
  zones_lib.write_zones([zone], tmp_path / "zones.csv")
  rc = cli.main(["--quiet", "composite", "--scenes", str(tmp_path / "scenes"),
                 "--zones-csv", str(tmp_path / "zones.csv"), "--all",
                 "--out", str(tmp_path / "zones"), "--year", "2019"])
  assert rc == 0, capsys.readouterr().err
  zf = zonefolder.open_zone(tmp_path / "zones" / "flanders_0")
  img, count = zf.read_image(), zf.read_valid_count()        # [T, H, W, C], [T, H, W]
  info = zf.meta["imagery"]
  n_2019 = sum(s.year == 2019 for s in stamps)
  assert info["scenes_used"] == n_2019 == 48 and info["scenes_other_years"] == 2
  assert info["acquisitions_per_month"] == info["scenes_per_month"]   # one tile a date
  assert info["harmonization_offsets"] == [0]               # pre-2022, no baseline
  assert info["months_without_scene"] == ["2019-12"]

  # By hand, in numpy: SCL 4-7 (each 10 m pixel in its 20 m pixel) and bands > 0.
  year = np.array([s.year == 2019 for s in stamps])
  month = np.array([s.month for s in stamps])
  scl10 = scl.repeat(2, axis=1).repeat(2, axis=2)
  valid = np.isin(scl10, (4, 5, 6, 7)) & (bands > 0).all(axis=1)       # [T, H, W]
  want = np.zeros((12, 64, 64, 4))
  for m in range(1, 13):
    sel = year & (month == m)
    obs = np.where(valid[sel][:, None], bands[sel].astype(float), np.nan)  # [S, 4, H, W]
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", RuntimeWarning)        # all-NaN pixels
      med = np.nanmedian(obs, axis=0) if sel.any() else np.full((4, 64, 64), np.nan)
    want[m - 1] = np.floor(med + 0.5).transpose(1, 2, 0)     # half up
    np.testing.assert_array_equal(count[m - 1], valid[sel].sum(axis=0))
  observed = ~np.isnan(want[..., 0])
  np.testing.assert_array_equal(img[observed], want[observed])
  # Masking mattered: pixels where the unmasked median differs from ours.
  sep = year & (month == 9)
  assert (scl[sep] == 11).any()                              # Sen2Cor's "snow" clouds
  raw_median = np.floor(np.median(bands[sep], axis=0) + 0.5).transpose(1, 2, 0)
  differs = (raw_median != want[8]).any(-1) & observed[8]
  assert differs.mean() > 0.5
  # A few pixels by hand, from the scene list alone.
  for r, c, m in ((0, 0, 4), (40, 17, 6), (63, 63, 11)):
    days = [i for i, s in enumerate(stamps) if s.year == 2019 and s.month == m
            and scl[i, r // 2, c // 2] in (4, 5, 6, 7)]
    vals = sorted(int(bands[i, 0, r, c]) for i in days)
    k = len(vals)
    assert img[m - 1, r, c, 0] == (vals[(k - 1) // 2] + vals[k // 2] + 1) // 2
  # Gaps: January's cloudy pixels take February (leading), September's the
  # rounded mean of August and October, December (no scene) November.
  jan, sept = ~observed[0], ~observed[8]
  assert jan.sum() == 36 and sept.sum() == 288
  np.testing.assert_array_equal(img[0][jan], want[1][jan])
  np.testing.assert_array_equal(img[8][sept],
                                np.floor((want[7][sept] + want[9][sept]) / 2 + 0.5))
  np.testing.assert_array_equal(img[11], want[10])
  assert info["nodata_pixels"] == 0


@needs_real
def test_real_tiny_safe_is_refused_for_lacking_b08(tmp_path):
  """The real SAFE of baseline 04.00 has B02-B04 only: the reader names what is missing."""
  safe = next((REAL / "safe_tiny_T34TGN_N0400").glob("*.SAFE"))
  with pytest.raises(UserError, match=rf"{safe.name}: scene lacks B08 "
                                      r"\(GRANULE/\*/IMG_DATA/R10m/\*_B08_10m\.jp2\)"):
    scenes.discover_scenes(safe.parent)
