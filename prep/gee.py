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

Resumable. Each fetched (month, tile) is kept in the zone's window cache,
`out_folder/.gee_cache/<YYYY-MM>_r<row>_c<col>.npy`, so a rerun after an
interruption fetches only what is missing; the cache is removed once the zone
folder is written (`prep.fetch`: the cache, its lock, the "zone done" check).
Quota (429, "Too many concurrent") and server (5xx) errors are retried with a
jittered exponential back-off, `max_retries` times (`is_retryable` tells them
from the errors a retry would meet again).

Concurrency. The requests of a zone's months and tiles go through one
`fetch.Pool` (`make_pool`): at most `workers` requests in flight (default 1 in
the function, 8 on the command line: well under the 40 concurrent interactive
requests an Earth Engine account is allowed, leaving room for other jobs of the
project), and one back-off shared by every worker: a quota error holds back
every worker's next request until the back-off has passed, instead of each
worker hammering the quota on its own. `composite_zones_from_gee` initializes
Earth Engine once and shares one pool between the zones of a run, two zones in
flight so that the next zone's requests run while the last one is gap filled
and written.

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
import time
import warnings
from typing import Callable

import numpy as np

from cropcontracts import zonefolder
from cropcontracts.errors import UserError
from cropcontracts.zone import Zone
from prep import composite as composite_lib
from prep import fetch, s2_products

COLLECTION = "COPERNICUS/S2_SR_HARMONIZED"
EE_BANDS = zonefolder.BANDS                 # Earth Engine names them as we do
COUNT_BAND = "count"
VALID_SCL = (min(zonefolder.VALID_SCL), max(zonefolder.VALID_SCL))  # an inclusive range
BYTES_PER_PIXEL = 2 * len(EE_BANDS) + 1     # uint16 bands + uint8 count
MAX_REQUEST_BYTES = 32 * 2**20              # computePixels allows 48 MiB
MAX_TILE_SIDE = 1024
CACHE_DIR = ".gee_cache"
SOURCE = "earth-engine"
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


def request(call: Callable, what: str):
  """call() (an Earth Engine request) with its errors classified: `fetch.Transient`
  for those worth another try (`is_retryable`), else a UserError naming `what`."""
  import ee
  try:
    return call()
  except (ee.EEException, ConnectionError, TimeoutError) as e:
    if is_retryable(e):
      raise fetch.Transient(str(e)) from None
    raise UserError(f"Earth Engine refused {what}: {e}") from None


def make_pool(workers: int = 1, *, max_retries: int = 6, base_delay: float = 2.0,
              sleep: Callable = time.sleep) -> fetch.Pool:
  """The `fetch.Pool` of Earth Engine requests: `workers` in flight, retried
  `max_retries` times after base_delay * 2**k s (jittered), one back-off for all."""
  return fetch.Pool(workers, retries=max_retries, base_delay=base_delay, sleep=sleep)


def with_retries(call: Callable, what: str, *, max_retries: int = 6,
                 base_delay: float = 2.0, sleep: Callable = time.sleep):
  """`call()`, one Earth Engine request retried on quota/server errors."""
  pool = make_pool(1, max_retries=max_retries, base_delay=base_delay, sleep=sleep)
  return pool.call(lambda: request(call, what), f"Earth Engine: {what}")


def _to_array(data) -> np.ndarray:
  """computePixels NUMPY_NDARRAY (structured [h, w]) -> uint16 [5, h, w]."""
  return np.stack([np.asarray(data[b], np.uint16) for b in (*EE_BANDS, COUNT_BAND)])


def _place(comp: np.ndarray, counts: np.ndarray, t: int, tile: Tile,
           block: np.ndarray) -> None:
  """Writes a fetched [5, h, w] block into month t of comp [T, 4, H, W], counts [T, H, W]."""
  rows = slice(tile.row, tile.row + tile.height)
  cols = slice(tile.col, tile.col + tile.width)
  comp[t, :, rows, cols] = block[:len(EE_BANDS)]
  counts[t, rows, cols] = np.minimum(block[len(EE_BANDS)], 255)


