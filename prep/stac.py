"""Monthly composites of a zone from a public STAC catalogue of Sentinel-2 L2A COGs.

The route without an Earth Engine account and without whole-tile downloads:

  search   pystac-client asks the catalogue's item search for the collection's
           items intersecting the zone (its square in WGS84) in the year, page
           after page (`search_items`).
  read     of each item only the zone's window of B02 B03 B04 B08 and SCL is
           read, by GDAL HTTP range requests on the remote COG (`/vsicurl/`,
           `/vsis3/`), warped onto the zone grid by `scenes.warp_band`, the
           local route's rule (nearest, SCL from 20 m) (`WindowReader`).
  composite the local route's code from there on: `scenes.item_scene` parses
           the item (date, harmonization offset, asset keys), `scenes.read_scene`
           masks and harmonizes, `scenes.composite_scenes` takes the monthly
           median, fills gaps and writes the zone folder. Only the place the
           bytes come from differs, so both routes give the same zone folders
           from the same scenes (tested bit for bit on the demo).

Catalogues (`CATALOGS`, or any STAC API URL):

  earth-search        Element 84's Earth Search on AWS, public COGs, no account.
  planetary-computer  Microsoft's Planetary Computer; asset URLs are signed with
                      a SAS token (`planetary-computer` package; a subscription
                      key in PC_SDK_SUBSCRIPTION_KEY raises the rate limits);
                      a 403 (expired token) re-signs once with a fresh token.
  cdse                Copernicus Data Space; assets are on its S3 (`s3://eodata`,
                      JPEG 2000 inside the SAFE), read with the S3 keys of a CDSE
                      account from CDSE_S3_ACCESS_KEY and CDSE_S3_SECRET_KEY
                      (https://eodata-s3keysmanager.dataspace.copernicus.eu).

Robustness. GDAL is told not to list remote folders
(GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR), to merge neighbouring ranges, to time
out and to retry HTTP 429/5xx itself (`gdal_options`). What is left is this
module's part: classifying a failed read (`classify`: transient, forbidden,
not found, corrupt) and re-signing once after a 403. The rest is the fetch
layer shared with the Earth Engine route (`prep.fetch`): at most `workers`
reads at once; a transient error (5xx, time-out, a truncated or undecodable
tile) holds back every worker for a jittered base * 2**k s and is retried
`retries` times; one that keeps failing stops the zone with one line naming
the item and band, before anything of the zone folder is written. Every window
read is kept in `<zone folder>/.stac_cache/<item>.<band>.npy` (atomic), so a
rerun reads only what is missing; the cache goes once the zone folder is
written. Archive defects the user cannot fix skip the item with a warning and
are listed in meta.json: an item without one of the five assets (`items_missing_asset`), an
asset answering 404 or not a raster (`items_unreadable`). An Earth Search
`earthsearch:boa_offset_applied` flag contradicting the processing baseline is
overruled by the baseline (`scenes.stac_offset`, `boa_offset_flag_overruled`).

Cloud filter: none by default. `eo:cloud_cover` is the whole tile's (110 km),
not the zone's: a 90 % cloudy tile can be clear over a 10 km zone, and months
with few acquisitions lose them. `max_cloud` drops items above it before any
pixel is read, a speed knob only, at that risk.
"""
from __future__ import annotations

import contextlib

import dataclasses
import os
import pathlib
import re
import time
import warnings
from typing import Callable, NamedTuple

import numpy as np

from cropcontracts.errors import UserError
from cropcontracts.zone import Zone
from prep import fetch, s2_products, scenes

CACHE_DIR = ".stac_cache"
SOURCE = "stac"


