"""Monthly composites of a zone from local Sentinel-2 L2A scenes.

The offline twin of `prep.gee`: the same masking (SCL 4-7), the same monthly
median and gap filling (`prep.composite`), the same zone folder.

Accepted layouts under `scene_dir` (searched recursively, mixed freely):

  STAC/COG   `<item_id>/<item_id>.json`, a STAC Item with `properties.datetime`
             (or `start_datetime`) and optionally `properties["proj:epsg"]`;
             its assets `B02 B03 B04 B08 SCL` (or Earth Search's `blue green red
             nir scl`) point to the rasters: a relative href from the item's
             folder, a remote href to the downloaded file of that name beside
             the item; without assets, `<item_id>/B02.tif … SCL.tif`.
             (GeoTIFF/COG, bands uint16 at 10 m, SCL at 20 m, 0 = nodata.)
             The layout `prep.demo` writes.
  SAFE       `<product>.SAFE/` as downloaded from Copernicus: the 10 m bands
             `GRANULE/*/IMG_DATA/R10m/*_B0{2,3,4,8}_10m.jp2` and the SCL
             `GRANULE/*/IMG_DATA/R20m/*_SCL_20m.jp2`; the date comes from the
             product name (`S2A_MSIL2A_20230415T105031_N0509_…`).

Harmonization. Since processing baseline 04.00, L2A digital numbers carry an
offset: reflectance = (DN + BOA_ADD_OFFSET) / 10000 with BOA_ADD_OFFSET =
-1000. Earth Engine's COPERNICUS/S2_SR_HARMONIZED removes it, so we do too.
The offset is keyed on the product's processing baseline, never on its date
(`prep.s2_products`: STAC `s2:boa_add_offset`, `s2:processing_baseline`,
`processing:version`, the id's `_Nxxyy_`; SAFE `MTD_MSIL2A.xml`, per band, then
the name's `_Nxxyy_`); an acquisition from 2022-01-25 on without any is an
error. A DN of 0 stays nodata; other DNs become max(DN + offset, 1), so a
valid dark pixel is not mistaken for nodata.

Acquisitions, not tiles. Neighbouring MGRS tiles overlap (~10 km) and the
same acquisition is delivered once per tile, possibly in two UTM zones. The
scenes of one (acquisition date, spacecraft) are mosaicked into one
observation before the median (`mosaic`): tiles in the zone's own CRS first
(by id), then those of another UTM zone, each pixel taken from the first tile
where it is valid. So a neighbouring zone's tile, reprojected, fills only the
pixels the zone's own tiles leave without a valid value, and `valid_count`
counts acquisitions.

Resampling. Every raster is warped onto the zone grid with nearest neighbour.
Zones and Sentinel-2 tiles are both 10 m grids on multiples of 10 m in the same
UTM CRS (a zone off that grid is refused, `s2_products.check_zone_grid`), so
each zone pixel centre is a band pixel centre and nearest neighbour copies
values exactly (bilinear would too, but would blend across any misalignment and
across nodata edges). SCL at 20 m: each 10 m pixel takes the class of the 20 m
pixel containing it. A scene in another UTM zone is reprojected, again by
nearest neighbour, which keeps reflectances unblended.
"""
from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import pathlib
import re
import warnings
from typing import Any, Callable

import numpy as np

from prep import composite as composite_lib
from prep import s2_products
from cropcontracts import zonefolder
from cropcontracts.errors import UserError
from cropcontracts.zone import Zone

BAND_FILES = tuple(f"B{b[1:]:0>2}" for b in zonefolder.BANDS)  # B02 B03 B04 B08
VALID_SCL = tuple(sorted(zonefolder.VALID_SCL))
_SAFE_NAME = re.compile(r"^S2[ABCD]_MSIL2A_(\d{8})T\d{6}_")