def _fetch_months(zone: Zone, year: int, cache: fetch.ZoneCache, tiles: list[Tile],
                  pool: fetch.Pool, progress: bool):
  """The year's months of the zone, from the cache and Earth Engine.

  Returns:
    uint16 composites [T, 4, H, W], uint8 counts [T, H, W], requests sent now.
  """
  import ee
  T = 12
  months = zonefolder.month_labels(year, T)
  comp = np.zeros((T, len(EE_BANDS), *zone.shape), np.uint16)
  counts = np.zeros((T, *zone.shape), np.uint8)
  todo = []                                  # (t, tile, piece) not yet fetched
  for t in range(T):
    for tile in tiles:
      piece = f"{months[t]}_r{tile.row}_c{tile.col}"
      block = cache.load(piece, (len(EE_BANDS) + 1, tile.height, tile.width), np.uint16)
      if block is None:
        todo.append((t, tile, piece))
      else:
        _place(comp, counts, t, tile, block)
  images = {t: monthly_image(zone, year, t + 1) for t in sorted({t for t, _, _ in todo})}

  def one(job) -> None:
    t, tile, piece = job
    body = pixel_request(images[t], zone, tile)
    what = f"zone {zone.zone_id} {months[t]} tile ({tile.row}, {tile.col})"
    block = _to_array(pool.call(
        lambda: request(lambda: ee.data.computePixels(body), what), f"Earth Engine: {what}"))
    cache.save(piece, block)
    _place(comp, counts, t, tile, block)      # tiles are disjoint: no lock needed

  fetch.fetch_all(one, todo, pool.workers, desc=f"{zone.zone_id} gee", unit="tile",
                  progress=progress, done=T * len(tiles) - len(todo))
  return comp, counts, len(todo)


def _write(zone: Zone, folder: pathlib.Path, year: int, tiles: list[Tile],
           comp: np.ndarray, counts: np.ndarray, fetched: int) -> dict:
  """Gap fills the months and writes the zone folder; its imagery info."""
  months = zonefolder.month_labels(year, len(comp))
  empty = [m for t, m in enumerate(months) if not counts[t].any()]
  if empty:
    warnings.warn(f"zone {zone.zone_id}: no valid observation in {', '.join(empty)}; "
                  f"these months are gap filled from their neighbours", stacklevel=2)
  filled, was_filled = composite_lib.gap_fill(comp)
  info = dict(
      source=SOURCE, collection=COLLECTION, year=year,
      requests=len(tiles) * len(months), requests_fetched_now=fetched,
      tile_shape=[tiles[0].height, tiles[0].width],
      months_without_observation=empty,
      gap_filled_fraction=round(float(was_filled.mean()), 6),
      nodata_pixels=int((~(counts > 0).any(axis=0)).sum()))
  zonefolder.write_imagery(folder, zone, filled, counts, months, info)
  return info


def composite_zone_from_gee(zone: Zone, out_folder, *, year: int = 2023,
                            progress: bool = True, max_retries: int = 6,
                            base_delay: float = 2.0, max_bytes: int = MAX_REQUEST_BYTES,
                            overwrite: bool = False, sleep: Callable = time.sleep,
                            workers: int = 1, pool: fetch.Pool | None = None) -> dict:
  """Monthly median composites of `zone` from Earth Engine, gap filled, written.

  Earth Engine must be initialized first (`initialize`; `composite_zones_from_gee`
  does it once for its zones).

  Args:
    zone: the zone; its grid is the request grid (CRS, 10 m, origin).
    out_folder: the zone folder; `.gee_cache/` inside it holds fetched tiles.
    year: calendar year of the composites.
    max_retries, base_delay, sleep: back-off on quota/server errors.
    workers: requests in flight at once (months and tiles fetched concurrently).
    pool: a `make_pool` pool shared with other zones (then workers, max_retries,
      base_delay and sleep are the pool's).
    max_bytes: response budget per request (sets the tile size).
    overwrite: recompute a zone folder that already holds this year's
      Earth Engine composites (else it is left as is and its info returned).
  Returns:
    the `imagery` info written to meta.json.
  """
  s2_products.check_zone_grid(zone)
  folder = pathlib.Path(out_folder)
  tiles = plan_tiles(zone, max_bytes=max_bytes)
  pool = pool or make_pool(workers, max_retries=max_retries, base_delay=base_delay,
                          sleep=sleep)

  def run(cache: fetch.ZoneCache) -> dict:
    comp, counts, fetched = _fetch_months(zone, year, cache, tiles, pool, progress)
    return _write(zone, folder, year, tiles, comp, counts, fetched)

  return fetch.cached_zone(
      folder, zone, name=CACHE_DIR, overwrite=overwrite, run=run,
      key={"collection": COLLECTION, "year": year, "zone": zone.to_row()},
      expected={"source": SOURCE, "year": year})


def composite_zones_from_gee(zones, out_root, *, workers: int = 8, zones_in_flight: int = 2,
                             progress: bool = True, project: str | None = None,
                             sleep: Callable = time.sleep, **kw) -> list[dict]:
  """`composite_zone_from_gee` for many zones into out_root/<zone_id>/, after one
  `initialize(project)`, sharing one pool of `workers` requests in flight (and its
  back-off); `zones_in_flight` zones at a time. Returns the zones' imagery infos,
  in the zones' order."""
  pool = make_pool(workers, max_retries=kw.pop("max_retries", 6),
                   base_delay=kw.pop("base_delay", 2.0), sleep=sleep)
  initialize(project)
  root = pathlib.Path(out_root)
  return fetch.fetch_all(
      lambda z: composite_zone_from_gee(z, root / z.zone_id, progress=False, pool=pool, **kw),
      zones, max(1, zones_in_flight), desc="gee composites", unit="zone", progress=progress)