@dataclasses.dataclass(frozen=True)
class Catalog:
  """A STAC API serving a Sentinel-2 L2A collection.

  Attributes:
    name: what meta.json records (`earth-search`, …, or the URL).
    url: the STAC API root.
    collection: the Sentinel-2 L2A collection id.
    sign: sign(href, fresh) -> href to read; `fresh` asks for a new token
      (after a 403). None: hrefs are read as they are.
    env: environment variables the catalogue needs (checked before searching),
      mapped to GDAL options by `gdal_options`.
  """
  name: str
  url: str
  collection: str = "sentinel-2-l2a"
  sign: Callable[[str, bool], str] | None = None
  env: tuple[str, ...] = ()


def _sign_planetary_computer(href: str, fresh: bool) -> str:
  """A Planetary Computer asset URL with a SAS token (a new one when `fresh`)."""
  import planetary_computer
  if fresh:
    planetary_computer.sas.TOKEN_CACHE.clear()
  return planetary_computer.sign_url(href.split("?", 1)[0])


CATALOGS = {
    "earth-search": Catalog("earth-search", "https://earth-search.aws.element84.com/v1"),
    "planetary-computer": Catalog(
        "planetary-computer", "https://planetarycomputer.microsoft.com/api/stac/v1",
        sign=_sign_planetary_computer),
    "cdse": Catalog("cdse", "https://stac.dataspace.copernicus.eu/v1",
                    env=("CDSE_S3_ACCESS_KEY", "CDSE_S3_SECRET_KEY")),
}


def catalog(name_or_url: str, collection: str | None = None) -> Catalog:
  """The catalogue of a name of `CATALOGS` or of a STAC API URL."""
  if name_or_url in CATALOGS:
    cat = CATALOGS[name_or_url]
  elif re.match(r"^https?://", name_or_url):
    cat = Catalog(name_or_url, name_or_url.rstrip("/"))
  else:
    raise UserError(f"--catalog {name_or_url!r}: not a known catalogue "
                    f"({', '.join(CATALOGS)}) nor an http(s):// STAC API URL")
  return dataclasses.replace(cat, collection=collection) if collection else cat


def gdal_options(cat: Catalog, *, http_retries: int = 3, timeout_s: int = 30) -> dict:
  """GDAL configuration for reading remote COGs of `cat` (module docstring)."""
  opts = dict(
      GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR",       # no listing of the tile folder
      CPL_VSIL_CURL_ALLOWED_EXTENSIONS=".tif,.tiff,.TIF,.jp2",
      GDAL_HTTP_MERGE_CONSECUTIVE_RANGES="YES", GDAL_HTTP_MULTIPLEX="YES",
      GDAL_HTTP_VERSION="2", GDAL_HTTP_MAX_RETRY=str(http_retries),
      GDAL_HTTP_RETRY_DELAY="1", GDAL_HTTP_TIMEOUT=str(timeout_s),
      GDAL_HTTP_CONNECTTIMEOUT=str(min(timeout_s, 10)),
      VSI_CACHE="TRUE")
  if cat.env:      # Copernicus Data Space's S3
    opts.update(AWS_ACCESS_KEY_ID=os.environ.get(cat.env[0], ""),
                AWS_SECRET_ACCESS_KEY=os.environ.get(cat.env[1], ""),
                AWS_S3_ENDPOINT="eodata.dataspace.copernicus.eu",
                AWS_VIRTUAL_HOSTING="FALSE", AWS_HTTPS="YES")
  return opts


def check_env(cat: Catalog) -> None:
  """A UserError naming the missing environment variables of `cat`, if any."""
  missing = [v for v in cat.env if not os.environ.get(v)]
  if missing:
    raise UserError(f"catalogue {cat.name}: set {' and '.join(missing)} (the S3 keys "
                    f"of a Copernicus Data Space account, "
                    f"https://eodata-s3keysmanager.dataspace.copernicus.eu)")


def gdal_path(href: str) -> str:
  """The GDAL path of an asset href: /vsicurl/ for http(s), /vsis3/ for s3://."""
  if re.match(r"^https?://", href):
    return f"/vsicurl/{href}"
  if href.startswith("s3://"):
    return f"/vsis3/{href[len('s3://'):]}"
  return href