@dataclasses.dataclass(frozen=True)
class Scene:
  """One acquisition: where its rasters are and how to read them.

  Attributes:
    scene_id: STAC item id or SAFE product name.
    date: acquisition date (UTC).
    bands: paths of B02 B03 B04 B08, in that order.
    scl: path of the scene classification layer (20 m).
    offsets: DN offset to add to each band (BOA_ADD_OFFSET, -1000 or 0),
      from `prep.s2_products`.
    spacecraft: "A", "B", "C"… (Sentinel-2A…), "" when unknown; with `date`
      it names the acquisition (`acquisition`).
    offset_overruled: the item's `earthsearch:boa_offset_applied` flag
      contradicted its baseline, which was preferred (`s2_products.stac_offset`).
    epsg: the tile's CRS as the STAC item declares it (`proj:epsg`,
      `proj:code`, `s2:mgrs_tile`), for scenes whose header is remote; None:
      read from the first band's header (`in_zone_crs`).
  """
  scene_id: str
  date: datetime.date
  bands: tuple[pathlib.Path, ...]
  scl: pathlib.Path
  offsets: tuple[int, ...] = (0, 0, 0, 0)
  spacecraft: str = ""
  offset_overruled: bool = False
  epsg: int | None = None

  @property
  def acquisition(self) -> tuple[datetime.date, str]:
    """(date, spacecraft): the tiles of one acquisition share it."""
    return (self.date, self.spacecraft)


def item_epsg(props: dict) -> int | None:
  """The EPSG code of a STAC item's tile: `proj:epsg`, `proj:code`, else its MGRS tile."""
  if props.get("proj:epsg"):
    return int(props["proj:epsg"])
  code = str(props.get("proj:code") or "")
  if code.upper().startswith("EPSG:"):
    return int(code[5:])
  mgrs = str(props.get("s2:mgrs_tile") or f"{props.get('mgrs:utm_zone', '')}"
             f"{props.get('mgrs:latitude_band', '')}")
  m = re.match(r"^(\d{1,2})([C-X])", mgrs.upper())
  if m:
    return (32600 if m.group(2) >= "N" else 32700) + int(m.group(1))
  return None


def item_scene(item: dict, resolve: Callable[[str, str | None], Any]) -> Scene:
  """The Scene of a STAC item (a dict), for a local or a remote route.

  Args:
    item: the STAC item; `properties.datetime` (or `start_datetime`) needed.
    resolve: resolve(band, href) -> where the raster of `band` is read (a local
      path, a remote asset…); href is the item's asset href of that band, None
      when the item has no such asset.
  Raises:
    KeyError, ValueError, TypeError on an item without a usable date;
    UserError on an item without the baseline its date needs (`s2_products`).
  """
  props = item["properties"]
  stamp = props.get("datetime") or props["start_datetime"]
  date = datetime.date.fromisoformat(str(stamp)[:10])
  item_id = item.get("id") or ""
  offset = s2_products.stac_offset(props, item_id, date)
  assets = item.get("assets") or {}
  return Scene(item_id, date,
               tuple(resolve(b, asset_href(assets, b)) for b in BAND_FILES),
               resolve("SCL", asset_href(assets, "SCL")), (offset,) * len(BAND_FILES),
               s2_products.spacecraft_of(item_id, props),
               s2_products.boa_flag_overruled(props, item_id), item_epsg(props))


def _stac_scene(item_json: pathlib.Path) -> Scene:
  folder = item_json.parent
  try:
    item = json.loads(item_json.read_text(encoding="utf-8"))
    item = dict(item, id=item.get("id") or folder.name)
    scene = item_scene(item, lambda band, href: _asset_path(folder, href, band))
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise UserError(f"{item_json}: not a STAC item with properties.datetime ({e!r}); "
                    f"fix or remove the scene folder {folder}") from None
  return dataclasses.replace(scene, epsg=None)     # local files: their header decides


# STAC asset keys of each band: ours (and Planetary Computer's), Earth Search's,
# Copernicus Data Space's.
_ASSET_KEYS = {"B02": ("B02", "blue", "B02_10m"), "B03": ("B03", "green", "B03_10m"),
               "B04": ("B04", "red", "B04_10m"), "B08": ("B08", "nir", "B08_10m"),
               "SCL": ("SCL", "scl", "SCL_20m")}


def asset_href(assets: dict, band: str) -> str | None:
  """The href of `band` among a STAC item's assets (any known key), or None."""
  for key in _ASSET_KEYS[band]:
    href = (assets.get(key) or {}).get("href")
    if href:
      return href
  return None


