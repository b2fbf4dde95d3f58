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


def _write(path, arr, res, x0=SX0, y0=SY0, driver="GTiff", **opts):
  path.parent.mkdir(parents=True, exist_ok=True)
  with rasterio.open(path, "w", driver=driver, width=arr.shape[1],
                     height=arr.shape[0], count=1, dtype=arr.dtype.name,
                     crs=f"EPSG:{EPSG}", transform=Affine(res, 0, x0, 0, -res, y0),
                     nodata=0, **opts) as dst:
    dst.write(arr, 1)


def _scl(clouds=(), cls=9, base=4):
  """uint8 [20, 20] SCL; `clouds` are zone pixels (r, c), r and c even."""
  scl = np.full((20, 20), base, np.uint8)
  for r, c in clouds:
    scl[(r + 10) // 2, (c + 10) // 2] = cls
  return scl


def write_item(root, item_id, date, value, *, scl=None, props=None,
               x0=SX0, y0=SY0, zero_at=None):
  """A STAC item whose band c is `value + c` everywhere (B08 0 at `zero_at`)."""
  folder = pathlib.Path(root) / item_id
  for c, band in enumerate(scenes.BAND_FILES):
    arr = np.full((40, 40), value + c, np.uint16)
    if zero_at is not None and band == "B08":
      arr[zero_at[0] + 10, zero_at[1] + 10] = 0
    _write(folder / f"{band}.tif", arr, 10.0, x0, y0)
  _write(folder / "SCL.tif", _scl() if scl is None else scl, 20.0, x0, y0)
  item = {"type": "Feature", "stac_version": "1.0.0", "id": item_id,
          "properties": {"datetime": f"{date}T10:56:21Z", "proj:epsg": EPSG,
                         **(props or {})}}
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
  assert scene.offset == -1000
  bands, valid = scenes.read_scene(scene, ZONE)
  np.testing.assert_array_equal(bands[:, 0, 0], [500, 501, 502, 503])
  assert valid.all()
  folder = write_item(tmp_path, "done", "2023-06-01", 1500,
                      props={"s2:processing_baseline": "05.09",
                             "earthsearch:boa_offset_applied": True})
  assert scenes._stac_scene(folder / "done.json").offset == 0


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
  assert [s.offset for s in found] == [-1000, -1000, 0]
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