def zone_geometry(zone: Zone) -> dict:
  """The zone's square in WGS84 (GeoJSON polygon, edges densified)."""
  from rasterio.warp import transform_geom
  left, bottom, right, top = zone.bounds
  n = 8
  xs = [left + (right - left) * i / n for i in range(n)]
  ys = [bottom + (top - bottom) * i / n for i in range(n)]
  ring = ([(x, bottom) for x in xs] + [(right, y) for y in ys]
          + [(x, top) for x in reversed(xs[1:] + [right])]
          + [(left, y) for y in reversed(ys[1:] + [top])])
  ring.append(ring[0])
  return transform_geom(zone.crs, "EPSG:4326",
                        {"type": "Polygon", "coordinates": [ring]})


@contextlib.contextmanager
def _catalog_errors(cat: Catalog):
  """Turns what the STAC client raises for an unreachable catalogue, one that is
  not a STAC API with item search, or one that refuses the search into one
  UserError line naming the catalogue."""
  import pystac
  import requests
  from pystac_client.errors import ClientTypeError
  from pystac_client.exceptions import APIError
  where = cat.name if cat.name == cat.url else f"{cat.name} ({cat.url})"
  try:
    yield
  except (APIError, ClientTypeError, NotImplementedError, pystac.STACError,
          pystac.STACTypeError, requests.RequestException, OSError, ValueError) as e:
    reason = " ".join(str(e).split())[:200]
    raise UserError(f"catalogue {where}: unreachable, not a STAC API or refused the "
                    f"search of {cat.collection} ({type(e).__name__}: {reason}); check "
                    f"the network and --catalog, or rerun later") from None


def open_catalog(cat: Catalog):
  """The pystac_client Client of `cat` (its landing page read): `prep stac` opens
  it before the first zone, so that a catalogue it cannot use is one line before
  any progress is shown. Raises UserError as `search_items` does, and first
  when the catalogue's credentials are not set (`check_env`)."""
  import pystac_client
  check_env(cat)
  with _catalog_errors(cat):
    return pystac_client.Client.open(cat.url, timeout=60)


def search_items(cat: Catalog, zone: Zone, year: int, *,
                 page_size: int = 100) -> list[dict]:
  """The items of `cat.collection` intersecting `zone` in `year`, all pages.

  Raises:
    UserError (one line) when the catalogue is unreachable, is not a STAC API
    with item search, or refuses the search.
  """
  client = open_catalog(cat)
  with _catalog_errors(cat):
    search = client.search(collections=[cat.collection],
                           intersects=zone_geometry(zone),
                           datetime=f"{year}-01-01T00:00:00Z/{year}-12-31T23:59:59Z",
                           limit=page_size)
    return list(search.items_as_dicts())


class Asset(NamedTuple):
  """One band of one item: what `scenes.item_scene` resolves an href to here."""
  band: str
  href: str | None


class Forbidden(Exception):
  """HTTP 401/403: an expired signature (re-signed once) or missing credentials."""


class Defect(Exception):
  """An archive defect no retry cures (404, not a raster): the item is skipped."""


_TRANSIENT = re.compile(
    r"HTTP response code: (429|5\d\d)|timed? ?out|connection|resolve host|"
    r"read error|read failed|IReadBlock|TIFFRead|TIFFFill|chunk and warp|truncated|"
    r"premature|unexpected end|curl error|SlowDown|InternalError", re.I)
_NOT_FOUND = re.compile(r"HTTP response code: 40[4]|NoSuchKey|does not exist", re.I)
_FORBIDDEN = re.compile(r"HTTP response code: 40[13]|AccessDenied|SignatureDoesNotMatch|"
                        r"InvalidAccessKeyId|AuthorizationHeaderMalformed", re.I)