def _asset_path(folder: pathlib.Path, href: str | None, band: str) -> pathlib.Path:
  """Local file of `band`: the item's asset href, else `<folder>/<band>.tif`.

  A relative href is taken from the item's folder; a remote one (https://, s3://)
  from the downloaded copy of that file beside the item, as download tools keep
  the file name.
  """
  import urllib.parse
  if href is None:
    return folder / f"{band}.tif"
  if "://" in href:
    return folder / pathlib.PurePosixPath(urllib.parse.urlparse(href).path).name
  return folder / href          # an absolute href stays absolute


def _safe_scene(safe: pathlib.Path) -> Scene:
  m = _SAFE_NAME.match(safe.name)
  if not m:
    raise UserError(f"{safe}: not a Sentinel-2 L2A product name (expected "
                    f"S2A_MSIL2A_YYYYMMDDTHHMMSS_Nxxxx_…); rename or remove it")
  date = datetime.datetime.strptime(m.group(1), "%Y%m%d").date()

  def one(pattern: str, what: str) -> pathlib.Path:
    hits = sorted(safe.glob(f"GRANULE/*/IMG_DATA/{pattern}"))
    if not hits:
      raise UserError(f"{safe}: scene lacks {what} (GRANULE/*/IMG_DATA/{pattern}); "
                      f"re-download the product or remove it")
    return hits[0]

  bands = tuple(one(f"R10m/*_{b}_10m.jp2", b) for b in BAND_FILES)
  return Scene(safe.name.removesuffix(".SAFE"), date, bands,
               one("R20m/*_SCL_20m.jp2", "SCL"),
               s2_products.safe_offsets(safe, BAND_FILES, date),
               s2_products.spacecraft_of(safe.name))


def discover_scenes(scene_dir) -> list[Scene]:
  """All scenes under `scene_dir` (module docstring), sorted by date and id.

  Raises UserError when the folder is missing or holds no scene.
  """
  root = pathlib.Path(scene_dir)
  if not root.is_dir():
    raise UserError(f"{root}: scene folder not found")
  scenes = [_safe_scene(p) for p in sorted(root.rglob("*.SAFE")) if p.is_dir()]
  for item in sorted(root.rglob("*.json")):
    if ".SAFE" in str(item):
      continue
    if item.stem == item.parent.name:
      scenes.append(_stac_scene(item))
    elif _is_stac_item(item) and not (item.parent / f"{item.parent.name}.json").is_file():
      raise UserError(f"{item}: a STAC item in folder {item.parent.name!r}, whose name is "
                      f"not the item's ({item.stem!r}), so it would be skipped; rename the "
                      f"folder to {item.stem!r} or remove the copy")
  if not scenes:
    zipped = sorted(root.rglob("S2*_MSIL2A_*.zip"))
    hint = (f"; {zipped[0].name} and {len(zipped) - 1} more are zipped: unzip them "
            f"first" if zipped else "")
    raise UserError(f"{root}: no Sentinel-2 L2A scene found; expected "
                    f"<item_id>/<item_id>.json STAC items with B02 B03 B04 B08 SCL "
                    f".tif beside them, or *.SAFE products{hint}")
  return sorted(scenes, key=lambda s: (s.date, s.scene_id))


def _is_stac_item(path: pathlib.Path) -> bool:
  """Whether a JSON file is a STAC item (a GeoJSON Feature with assets)."""
  try:
    item = json.loads(path.read_text(encoding="utf-8"))
  except (OSError, ValueError):
    return False
  return isinstance(item, dict) and item.get("type") == "Feature" and "assets" in item


def _open(path: pathlib.Path, scene: Scene):
  import rasterio
  if not path.is_file():
    raise UserError(f"{path}: scene {scene.scene_id} lacks this band; re-download "
                    f"the scene or remove its folder")
  try:
    return rasterio.open(path)
  except rasterio.errors.RasterioError as e:
    raise UserError(f"{path}: unreadable ({e}); the file may be truncated or "
                    f"corrupt — re-download scene {scene.scene_id} or remove it") from None


