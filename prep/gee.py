"""Monthly composites of a zone through Google Earth Engine (the study's route).

Provenance: `COPERNICUS/S2_SR_HARMONIZED`, Sentinel-2 L2A surface reflectance
(x 10000) with the processing-baseline-04.00 offset already removed. Earth
Engine groups the scenes into acquisitions (date, spacecraft), mosaics the
tiles of each (the zone's own UTM CRS on top, `acquisition_mosaics`), and
computes, per month, the median of B2 B3 B4 B8 over the acquisitions whose SCL
class is 4-7 (and whose bands are > 0), and the count of those observations;
we fetch them on the zone grid with `ee.data.computePixels` and finish locally
with the same `composite.gap_fill` and `zonefolder.write_imagery` as the local
route (`prep.scenes`), so both routes give the same zone folder.

Requests. One month of a zone is one image of 5 bands (4 x uint16 reflectance
+ uint8 count, 9 bytes per pixel). The zone is cut into tiles so that each
response stays under `MAX_REQUEST_BYTES` (well under the 48 MiB computePixels
limit); a 1000 x 1000 zone-month is 9 MB, one tile. Medians are taken from the
sorted per-pixel arrays (`median_half_up`): an even count gives the mean of the
two middle values rounded half up, exactly like `composite.median_composite`.

Resumable. Each fetched (month, tile) is saved atomically as
`out_folder/.gee_cache/<YYYY-MM>_r<row>_c<col>.npy`, so a rerun after an
interruption fetches only what is missing; the cache is removed once the zone
folder is written. Quota (429, "Too many concurrent") and server (5xx) errors
are retried with exponential back-off, `max_retries` times.

Credentials: `JAXCROP_EE_KEY` (path to a service-account key JSON) if set,
else the user's `earthengine authenticate` credentials; the Cloud project comes
from `project` or `JAXCROP_EE_PROJECT`.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import shutil
import time
import warnings
from typing import Callable

import numpy as np

from cropcontracts import atomic
from prep import composite as composite_lib
from prep import s2_products
from cropcontracts import zonefolder
from cropcontracts.errors import UserError
from cropcontracts.zone import Zone

COLLECTION = "COPERNICUS/S2_SR_HARMONIZED"
EE_BANDS = zonefolder.BANDS                 # Earth Engine names them as we do
COUNT_BAND = "count"
VALID_SCL = (min(zonefolder.VALID_SCL), max(zonefolder.VALID_SCL))  # an inclusive range
BYTES_PER_PIXEL = 2 * len(EE_BANDS) + 1     # uint16 bands + uint8 count
MAX_REQUEST_BYTES = 32 * 2**20              # computePixels allows 48 MiB
MAX_TILE_SIDE = 1024
CACHE_DIR = ".gee_cache"
# earthengine-api turns an HTTP error into an EEException holding only the
# reason text (`ee.data._translate_cloud_exception`), so a status code is
# matched as a whole number (never inside "50000000 bytes") and the reasons
# Google's APIs give for quota and server errors as phrases.
_RETRYABLE = re.compile(
    r"\b(?:429|500|502|503|504)\b|too many (?:requests|concurrent)|quota|rate limit"
    r"|resource exhausted|internal error|unavailable|backend error|deadline exceeded"
    r"|try again", re.IGNORECASE)


def initialize(project: str | None = None) -> None:
  """Initializes Earth Engine, or raises a UserError that says how to fix it."""
  import ee
  project = project or os.environ.get("JAXCROP_EE_PROJECT")
  key = os.environ.get("JAXCROP_EE_KEY")
  fix = ("run `earthengine authenticate` (or set JAXCROP_EE_KEY to a service-account "
         "key JSON) and set JAXCROP_EE_PROJECT to your Google Cloud project")
  try:
    if key:
      path = pathlib.Path(key)
      try:
        email = json.loads(path.read_text(encoding="utf-8"))["client_email"]
      except (OSError, ValueError, KeyError) as e:
        raise UserError(f"{path}: JAXCROP_EE_KEY is not a readable service-account "
                        f"key JSON ({e!r}); {fix}") from None
      ee.Initialize(ee.ServiceAccountCredentials(email, key_file=str(path)),
                    project=project)
    else:
      ee.Initialize(project=project)
  except UserError:
    raise
  except Exception as e:  # ee raises EEException, google-auth its own errors
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise UserError(f"Earth Engine: cannot initialize (project={project!r}): "
                    f"{first}; {fix}") from None


def zone_geometry(zone: Zone):
  """The zone's square as an ee.Geometry in its own UTM CRS (planar)."""
  import ee
  left, bottom, right, top = zone.bounds
  return ee.Geometry.Rectangle([left, bottom, right, top], zone.crs, False)