def classify(message: str, status: int | None = None) -> str:
  """`forbidden`, `not-found`, `transient` or `corrupt` for a failed read.

  Args:
    message: GDAL's error (and its causes).
    status: the HTTP status of the asset URL asked again (`http_status`), None
      when unknown (S3, local). GDAL's /vsicurl/ reports a failed open only as
      "not recognized as being in a supported file format", whatever the HTTP
      status was, hence the second question.
  """
  if status in (401, 403) or (status is None and _FORBIDDEN.search(message)):
    return "forbidden"
  if status in (404, 410) or (status is None and _NOT_FOUND.search(message)):
    return "not-found"
  if status == -1 or (status is not None and (status == 429 or status >= 500)):
    return "transient"
  if _TRANSIENT.search(message):
    return "transient"
  return "corrupt"


def http_status(href: str, timeout_s: float = 30) -> int | None:
  """The HTTP status of a one-byte GET of `href`; -1 when unanswered, None if not http."""
  import requests
  if not re.match(r"^https?://", href):
    return None
  try:
    with requests.get(href, headers={"Range": "bytes=0-0"}, timeout=timeout_s,
                      stream=True) as r:
      return r.status_code
  except requests.RequestException:
    return -1


def _messages(error: BaseException) -> str:
  """An exception's message followed by those of its causes, on one line."""
  parts = []
  while error is not None and len(parts) < 5:
    parts.append(str(error))
    error = error.__cause__ or error.__context__
  return " ".join(" ".join(parts).split())


class WindowReader:
  """Zone windows of remote assets: signed, retried through a `fetch.Pool`, cached.

  `fetch(scene)` brings the five windows of an item into the cache (reading
  what is missing); `warp(asset, scene, zone, dtype)` is the `warp` that
  `scenes.read_scene` takes, served from the cache.
  """

  def __init__(self, cat: Catalog, zone: Zone, cache: fetch.ZoneCache, pool: fetch.Pool,
               *, http_retries: int = 3):
    self.cat, self.zone, self.cache, self.pool = cat, zone, cache, pool
    self.options = gdal_options(cat, http_retries=http_retries)

  def _read_once(self, href: str, dtype, fresh_cache: bool) -> np.ndarray:
    import rasterio
    from rasterio._err import CPLE_BaseError
    path = gdal_path(href)
    opts = dict(self.options)
    if fresh_cache:     # forget what GDAL's /vsicurl/ cache holds of a failed try
      opts["CPL_VSIL_CURL_NON_CACHED"] = path.split("?", 1)[0]
    try:
      with rasterio.Env(**opts):
        with rasterio.open(path) as src:
          return scenes.warp_band(src, self.zone, dtype)
    except (rasterio.errors.RasterioError, CPLE_BaseError) as e:
      message = _messages(e)
      kind = classify(message, http_status(href))
      raise {"transient": fetch.Transient, "forbidden": Forbidden}.get(
          kind, Defect)(f"{kind}: {message[:300]}") from None

  def _read(self, scene: scenes.Scene, asset: Asset, dtype) -> np.ndarray:
    """One window, signed, re-signed once on 403, retried on transient errors."""
    where = f"item {scene.scene_id} band {asset.band}"
    sign = self.cat.sign or (lambda href, fresh: href)
    href, resigned, tries = sign(asset.href, False), False, 0

    def once() -> np.ndarray:
      nonlocal href, resigned, tries
      tries += 1
      try:
        return self._read_once(href, dtype, fresh_cache=tries > 1)
      except Forbidden as e:
        if resigned or self.cat.sign is None:
          raise UserError(f"{where}: access refused ({e}) at {asset.href}; "
                          f"{'the signature was renewed once; ' if resigned else ''}"
                          f"check the catalogue's credentials") from None
        href, resigned = sign(asset.href, True), True
        return once()
      except fetch.Transient as e:
        raise fetch.Transient(f"{e} at {asset.href}") from None
    return self.pool.call(once, where)

  def fetch(self, scene: scenes.Scene) -> int:
    """The five zone windows of `scene` into the cache (only those missing).

    Returns:
      the windows read from the catalogue now.
    Raises:
      Defect when an asset is not found or not a raster (skip the item);
      UserError when a read keeps failing or access is refused.
    """
    read = 0
    for asset in (*scene.bands, scene.scl):
      piece, dtype = f"{scene.scene_id}.{asset.band}", _dtype(asset.band)
      if self.cache.load(piece, self.zone.shape, dtype) is not None:
        continue
      try:
        window = self._read(scene, asset, dtype)
      except Defect as e:
        raise Defect(f"{asset.band}: {e}") from None
      self.cache.save(piece, window)
      read += 1
    return read

  def warp(self, asset: Asset, scene: scenes.Scene, zone: Zone, dtype) -> np.ndarray:
    """The cached window of `asset` ([H, W]; `fetch` first)."""
    window = self.cache.load(f"{scene.scene_id}.{asset.band}", self.zone.shape,
                             _dtype(asset.band))
    if window is None:
      raise RuntimeError(f"{scene.scene_id} {asset.band}: not fetched")
    return window.astype(dtype, copy=False)