def footprint(scene: Scene) -> tuple[str, tuple[float, float, float, float]]:
  """(CRS, bounds) of the scene's first band, from its header only.

  Also checks that every raster of the scene exists, before any is read. The
  headers are read once per process while the band files stay the same (their
  inode, size and times): every zone of a run asks about every scene, twice
  (`covers`, then `acquisitions`), and opening 4 headers costs milliseconds.
  """
  for path in (*scene.bands, scene.scl):
    if not path.is_file():
      raise UserError(f"{path}: scene {scene.scene_id} lacks this band; re-download "
                      f"the scene or remove its folder")
  stats = [p.stat() for p in scene.bands]
  return _checked_footprint(scene, tuple((s.st_ino, s.st_size, s.st_mtime_ns, s.st_ctime_ns)
                                         for s in stats))


@functools.lru_cache(maxsize=65536)
def _checked_footprint(scene: Scene, files: tuple) -> tuple[str, tuple]:
  """`footprint` of scene, whose band files are `files` (their stat identities)."""
  with _open(scene.bands[0], scene) as src:
    if src.crs is None:
      raise UserError(f"{scene.bands[0]}: no CRS; re-download scene {scene.scene_id}")
    crs, bounds = src.crs, tuple(src.bounds)
  for path in scene.bands:
    with _open(path, scene) as src:
      check_band(path, scene, src, crs)
  return crs.to_string(), bounds


BAND_RES = 10.0   # metres: B02 B03 B04 B08


def check_band(path: pathlib.Path, scene: Scene, src, crs) -> None:
  """Raises UserError unless the open band `src` is a 10 m uint16 DN raster in the
  scene's CRS `crs` (its first band's): a sibling in another CRS, a 10 m band
  delivered at 20 m, or float reflectance (DN / 10000) would be composited into
  nonsense without a word (the float band rounds to zeros and ones)."""
  redo = f"re-download scene {scene.scene_id} or remove its folder"
  if src.crs != crs:
    raise UserError(f"{path}: in {src.crs}, its sibling {scene.bands[0].name} in {crs}; "
                    f"the bands of a scene share one grid — {redo}")
  res = (abs(src.transform.a), abs(src.transform.e))
  if res != (BAND_RES, BAND_RES):
    raise UserError(f"{path}: {res[0]:g} x {res[1]:g} m pixels, expected the band's "
                    f"native {BAND_RES:g} m (a resampled product?) — {redo}")
  if src.dtypes[0] != "uint16":
    raise UserError(f"{path}: {src.dtypes[0]} values, expected uint16 digital numbers "
                    f"(reflectance x 10000, as ESA and STAC deliver L2A; float reflectance "
                    f"would round to 0 and 1) — {redo}")


def covers(scene: Scene, zone: Zone) -> bool:
  """Whether the scene's first band overlaps the zone (from its header only)."""
  crs, (b_left, b_bottom, b_right, b_top) = footprint(scene)
  left, bottom, right, top = zone.bounds_in(crs)
  return left < b_right and right > b_left and bottom < b_top and top > b_bottom


def in_zone_crs(scene: Scene, zone: Zone) -> bool:
  """Whether the scene's tile is in the zone's own UTM CRS (item or header).

  A remote scene whose item declares no CRS counts as another CRS.
  """
  import rasterio.crs
  if scene.epsg is not None:
    return scene.epsg == zone.epsg
  if not isinstance(scene.bands[0], pathlib.Path):
    return False
  return rasterio.crs.CRS.from_string(footprint(scene)[0]).to_epsg() == zone.epsg


def acquisitions(scenes: list[Scene], zone: Zone) -> list[list[Scene]]:
  """The scenes grouped by (date, spacecraft), in date order.

  Within a group, the tiles in the zone's own CRS come first (by id), then the
  others (by id): the order in which `mosaic` prefers them.
  """
  groups: dict[tuple, list[Scene]] = {}
  for s in sorted(scenes, key=lambda s: (s.acquisition, s.scene_id)):
    groups.setdefault(s.acquisition, []).append(s)
  return [sorted(g, key=lambda s: (not in_zone_crs(s, zone), s.scene_id)) if len(g) > 1
          else g for g in groups.values()]