def mask_scene(image):
  """Keeps B2 B3 B4 B8 (as float) where SCL is 4-7 and every band is > 0."""
  scl = image.select("SCL")
  bands = image.select(list(EE_BANDS)).toFloat()
  keep = (scl.gte(VALID_SCL[0]).And(scl.lte(VALID_SCL[1]))
          .And(bands.reduce("min").gt(0)))
  return bands.updateMask(keep)


def scenes_of_year(zone: Zone, year: int):
  """The S2_SR_HARMONIZED scenes of `year` over the zone (ee.ImageCollection)."""
  import ee
  return (ee.ImageCollection(COLLECTION)
          .filterBounds(zone_geometry(zone))
          .filterDate(f"{year}-01-01", f"{year + 1}-01-01"))


def month_range(year: int, month: int) -> tuple[str, str]:
  """[start, end) dates of a 1-based month, as Earth Engine date strings."""
  end = f"{year + 1}-01-01" if month == 12 else f"{year}-{month + 1:02d}-01"
  return f"{year}-{month:02d}-01", end


def median_half_up(scenes, band: str):
  """Per-pixel median of `band` over the scenes, exactly as the local route:
  the mean of the two middle values of an even count, rounded half up
  (`composite.median_composite`); masked where no scene is valid.

  Built from the sorted per-pixel array of valid values rather than
  `ee.Reducer.median`, whose handling of even counts is not documented (and
  which switches to a histogram above `maxRaw` values), so that both routes
  give the same composite by construction.
  """
  values = scenes.select(band).toArray().arrayProject([0]).arraySort()   # [n] a pixel
  n = values.arrayLength(0)
  some = n.gt(0)
  lo = values.arrayGet(n.subtract(1).divide(2).floor().toInt().updateMask(some))
  hi = values.arrayGet(n.divide(2).floor().toInt().updateMask(some))
  return lo.add(hi).add(1).divide(2).floor().rename(band)


def tag_acquisition(zone: Zone):
  """A function image -> image setting `acquisition` ("YYYY-MM-dd_Sentinel-2A":
  UTC date and spacecraft) and `own_crs` (1 when the tile's B2 is in the
  zone's CRS, else 0)."""
  import ee

  def tag(image):
    date = ee.Date(image.get("system:time_start")).format("YYYY-MM-dd")
    key = date.cat("_").cat(ee.String(image.get("SPACECRAFT_NAME")))
    own = ee.Number(ee.String(image.select("B2").projection().crs())
                    .compareTo(zone.crs)).eq(0)
    return image.set({"acquisition": key, "own_crs": own})
  return tag


def acquisition_mosaics(scenes, zone: Zone):
  """One masked image per acquisition (date, spacecraft) of the collection.

  Neighbouring MGRS tiles overlap and deliver the same acquisition once per
  tile, so the tiles of an acquisition are mosaicked into one observation
  before the median, as in the local route (`prep.scenes.mosaic`): each group
  sorted by `own_crs` so that the zone's own-CRS tiles are painted last (on
  top, `ImageCollection.mosaic`), after masking, so that a tile of the
  neighbouring UTM zone shows only where the own tile has no valid pixel.
  """
  import ee
  tagged = scenes.map(tag_acquisition(zone))
  keys = tagged.aggregate_array("acquisition").distinct()

  def one(key):
    group = tagged.filter(ee.Filter.eq("acquisition", key)).sort("own_crs")
    return group.map(mask_scene).mosaic().set("acquisition", key)
  return ee.ImageCollection.fromImages(keys.map(one))