def _dtype(band: str):
  """The dtype a band's window is read and cached in."""
  return np.uint8 if band == "SCL" else np.uint16


def _scene(item: dict) -> scenes.Scene:
  try:
    scene = scenes.item_scene(item, Asset)
  except (KeyError, ValueError, TypeError) as e:
    raise UserError(f"item {item.get('id')!r}: no usable properties.datetime ({e!r}); "
                    f"the catalogue answered a malformed item") from None
  if not scene.scene_id:
    raise UserError("the catalogue answered an item without id")
  return scene


def _fetch_items(reader: WindowReader, items: list[scenes.Scene],
                 progress: bool) -> tuple[dict[str, str], int]:
  """`reader.fetch` of every item, `reader.pool.workers` at once.

  Returns:
    {item id: defect} of the items skipped, and the windows read now.
  Raises:
    the first UserError (the items not started are dropped).
  """
  from rasterio.errors import NotGeoreferencedWarning

  def one(scene: scenes.Scene) -> tuple[int, str | None]:
    try:
      return reader.fetch(scene), None
    except Defect as e:
      return 0, str(e)

  with warnings.catch_warnings():
    # rasterio silences this warning of its in-memory destination with
    # catch_warnings, which threads undo for each other.
    warnings.simplefilter("ignore", NotGeoreferencedWarning)
    done = fetch.fetch_all(one, items, reader.pool.workers, desc="items", unit="item",
                           progress=progress)
  unreadable = {s.scene_id: defect for s, (_, defect) in zip(items, done) if defect}
  return unreadable, sum(n for n, _ in done)


def _usable_items(cat: Catalog, zone: Zone, year: int, max_cloud: float | None,
                  page_size: int) -> tuple[list[scenes.Scene], dict]:
  """The items of the zone-year to read, and the counts of meta.json (items
  found, of other years, above max_cloud, lacking an asset)."""
  items = search_items(cat, zone, year, page_size=page_size)
  found = [_scene(item) for item in items]
  clouds = {item.get("id"): (item.get("properties") or {}).get("eo:cloud_cover")
            for item in items}
  of_year = [s for s in found if s.date.year == year]
  kept = [s for s in of_year if max_cloud is None or clouds.get(s.scene_id) is None
          or clouds[s.scene_id] <= max_cloud]
  missing = {s.scene_id: [a.band for a in (*s.bands, s.scl) if a.href is None]
             for s in kept}
  missing = {k: v for k, v in missing.items() if v}
  if missing:
    warnings.warn(f"zone {zone.zone_id}: {len(missing)} item(s) lack an asset and are "
                  f"skipped ({', '.join(f'{k}: {v}' for k, v in sorted(missing.items())[:3])}"
                  f"{', …' if len(missing) > 3 else ''})", stacklevel=3)
  counts = dict(items_found=len(items), items_other_years=len(found) - len(of_year),
                max_cloud=max_cloud, items_above_max_cloud=len(of_year) - len(kept),
                items_missing_asset=missing)
  return [s for s in kept if s.scene_id not in missing], counts