def mosaic(reads) -> tuple[np.ndarray, np.ndarray]:
  """One observation from the tiles of one acquisition, first valid tile wins.

  Args:
    reads: iterable of (uint16 [C, H, W] bands, bool [H, W] valid), the tiles
      in order of preference (`acquisitions`).
  Returns:
    uint16 [C, H, W] bands and bool [H, W] valid of the acquisition: each
    pixel from the first tile where it is valid (invalid where none is).
  """
  reads = iter(reads)
  bands, valid = next(reads)
  bands, valid = bands.copy(), valid.copy()
  for more, ok in reads:
    take = ok & ~valid
    bands[:, take] = more[:, take]
    valid |= take
  return bands, valid


def warp_band(src, zone: Zone, dtype) -> np.ndarray:
  """Band 1 of an open raster onto the zone grid, nearest neighbour, 0 outside.

  The one resampling rule of both scene routes (module docstring). GDAL's
  warper reads only the source blocks under the zone, which is what keeps
  a remote COG read to the zone's window.

  Returns:
    [H, W] of `dtype`.
  """
  import rasterio
  from rasterio.warp import Resampling, reproject
  out = np.zeros(zone.shape, dtype)
  reproject(rasterio.band(src, 1), out, dst_transform=zone.transform,
            dst_crs=zone.crs, resampling=Resampling.nearest,
            src_nodata=0, dst_nodata=0)
  return out


def _warp(path: pathlib.Path, scene: Scene, zone: Zone, dtype) -> np.ndarray:
  """One local raster onto the zone grid (`warp_band`): [H, W]."""
  import rasterio
  from rasterio._err import CPLE_BaseError
  with _open(path, scene) as src:
    try:
      return warp_band(src, zone, dtype)
    except (rasterio.errors.RasterioError, CPLE_BaseError) as e:
      raise UserError(f"{path}: unreadable ({e}); the file may be truncated or "
                      f"corrupt — re-download scene {scene.scene_id} or remove it") from None


def read_scene(scene: Scene, zone: Zone, warp: Callable = _warp
               ) -> tuple[np.ndarray, np.ndarray]:
  """A scene on the zone grid, harmonized.

  Args:
    warp: warp(location, scene, zone, dtype) -> [H, W], one raster of the scene
      on the zone grid; the local files by default (`prep.stac` passes its
      remote, cached reader).
  Returns:
    uint16 [C, H, W] reflectance x 10000 (0 = nodata) in B2 B3 B4 B8 order,
    and bool [H, W], True where the SCL class is 4-7 and every band is > 0.
  """
  bands = np.stack([warp(p, scene, zone, np.uint16) for p in scene.bands])
  scl = warp(scene.scl, scene, zone, np.uint8)
  if any(scene.offsets):
    offsets = np.asarray(scene.offsets, np.int32)[:, None, None]
    shifted = np.maximum(bands.astype(np.int32) + offsets, 1)
    bands = np.where(bands == 0, 0, shifted).astype(np.uint16)
  valid = np.isin(scl, VALID_SCL) & (bands > 0).all(axis=0)
  return bands, valid