def monthly_image(zone: Zone, year: int, month: int):
  """One month's composite: B2 B3 B4 B8 uint16 medians and a uint8 `count`.

  The median and the count run over acquisitions (`acquisition_mosaics`),
  not tiles. A fully masked placeholder joins the collection so that a month
  without any scene still has the bands (then 0 everywhere) instead of failing.
  """
  import ee
  start, end = month_range(year, month)
  empty = (ee.Image.constant([0] * len(EE_BANDS)).rename(list(EE_BANDS))
           .toFloat().updateMask(0))
  scenes = (acquisition_mosaics(scenes_of_year(zone, year).filterDate(start, end), zone)
            .merge(ee.ImageCollection([empty])))
  median = ee.Image.cat([median_half_up(scenes, b) for b in EE_BANDS])
  median = median.unmask(0).toUint16()                          # 0 = no valid scene
  count = scenes.select("B2").count().rename(COUNT_BAND).unmask(0).toUint8()
  return median.addBands(count)


@dataclasses.dataclass(frozen=True)
class Tile:
  """A window of the zone grid: rows [row, row + height), cols [col, col + width)."""
  row: int
  col: int
  height: int
  width: int


def plan_tiles(zone: Zone, *, bytes_per_pixel: int = BYTES_PER_PIXEL,
               max_bytes: int = MAX_REQUEST_BYTES,
               max_side: int = MAX_TILE_SIDE) -> list[Tile]:
  """Square-ish tiles covering the zone exactly, each response <= max_bytes."""
  side = min(max_side, int((max_bytes // bytes_per_pixel) ** 0.5))
  if side < 1:
    raise ValueError(f"max_bytes={max_bytes} is below one pixel")
  return [Tile(r, c, min(side, zone.height - r), min(side, zone.width - c))
          for r in range(0, zone.height, side) for c in range(0, zone.width, side)]


def pixel_request(image, zone: Zone, tile: Tile) -> dict:
  """The computePixels request of one tile on the zone grid."""
  return {
      "expression": image,
      "fileFormat": "NUMPY_NDARRAY",
      "bandIds": [*EE_BANDS, COUNT_BAND],
      "grid": {
          "dimensions": {"width": tile.width, "height": tile.height},
          "affineTransform": {
              "scaleX": zone.res, "shearX": 0,
              "translateX": zone.x0 + tile.col * zone.res,
              "shearY": 0, "scaleY": -zone.res,
              "translateY": zone.y0 - tile.row * zone.res},
          "crsCode": zone.crs,
      },
  }


def is_retryable(error: Exception) -> bool:
  """Quota, server and network errors, which a later try may not meet."""
  if isinstance(error, (ConnectionError, TimeoutError)):
    return True
  return _RETRYABLE.search(str(error)) is not None


def with_retries(call: Callable, what: str, *, max_retries: int = 6,
                 base_delay: float = 2.0, sleep: Callable = time.sleep):
  """`call()`, retried on quota/server errors with delays base * 2**k."""
  import ee
  for attempt in range(max_retries + 1):
    try:
      return call()
    except (ee.EEException, ConnectionError, TimeoutError) as e:
      if not is_retryable(e):
        raise UserError(f"Earth Engine refused {what}: {e}") from None
      if attempt == max_retries:
        raise UserError(f"Earth Engine: {what} still failing after {max_retries} "
                        f"retries ({e}); wait and rerun the same command, it resumes "
                        f"where it stopped") from None
      sleep(base_delay * 2**attempt)


def _to_array(data) -> np.ndarray:
  """computePixels NUMPY_NDARRAY (structured [h, w]) -> uint16 [5, h, w]."""
  return np.stack([np.asarray(data[b], np.uint16) for b in (*EE_BANDS, COUNT_BAND)])


def _load_tile(path: pathlib.Path, tile: Tile) -> np.ndarray | None:
  """A cached tile, or None when absent or not of the tile's shape."""
  try:
    block = np.load(path)
  except (OSError, ValueError, EOFError):
    return None
  return block if block.shape == (len(EE_BANDS) + 1, tile.height, tile.width) else None


def _open_cache(folder: pathlib.Path, zone: Zone, year: int) -> pathlib.Path:
  """The cache folder of this zone and year; a cache of anything else is dropped."""
  return atomic.keyed_folder(folder / CACHE_DIR, {"collection": COLLECTION, "year": year,
                                                  "zone": zone.to_row()})


def _done(folder: pathlib.Path, meta: dict, year: int) -> dict | None:
  """The imagery info of a zone folder already composited from Earth Engine.

  `meta`: the folder's meta.json from `zonefolder.check_folder`, which has
  already refused a folder of another zone.
  """
  info = meta.get("imagery") or {}
  ok = info.get("source") == "earth-engine" and info.get("year") == year
  return info if ok and all((folder / f).is_file()
                            for f in zonefolder.IMAGERY_FILES) else None


def composite_zone_from_gee(zone: Zone, out_folder, *, year: int = 2023,
                            progress: bool = True, project: str | None = None,
                            max_retries: int = 6, base_delay: float = 2.0,
                            max_bytes: int = MAX_REQUEST_BYTES,
                            initialize_ee: bool = True, overwrite: bool = False,
                            sleep: Callable = time.sleep) -> dict:
  """Monthly median composites of `zone` from Earth Engine, gap filled, written.

  Args:
    zone: the zone; its grid is the request grid (CRS, 10 m, origin).
    out_folder: the zone folder; `.gee_cache/` inside it holds fetched tiles.
    year: calendar year of the composites.
    project: Google Cloud project (else JAXCROP_EE_PROJECT).
    max_retries, base_delay, sleep: back-off on quota/server errors.
    max_bytes: response budget per request (sets the tile size).
    initialize_ee: call `initialize(project)` first (tests pass False).
    overwrite: recompute a zone folder that already holds this year's
      Earth Engine composites (else it is left as is and its info returned).
  Returns:
    the `imagery` info written to meta.json.
  """
  import ee
  from tqdm import tqdm
  s2_products.check_zone_grid(zone)
  folder = pathlib.Path(out_folder)
  meta = zonefolder.check_folder(folder, zone)  # before any request is spent
  if not overwrite and (info := _done(folder, meta, year)) is not None:
    return info
  if initialize_ee:
    initialize(project)
  cache = _open_cache(folder, zone, year)
  tiles = plan_tiles(zone, max_bytes=max_bytes)
  T = 12
  months = zonefolder.month_labels(year, T)
  comp = np.zeros((T, len(EE_BANDS), *zone.shape), np.uint16)
  counts = np.zeros((T, *zone.shape), np.uint8)
  fetched = 0
  with tqdm(total=T * len(tiles), desc=f"{zone.zone_id} gee", unit="tile",
            disable=not progress) as bar:
    for t in range(T):
      image = None
      for tile in tiles:
        path = cache / f"{months[t]}_r{tile.row}_c{tile.col}.npy"
        block = _load_tile(path, tile)
        if block is None:
          image = image if image is not None else monthly_image(zone, year, t + 1)
          request = pixel_request(image, zone, tile)
          block = _to_array(with_retries(
              lambda: ee.data.computePixels(request),
              f"zone {zone.zone_id} {months[t]} tile ({tile.row}, {tile.col})",
              max_retries=max_retries, base_delay=base_delay, sleep=sleep))
          with atomic.atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
              np.save(f, block)
          fetched += 1
        rows = slice(tile.row, tile.row + tile.height)
        cols = slice(tile.col, tile.col + tile.width)
        comp[t, :, rows, cols] = block[:len(EE_BANDS)]
        counts[t, rows, cols] = np.minimum(block[len(EE_BANDS)], 255)
        bar.update(1)
  empty = [m for t, m in enumerate(months) if not counts[t].any()]
  if empty:
    warnings.warn(f"zone {zone.zone_id}: no valid observation in {', '.join(empty)}; "
                  f"these months are gap filled from their neighbours", stacklevel=2)
  filled, was_filled = composite_lib.gap_fill(comp)
  info = dict(
      source="earth-engine", collection=COLLECTION, year=year,
      requests=len(tiles) * T, requests_fetched_now=fetched,
      tile_shape=[tiles[0].height, tiles[0].width],
      months_without_observation=empty,
      gap_filled_fraction=round(float(was_filled.mean()), 6),
      nodata_pixels=int((~(counts > 0).any(axis=0)).sum()))
  zonefolder.write_imagery(folder, zone, filled, counts, months, info)
  shutil.rmtree(cache, ignore_errors=True)
  return info