def _composite(cat: Catalog, zone: Zone, folder: pathlib.Path, year: int,
               reader: WindowReader, usable: list[scenes.Scene], counts: dict,
               progress: bool) -> dict:
  """Reads the usable items' windows into the cache, then composites and writes
  the zone folder (the local route's code); its imagery info."""
  unreadable, read_now = _fetch_items(reader, usable, progress)
  if unreadable:
    warnings.warn(f"zone {zone.zone_id}: {len(unreadable)} item(s) unreadable and "
                  f"skipped ({'; '.join(f'{k} {v}' for k, v in sorted(unreadable.items())[:2])})",
                  stacklevel=3)
  inside = [s for s in usable if s.scene_id not in unreadable]
  if not inside:
    raise UserError(
        f"zone {zone.zone_id}: catalogue {cat.name} has no readable item of "
        f"{cat.collection} over the zone in {year} ({counts['items_found']} found, "
        f"{counts['items_above_max_cloud']} above --max-cloud, "
        f"{len(counts['items_missing_asset'])} lacking an asset, {len(unreadable)} "
        f"unreadable); check the zone and the year")
  info = dict(source=SOURCE, year=year, catalog=cat.name, catalog_url=cat.url,
              collection=cat.collection, scenes_used=len(inside), **counts,
              items_unreadable=unreadable, windows_read_now=read_now)
  return scenes.composite_scenes(
      inside, zone, folder, year=year, info=info, progress=False,
      read=lambda scene: scenes.read_scene(scene, zone, warp=reader.warp))


def composite_zone_from_stac(zone: Zone, out_folder, *, cat: Catalog,
                             year: int = 2023, max_cloud: float | None = None,
                             workers: int = 4, retries: int = 4,
                             base_delay: float = 1.0, http_retries: int = 3,
                             page_size: int = 100, overwrite: bool = False,
                             progress: bool = True,
                             sleep: Callable[[float], None] = time.sleep) -> dict:
  """Monthly median composites of `zone` from a STAC catalogue, gap filled, written.

  Args:
    zone: the zone; its grid is the read grid.
    out_folder: the zone folder; `.stac_cache/` in it holds the fetched windows.
    cat: the catalogue (`catalog(name_or_url)`).
    year: calendar year of the composites.
    max_cloud: drop items whose tile `eo:cloud_cover` exceeds it (percent);
      None (default) keeps all (module docstring: a speed knob, with its risk).
    workers: windows read at once.
    retries, base_delay, sleep: back-off on transient read errors (`fetch.Pool`).
    http_retries: GDAL's own retries of HTTP 429/5xx per request.
    page_size: items per search page.
    overwrite: recompute a zone folder already holding this catalogue's year.
  Returns:
    the `imagery` info written to meta.json.
  Raises:
    UserError on a zone off the 10 m grid, an unreachable catalogue, an item
    without the baseline its date needs, no usable item, a read that keeps
    failing or refused access (one line naming item and band).
  """
  s2_products.check_zone_grid(zone)
  folder = pathlib.Path(out_folder)
  pool = fetch.Pool(workers, retries=retries, base_delay=base_delay, sleep=sleep)

  def run(cache: fetch.ZoneCache) -> dict:
    check_env(cat)
    usable, counts = _usable_items(cat, zone, year, max_cloud, page_size)
    reader = WindowReader(cat, zone, cache, pool, http_retries=http_retries)
    return _composite(cat, zone, folder, year, reader, usable, counts, progress)

  return fetch.cached_zone(
      folder, zone, name=CACHE_DIR, overwrite=overwrite, run=run,
      key={"catalog": cat.url, "collection": cat.collection, "year": year,
           "zone": zone.to_row()},
      expected={"source": SOURCE, "year": year, "catalog": cat.name})