def read_acquisition(tiles: list[Scene], zone: Zone, read: Callable | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
  """`mosaic` of the tiles of one acquisition, read one after the other.

  `read(scene)` -> (bands, valid) of one tile; `read_scene` by default.
  """
  read = read or (lambda scene: read_scene(scene, zone))
  return mosaic(read(s) for s in tiles)


def composite_scenes(scenes: list[Scene], zone: Zone, out_folder, *, year: int,
                     read: Callable[[Scene], tuple[np.ndarray, np.ndarray]],
                     info: dict, progress: bool = True) -> dict:
  """Monthly median of `scenes` over `zone`, gap filled, written: both scene routes.

  Scenes are grouped into acquisitions (date, spacecraft) and each
  acquisition's tiles mosaicked into one observation (module docstring); a
  month's acquisitions (one month in memory), read with `read(scene) ->
  (uint16 [C, H, W], bool [H, W])` (`read_scene`), are reduced by
  `composite.median_composite` (SCL 4-7 valid), then `composite.gap_fill`, and
  written with `zonefolder.write_imagery`; `valid_count` counts valid
  acquisitions. `info` (the route's provenance) is completed with the
  per-month counts, offsets, gap-filled fraction and nodata pixels.

  Returns:
    the `imagery` info written to meta.json.
  """
  from tqdm import tqdm
  T = 12
  months = zonefolder.month_labels(year, T)
  comp = np.zeros((T, len(BAND_FILES), *zone.shape), np.uint16)
  counts = np.zeros((T, *zone.shape), np.uint8)
  per_month = [0] * T
  acq_per_month = [0] * T
  with tqdm(total=len(scenes), desc=f"{zone.zone_id} scenes", unit="scene",
            disable=not progress) as bar:
    for t in range(T):
      month = acquisitions([s for s in scenes if s.date.month == t + 1], zone)
      per_month[t] = sum(len(a) for a in month)
      acq_per_month[t] = len(month)
      if not month:
        continue
      stack = np.zeros((len(month), len(BAND_FILES), *zone.shape), np.uint16)
      valid = np.zeros((len(month), *zone.shape), bool)
      for i, tiles in enumerate(month):
        stack[i], valid[i] = read_acquisition(tiles, zone, read)
        bar.update(len(tiles))
      comp[t], counts[t] = composite_lib.median_composite(stack, valid)
      del stack, valid
  empty = [m for m, n in zip(months, per_month) if n == 0]
  if empty:
    warnings.warn(f"zone {zone.zone_id}: no scene in {', '.join(empty)}; these "
                  f"months are gap filled from their neighbours", stacklevel=3)
  never = ~(counts > 0).any(axis=0)
  if never.all():
    where = f" in {info['scene_dir']}" if "scene_dir" in info else ""
    raise UserError(
        f"zone {zone.zone_id}: not one valid pixel (SCL 4-7) in the {len(scenes)} scenes "
        f"of {year} over the zone{where}: all cloud, shadow, snow or nodata; add scenes of "
        f"that year (or check their SCL band); no s2.tif written")
  filled, was_filled = composite_lib.gap_fill(comp)
  info = dict(
      info, year=year, scenes_used=len(scenes),
      scenes_per_month=per_month, acquisitions_per_month=acq_per_month,
      months_without_scene=empty,
      harmonization_offsets=sorted({o for s in scenes for o in s.offsets}),
      gap_filled_fraction=round(float(was_filled.mean()), 6),
      nodata_pixels=int(never.sum()))
  overruled = sorted(s.scene_id for s in scenes if s.offset_overruled)
  if overruled:
    info["boa_offset_flag_overruled"] = overruled
  zonefolder.write_imagery(out_folder, zone, filled, counts, months, info)
  return info


def composite_zone_from_scenes(scene_dir, zone: Zone, out_folder, *, year: int = 2023,
                               progress: bool = True) -> dict:
  """Monthly median composites of `zone` from local scenes, gap filled, written.

  Scenes of `year` whose footprint overlaps the zone go to `composite_scenes`
  (acquisitions mosaicked, monthly median, gap filling, the zone folder), the
  step `prep.stac` shares.

  Returns:
    the `imagery` info written to meta.json (scenes used and skipped, scenes
    and acquisitions per month, months without scene, gap-filled fraction,
    nodata pixels).
  Raises:
    UserError on a zone off the 10 m grid, a missing folder, no scene, no
    scene of `year` over the zone, a scene missing a band or its baseline, or
    an unreadable raster (naming the file).
  """
  s2_products.check_zone_grid(zone)
  scene_dir = pathlib.Path(scene_dir)
  zonefolder.check_folder(out_folder, zone, year)     # before any scene is read
  found = discover_scenes(scene_dir)
  of_year = [s for s in found if s.date.year == year]
  inside = [s for s in of_year if covers(s, zone)]
  if not inside:
    raise UserError(
        f"zone {zone.zone_id}: none of the {len(found)} scenes in {scene_dir} is of "
        f"{year} and covers the zone ({len(of_year)} of {year}, bounds "
        f"{zone.bounds} in {zone.crs}); add scenes of that tile and year")
  info = dict(source="local-scenes", year=year, scene_dir=str(scene_dir),
              scenes_used=len(inside), scenes_outside_zone=len(of_year) - len(inside),
              scenes_other_years=len(found) - len(of_year))
  return composite_scenes(inside, zone, out_folder, year=year,
                          read=lambda scene: read_scene(scene, zone), info=info,
                          progress=progress)
