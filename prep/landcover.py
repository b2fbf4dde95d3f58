"""Land cover on the zone grid: the farmland outside the RPG that nobody declared.

`prep labels` gives the background class (`non_agricultural`) to the pixels
away from every RPG parcel. Without a land-cover raster that is all of them,
and the farmland outside the RPG (fields of farmers who claim no CAP aid,
grazed commons, gardens) becomes background too. With one, the pixels it calls
cropland or grassland stay unlabelled (255) instead: undeclared farmland is
neither a crop class we can name nor background.

Legend: ESA WorldCover's (10 tree cover, 20 shrubland, 30 grassland, 40
cropland, 50 built-up, 60 bare / sparse vegetation, 70 snow and ice, 80
permanent water, 90 herbaceous wetland, 95 mangroves, 100 moss and lichen;
0 = no data). Farmland is 30 and 40. A raster with another legend is refused
(reclassify it to WorldCover's first).

Sources:
  * a local GeoTIFF (any CRS and grid, e.g. a WorldCover tile from ESA, in
    EPSG:4326): reprojected onto the zone grid with nearest resampling (a class
    is never averaged with its neighbours), reading only the window the zone
    needs. Refused in one line naming the file when it cannot be read, has no
    CRS, does not cover the zone or holds values outside the legend.
  * `worldcover`: ESA/WorldCover/v200 (10 m, 2021) through Earth Engine, one
    `computePixels` on the zone grid (nearest resampling, Earth Engine's
    default; 1 byte per pixel, 1 MB for a 1000 px zone, far under the 48 MiB
    limit of a request). Earth Engine must be initialized first
    (`prep.gee.initialize`).

Pixels without a value (0, or the file's nodata) are unknown land: they stay
unlabelled too, never background.
"""
from __future__ import annotations

import pathlib

import numpy as np

from cropcontracts.errors import UserError
from cropcontracts.zone import Zone

WORLDCOVER = "ESA/WorldCover/v200"
WORLDCOVER_SOURCE = "worldcover"       # the --landcover value that asks Earth Engine
BAND = "Map"                           # WorldCover's one band
NO_DATA = 0
GRASSLAND, CROPLAND = 30, 40
FARMLAND = (GRASSLAND, CROPLAND)
LEGEND = (10, 20, GRASSLAND, CROPLAND, 50, 60, 70, 80, 90, 95, 100)


def read(source, zone: Zone) -> tuple[np.ndarray, dict]:
  """The land cover of `zone` from `source` ("worldcover" or a GeoTIFF path).

  Returns:
    (int [H, W] WorldCover classes on the zone grid, NO_DATA where unknown;
    the record for meta.json: {source: "file", path, crs} or
    {source: "worldcover", collection}).
  """
  if str(source) == WORLDCOVER_SOURCE:
    classes, record = from_worldcover(zone), dict(source=WORLDCOVER_SOURCE,
                                                  collection=WORLDCOVER)
  else:
    classes, record = from_geotiff(source, zone)
  check_legend(classes, record.get("path", WORLDCOVER), zone)
  return classes, record


def farmland_or_unknown(classes: np.ndarray) -> np.ndarray:
  """bool [H, W]: True where the land cover says farmland (30, 40) or nothing."""
  return np.isin(classes, FARMLAND) | (classes == NO_DATA)


def check_legend(classes: np.ndarray, what, zone: Zone) -> None:
  """UserError naming `what` when `classes` hold a value outside WorldCover's legend."""
  found = np.unique(classes)
  bad = found[~np.isin(found, (NO_DATA,) + LEGEND)]
  if bad.size:
    raise UserError(
        f"{what}: values {', '.join(map(str, bad[:10].tolist()))} over zone {zone.zone_id} "
        f"are not ESA WorldCover classes ({', '.join(map(str, LEGEND))}; 0 no data); "
        f"reclassify the raster to WorldCover's legend (farmland: {GRASSLAND} grassland, "
        f"{CROPLAND} cropland)")


def from_geotiff(path, zone: Zone) -> tuple[np.ndarray, dict]:
  """A local land-cover raster read onto the zone grid (nearest resampling).

  Returns:
    (int [H, W] classes, NO_DATA where the file has no data; {source: "file",
    path, crs}).
  """
  import rasterio
  import rasterio.warp
  path = pathlib.Path(path)
  fix = "pass a land-cover GeoTIFF (WorldCover's legend) that covers the zone"
  try:
    src = rasterio.open(path)
  except (rasterio.errors.RasterioError, OSError) as e:
    raise UserError(f"{path}: not a readable land-cover raster ({e}); {fix}") from None
  with src:
    if src.crs is None:
      raise UserError(f"{path}: the land-cover raster has no CRS; {fix}")
    crs = f"EPSG:{src.crs.to_epsg()}" if src.crs.to_epsg() else src.crs.to_string()
    _check_covers(path, src, zone, crs, fix)
    out = np.full(zone.shape, NO_DATA, src.dtypes[0])
    try:
      rasterio.warp.reproject(
          rasterio.band(src, 1), out, dst_transform=zone.transform, dst_crs=zone.crs,
          src_nodata=src.nodata, dst_nodata=NO_DATA,
          resampling=rasterio.warp.Resampling.nearest)
    except rasterio.errors.RasterioError as e:
      raise UserError(f"{path}: the land-cover raster cannot be read ({e}); {fix}") from None
  return out.astype(np.int64), dict(source="file", path=str(path), crs=crs)


def _check_covers(path, src, zone: Zone, crs: str, fix: str) -> None:
  """UserError unless the raster's extent holds the whole zone square."""
  import rasterio.warp
  left, bottom, right, top = rasterio.warp.transform_bounds(zone.crs, src.crs, *zone.bounds,
                                                            densify_pts=21)
  b = src.bounds
  tol = 1e-6 * max(abs(src.res[0]), abs(src.res[1]))
  if left < b.left - tol or right > b.right + tol or bottom < b.bottom - tol or \
      top > b.top + tol:
    raise UserError(f"{path}: the land-cover raster ({crs}, bounds {_rounded(b)}) does not "
                    f"cover zone {zone.zone_id} ({_rounded((left, bottom, right, top))} in "
                    f"that CRS); {fix}")


def _rounded(bounds) -> str:
  return "(" + ", ".join(f"{v:.6g}" if abs(v) < 1000 else f"{v:.0f}" for v in bounds) + ")"


def worldcover_request(zone: Zone) -> dict:
  """The computePixels request of WorldCover's classes on the zone grid."""
  return {
      "expression": worldcover_image().unmask(NO_DATA).toUint8(),
      "fileFormat": "NUMPY_NDARRAY",
      "bandIds": [BAND],
      "grid": {
          "dimensions": {"width": zone.width, "height": zone.height},
          "affineTransform": {"scaleX": zone.res, "shearX": 0, "translateX": zone.x0,
                              "shearY": 0, "scaleY": -zone.res, "translateY": zone.y0},
          "crsCode": zone.crs,
      },
  }


def worldcover_image():
  """ESA WorldCover v200's class band (ee.Image `Map`)."""
  import ee
  return ee.ImageCollection(WORLDCOVER).first().select(BAND)


def from_worldcover(zone: Zone) -> np.ndarray:
  """int [H, W] WorldCover classes of `zone` through Earth Engine (initialized first)."""
  import ee
  from prep import gee
  request = worldcover_request(zone)
  data = gee.with_retries(lambda: ee.data.computePixels(request),
                          f"WorldCover of zone {zone.zone_id}")
  return np.asarray(data[BAND], np.int64)
