"""The zone folder: the contract between prep and every later stage.

One folder per zone and year, written only by this module and read only
through `open_zone`. A folder holds one zone-year: the composites of one year
and the RPG edition of that year. Layout: `<root>/<zone_id>/` for one year;
with several years, one folder of zone folders per year,
`<root>/<year>/<zone_id>/` (the `--out` of every prep command is a folder of
zone folders: `--out data/zones/2022`), which the dataset's multi-year configs
read (`cropcontracts.years`):

  s2.tif           uint16, T*4 bands, time-major (band t*4+c+1 is month t, band
                   c of B2 B3 B4 B8), descriptions like `2023-03 B8`, surface
                   reflectance x 10000, 0 = nodata. Tiled, deflate-compressed.
  valid_count.tif  uint8, T bands: valid (SCL 4-7) observations per month.
  labels.tif       uint8, tier-3 class id of the nomenclature, 255 = no label
                   (`ignore` codes, dropped borders, the margin around the
                   parcels, undeclared farmland). From nomenclature v3 the
                   land outside the parcels beyond the margin holds the
                   background class (`non_agricultural`, the last id).
  parcels.tif      uint32, 1-based row of parcels.csv, 0 = no parcel (the
                   shards carry it as int32: tf.io.decode_raw has no uint32).
  parcels.csv      parcel_index, ID_PARCEL, CODE_CULTU, CODE_GROUP, class_id,
                   class_name, tier2, tier1, surf_parc_ha, area_m2, n_pixels
                   (+ CULTURE_D1/D2 when the RPG has them).
  parcels.gpkg     layer `parcels`, zone CRS: one MultiPolygon per row of
                   parcels.csv with parcel_index, ID_PARCEL, CODE_CULTU: the
                   geometries labels.tif and parcels.tif were rasterized from
                   (since format jaxcrop-zone/2).
  meta.json        `format`, `year` (the zone-year), `zone`, `crs`, `transform`; `imagery` {months,
                   bands, source, scene counts, gap_filled_fraction,
                   nodata_pixels}; `labels` {nomenclature, rpg_edition and where
                   it came from, counts, class_pixel_counts (background
                   included), repaired/dropped geometries, unknown codes
                   ignored, margin, landcover {source: none | file (path,
                   crs) | worldcover, …}, background_pixels}.

All rasters share the zone grid (CRS, transform, width, height); a folder that
holds another zone is refused. Every file is
written atomically (a killed writer's temporary is removed by the next writer,
under the folder's `.lock`); a rewrite first takes the stage's section out of meta.json,
which is updated last, so a stage is complete for a zone exactly when its
section (`imagery`, `labels`) is present in meta.json, also after a rerun that
was interrupted.

Versions (meta.json `format`): `jaxcrop-zone/3` adds `year`, the zone-year,
written by the first stage (the composites' year, or the RPG edition when the
labels come first) and checked by every later write: composites of another
year, or an RPG of another edition, are refused in one line naming the folder
(they belong in `<root>/<their year>/<zone_id>/`). `jaxcrop-zone/2` added
parcels.gpkg to the labels stage. Folders of formats 1 and 2 are still read,
their year being that of their composites' months (the RPG edition for a
labels-only folder), and become format 3 at their next write (format 1 at
its next labels). Another format is refused.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

import numpy as np

from cropcontracts import atomic
from cropcontracts.errors import UserError
from cropcontracts.zone import Zone

FORMAT = "jaxcrop-zone/3"
FORMAT_1 = "jaxcrop-zone/1"             # read: the same folder without parcels.gpkg
FORMAT_2 = "jaxcrop-zone/2"             # read: the same folder without `year`
FORMATS = (FORMAT_1, FORMAT_2, FORMAT)
BANDS = ("B2", "B3", "B4", "B8")        # the band order of s2.tif and of every batch
VALID_SCL = frozenset({4, 5, 6, 7})     # SCL: vegetation, not vegetated, water, unclassified
NODATA = 0                              # reflectance nodata of s2.tif (no valid observation)
NO_LABEL = 255                          # labels.tif: `ignore` codes, borders, the margin
MONTHS_PER_YEAR = 12
IMAGERY_FILES = ("s2.tif", "valid_count.tif")
LABEL_FILES = ("labels.tif", "parcels.tif", "parcels.csv", "parcels.gpkg")
PARCEL_LAYER = "parcels"
PARCEL_FIELDS = ("parcel_index", "ID_PARCEL", "CODE_CULTU")   # of parcels.gpkg

_GTIFF = dict(driver="GTiff", tiled=True, blockxsize=256, blockysize=256,
              compress="deflate", predictor=2, interleave="band", BIGTIFF="IF_SAFER")


def month_labels(year: int, n: int = MONTHS_PER_YEAR) -> list[str]:
  """`['2023-01', …, '2023-12']`: the month labels of a year's composites."""
  return [f"{year}-{m:02d}" for m in range(1, n + 1)]


def band_descriptions(months, bands=BANDS) -> list[str]:
  """`['2023-01 B2', '2023-01 B3', …]`: the time-major band order of s2.tif."""
  return [f"{m} {b}" for m in months for b in bands]


def _profile(zone: Zone, count: int, dtype: str, nodata) -> dict:
  block = 256 if min(zone.width, zone.height) >= 256 else 16 * max(
      1, min(zone.width, zone.height) // 16)
  prof = dict(_GTIFF, count=count, dtype=dtype, crs=zone.crs,
              transform=zone.transform, width=zone.width, height=zone.height,
              nodata=nodata, blockxsize=block, blockysize=block)
  if dtype not in ("uint8", "uint16", "uint32", "int16", "int32"):
    prof["predictor"] = 3
  return prof


def _write_tif(path: pathlib.Path, zone: Zone, bands: np.ndarray, nodata,
               descriptions=None) -> None:
  """Writes [N, H, W] bands on the zone grid, atomically."""
  import rasterio
  if bands.shape[1:] != zone.shape:
    raise ValueError(f"{path.name}: array {bands.shape[1:]} != zone grid {zone.shape}")
  with atomic.atomic_path(path) as tmp:
    with rasterio.open(tmp, "w", **_profile(zone, bands.shape[0],
                                            bands.dtype.name, nodata)) as dst:
      dst.write(bands)
      for i, d in enumerate(descriptions or []):
        dst.set_band_description(i + 1, d)


def _read_meta(folder: pathlib.Path) -> dict:
  p = folder / "meta.json"
  if not p.exists():
    return {}
  try:
    return json.loads(p.read_text(encoding="utf-8"))
  except json.JSONDecodeError as e:
    raise UserError(f"{p}: not valid JSON ({e}); delete the zone folder and rerun prep")


def holds_zone(meta: dict, zone: Zone) -> bool:
  """True when a zone folder's meta.json describes `zone` on the same grid."""
  old = meta.get("zone", {})
  try:
    return (old.get("zone_id") == zone.zone_id and int(old.get("epsg", -1)) == zone.epsg
            and float(old.get("x0", "nan")) == zone.x0
            and float(old.get("y0", "nan")) == zone.y0
            and int(old.get("width", -1)) == zone.width
            and int(old.get("height", -1)) == zone.height)
  except (TypeError, ValueError):
    return False


def year_of(meta: dict) -> int | None:
  """The zone-year of a folder's meta.json: `year` (format 3), else the year of
  its composites' months, else its RPG edition; None for an empty folder."""
  if meta.get("year") is not None:
    return int(meta["year"])
  months = meta.get("imagery", {}).get("months") or []
  if months:
    return int(str(months[0])[:4])
  edition = meta.get("labels", {}).get("rpg_edition")
  return None if edition is None else int(edition)


def check_year(folder, meta: dict, year: int, what: str) -> None:
  """UserError when `folder` (meta.json `meta`) holds another zone-year than `year`.

  what: the data that would be written, e.g. "composites of 2022".
  """
  old = year_of(meta)
  if old is not None and old != int(year):
    folder = pathlib.Path(folder)
    raise UserError(
        f"{folder}: holds zone-year {old}, not {year}; write the {what} into a folder "
        f"of {year}'s zone folders (e.g. {folder.parent.parent / str(year) / folder.name})")


def check_folder(folder, zone: Zone, year: int | None = None) -> dict:
  """meta.json of `folder` ({} if none); a UserError if it holds another zone,
  or (`year` given) another zone-year (`check_year`).

  Stages call it before any expensive work (reading scenes, Earth Engine
  requests), not only when they write.
  """
  folder = pathlib.Path(folder)
  if folder.exists() and not folder.is_dir():
    raise UserError(f"{folder}: is a file, not a zone folder; choose another output folder")
  meta = _read_meta(folder)
  if meta and not holds_zone(meta, zone):
    raise UserError(
        f"{folder}: already holds zone {meta.get('zone', {}).get('zone_id')!r} on another "
        f"grid; choose another output folder or delete it to write {zone.zone_id!r}")
  if year is not None:
    check_year(folder, meta, year, f"composites of {year}")
  return meta


def _claim(folder: pathlib.Path, zone: Zone) -> dict:
  """Meta of `folder` updated to `zone`, refusing a folder of another zone."""
  meta = check_folder(folder, zone) or {"format": FORMAT}
  if meta.get("format") == FORMAT_2:      # format 3 only adds `year`, set by the caller
    meta["format"] = FORMAT
  meta["zone"] = zone.to_row()
  meta["crs"] = zone.crs
  meta["transform"] = list(zone.transform)[:6]
  meta["width"], meta["height"] = zone.width, zone.height
  return meta


def _begin_stage(folder: pathlib.Path, meta: dict, section: str) -> None:
  """Takes `section` out of meta.json before any of its files is replaced.

  On a rerun the old section would otherwise vouch for a mix of old and new
  files if the run stopped half-way; without it the stage reads as not done.
  """
  if meta.pop(section, None) is not None:
    atomic.write_json(folder / "meta.json", meta)


def write_imagery(folder, zone: Zone, composite: np.ndarray, valid_count: np.ndarray,
                  months, info: dict[str, Any] | None = None) -> None:
  """Writes s2.tif and valid_count.tif, then the `imagery` section of meta.json.

  Args:
    folder: the zone folder (created if absent).
    zone: the zone whose grid the arrays are on.
    composite: uint16 [T, C, H, W], C = 4 bands in BANDS order, 0 = nodata.
    valid_count: integer [T, H, W] valid observations per month (clipped to 255).
    months: T labels `YYYY-MM`.
    info: extra provenance for meta.json (source, year, scene count, fractions…).
  """
  folder = pathlib.Path(folder)
  composite = np.asarray(composite)
  T, C = composite.shape[:2]
  if composite.dtype != np.uint16 or C != len(BANDS) or len(months) != T:
    raise ValueError(f"composite must be uint16 [T, {len(BANDS)}, H, W] with T="
                     f"{len(months)} months, got {composite.dtype} {composite.shape}")
  with _writing(folder):
    _write_imagery(folder, zone, composite, valid_count, months, info)


def _writing(folder: pathlib.Path):
  """The zone folder's write lock (`.lock`): stages writing one zone at once (two
  composites, a composite and labels) take turns, so each meta.json update
  reads the other's section and the last writer leaves a complete folder; each
  first removes the temporaries of writers killed there (`atomic.claim`)."""
  return atomic.claim(folder, lock=LOCK)


LOCK = ".lock"


def _write_imagery(folder, zone, composite, valid_count, months, info) -> None:
  T, C = composite.shape[:2]
  meta = _claim(folder, zone)
  year = int(str(months[0])[:4])
  check_year(folder, meta, year, f"composites of {year}")
  meta["year"] = year
  _begin_stage(folder, meta, "imagery")
  _write_tif(folder / "s2.tif", zone, composite.reshape(T * C, *zone.shape),
             NODATA, band_descriptions(months))
  counts = np.clip(np.asarray(valid_count), 0, 255).astype(np.uint8)
  _write_tif(folder / "valid_count.tif", zone, counts, None,
             [f"{m} valid" for m in months])
  meta["imagery"] = dict(info or {}, months=list(months), bands=list(BANDS))
  atomic.write_json(folder / "meta.json", meta)


def write_labels(folder, zone: Zone, labels: np.ndarray, parcels: np.ndarray,
                 parcel_table, info: dict[str, Any] | None = None, *,
                 geometries) -> None:
  """Writes labels.tif, parcels.tif, parcels.csv, parcels.gpkg, then meta.json's
  `labels` (and `format` jaxcrop-zone/2).

  Args:
    labels: uint8 [H, W] tier-3 class ids, NO_LABEL (255) where no label.
    parcels: uint32 [H, W] 1-based parcel index into `parcel_table`, 0 = none.
    parcel_table: pandas DataFrame, one row per parcel index (column
      `parcel_index`, 1-based) with the columns listed in the module docstring.
    info: must hold `nomenclature` (version); may hold counts and provenance.
    geometries: object [P] shapely (Multi)Polygons in the zone CRS, row i of
      `parcel_table` (parcel_index i + 1): the shapes `parcels` was rasterized from
      (stored as MultiPolygons).
  """
  folder = pathlib.Path(folder)
  if "nomenclature" not in (info or {}):
    raise ValueError("info must name the nomenclature version")
  if len(geometries) != len(parcel_table):
    raise ValueError(f"{len(geometries)} geometries for {len(parcel_table)} parcels")
  with _writing(folder):
    _write_labels(folder, zone, labels, parcels, parcel_table, info, geometries)


def _write_labels(folder, zone, labels, parcels, parcel_table, info, geometries) -> None:
  meta = _claim(folder, zone)
  edition = info.get("rpg_edition")
  if edition is not None:
    check_year(folder, meta, edition, f"labels of RPG {edition}")
  year = year_of(meta) if edition is None else int(edition)
  if year is not None:
    meta["year"] = year
  _begin_stage(folder, meta, "labels")
  _write_tif(folder / "labels.tif", zone, np.asarray(labels, np.uint8)[None],
             NO_LABEL, ["tier-3 class"])
  _write_tif(folder / "parcels.tif", zone, np.asarray(parcels, np.uint32)[None],
             0, ["parcel index"])
  with atomic.atomic_path(folder / "parcels.csv") as tmp:
    parcel_table.to_csv(tmp, index=False)
  _write_parcel_geometries(folder / "parcels.gpkg", zone, parcel_table, geometries)
  meta["format"] = FORMAT
  meta["labels"] = dict(info)
  atomic.write_json(folder / "meta.json", meta)


def _write_parcel_geometries(path: pathlib.Path, zone: Zone, parcel_table,
                             geometries) -> None:
  """parcels.gpkg: PARCEL_FIELDS of `parcel_table` + `geometries` (zone CRS), atomically."""
  import warnings
  import geopandas as gpd
  gdf = gpd.GeoDataFrame(
      {f: parcel_table[f].to_numpy() for f in PARCEL_FIELDS},
      geometry=gpd.GeoSeries(list(geometries), crs=zone.crs), crs=zone.crs)
  gdf["ID_PARCEL"] = gdf["ID_PARCEL"].astype(str)
  with atomic.atomic_path(path) as tmp, warnings.catch_warnings():
    warnings.filterwarnings("ignore", "The filename extension")   # the tmp name
    gdf.to_file(tmp, layer=PARCEL_LAYER, driver="GPKG", engine="pyogrio",
                geometry_type="MultiPolygon", promote_to_multi=True)


@dataclasses.dataclass
class ZoneFolder:
  """A validated zone folder; reads arrays lazily, whole or by window.

  Windows are `rasterio.windows.Window` or ((row0, row1), (col0, col1)).
  """
  path: pathlib.Path
  meta: dict
  zone: Zone

  @property
  def zone_id(self) -> str:
    return self.zone.zone_id

  @property
  def months(self) -> list[str]:
    return list(self.meta["imagery"]["months"])

  @property
  def bands(self) -> list[str]:
    return list(self.meta["imagery"]["bands"])

  @property
  def year(self) -> int:
    """The zone-year (`year_of`): its composites' year."""
    return year_of(self.meta)

  @property
  def has_labels(self) -> bool:
    return "labels" in self.meta

  @property
  def nomenclature(self) -> str | None:
    return self.meta.get("labels", {}).get("nomenclature")

  @property
  def format(self) -> str:
    return self.meta.get("format", FORMAT_1)

  @property
  def has_parcel_geometries(self) -> bool:
    """True for a labelled folder that carries parcels.gpkg (format 2 and later)."""
    return self.has_labels and self.format != FORMAT_1

  def _read(self, name: str, window=None) -> np.ndarray:
    import rasterio
    p = self.path / name
    try:
      with rasterio.open(p) as src:
        return src.read(window=window)
    except rasterio.errors.RasterioError as e:
      raise UserError(f"zone {self.zone_id}: {p} is unreadable ({e}); it may be "
                      f"truncated — rerun prep for this zone") from None

  def read_image(self, window=None) -> np.ndarray:
    """uint16 [T, H, W, C] composites (0 = nodata)."""
    a = self._read("s2.tif", window)
    T, C = len(self.months), len(self.bands)
    return a.reshape(T, C, *a.shape[1:]).transpose(0, 2, 3, 1)

  def read_valid_count(self, window=None) -> np.ndarray:
    """uint8 [T, H, W] valid observations per month."""
    return self._read("valid_count.tif", window)

  def read_labels(self, window=None) -> np.ndarray:
    """uint8 [H, W] tier-3 class ids, 255 = no label."""
    return self._read("labels.tif", window)[0]

  def read_parcels(self, window=None) -> np.ndarray:
    """uint32 [H, W] parcel index (row of parcels.csv), 0 = none."""
    return self._read("parcels.tif", window)[0]

  def parcel_table(self):
    import pandas as pd
    return pd.read_csv(self.path / "parcels.csv", dtype={"ID_PARCEL": str,
                                                          "CODE_CULTU": str,
                                                          "CODE_GROUP": str})

  def read_parcel_geometries(self):
    """GeoDataFrame (zone CRS) of parcels.gpkg: parcel_index, ID_PARCEL, CODE_CULTU,
    geometry; one row per row of parcels.csv, in its order."""
    import pyogrio
    p = self.path / "parcels.gpkg"
    if not self.has_parcel_geometries:
      raise UserError(f"zone {self.zone_id}: {self.path} is a {self.format} folder "
                      f"without parcels.gpkg; rerun `python -m prep labels` for this zone")
    try:
      gdf = pyogrio.read_dataframe(p, layer=PARCEL_LAYER)
    except Exception as e:  # pyogrio.errors.DataSourceError and friends
      raise UserError(f"zone {self.zone_id}: {p} is unreadable ({e}); it may be "
                      f"truncated — rerun `python -m prep labels` for this zone") from None
    gdf["ID_PARCEL"] = gdf["ID_PARCEL"].astype(str)
    return gdf


def open_zone(folder, *, require_labels: bool = False) -> ZoneFolder:
  """Opens and validates a zone folder written by prep.

  Raises UserError naming the zone and the file when a file is missing, a stage
  is incomplete, or the rasters are not on one grid.
  """
  import rasterio
  folder = pathlib.Path(folder)
  if not folder.is_dir():
    raise UserError(f"{folder}: not a zone folder (does not exist)")
  meta = _read_meta(folder)
  if not meta or "zone" not in meta:
    raise UserError(f"{folder}: no meta.json; run `python -m prep composite` for this zone")
  zone = Zone.from_row(meta["zone"])
  name = zone.zone_id
  fmt = meta.get("format", FORMAT_1)
  if fmt not in FORMATS:
    raise UserError(f"zone {name}: {folder / 'meta.json'} has format {fmt!r}; this code "
                    f"reads {', '.join(FORMATS)}: use the jaxcrop version that wrote it")
  if "imagery" not in meta:
    raise UserError(f"zone {name}: imagery incomplete in {folder}; run `python -m prep composite`")
  files = list(IMAGERY_FILES)
  if require_labels and "labels" not in meta:
    raise UserError(f"zone {name}: no labels in {folder}; run `python -m prep labels`")
  if "labels" in meta:
    files += [f for f in LABEL_FILES if fmt != FORMAT_1 or f != "parcels.gpkg"]
  for f in files:
    if not (folder / f).is_file():
      raise UserError(f"zone {name}: {folder / f} is missing; rerun prep for this zone")
  T = len(meta["imagery"]["months"]) * len(meta["imagery"]["bands"])
  for f, count in [("s2.tif", T), ("valid_count.tif", T // 4), ("labels.tif", 1),
                   ("parcels.tif", 1)]:
    if f not in files:
      continue
    try:
      with rasterio.open(folder / f) as src:
        grid_ok = (src.crs is not None and src.crs.to_epsg() == zone.epsg
                   and src.width == zone.width and src.height == zone.height
                   and np.allclose(list(src.transform)[:6], list(zone.transform)[:6]))
        if not grid_ok:
          raise UserError(
              f"zone {name}: {folder / f} is on grid {src.crs} {src.width}x{src.height} "
              f"{tuple(src.transform)[:6]}, not the zone grid {zone.crs} "
              f"{zone.width}x{zone.height} {tuple(zone.transform)[:6]}")
        if src.count != count:
          raise UserError(f"zone {name}: {folder / f} has {src.count} bands, "
                          f"expected {count}")
    except rasterio.errors.RasterioError as e:
      raise UserError(f"zone {name}: {folder / f} is unreadable ({e})") from None
  return ZoneFolder(folder, meta, zone)


def find_zones(root, *, require_labels: bool = False) -> list[ZoneFolder]:
  """All zone folders directly under `root`, opened (sorted by zone id)."""
  found = [open_zone(p, require_labels=require_labels)
           for p in _zone_paths_under(pathlib.Path(root)).values()]
  return sorted(found, key=lambda z: z.zone_id)


def resolve_zones(paths) -> list[ZoneFolder]:
  """Zone folders from a list of zone folders and/or folders of zone folders, opened."""
  return [open_zone(p) for p in zone_paths(paths).values()]


def zone_paths(paths) -> dict[str, pathlib.Path]:
  """{folder name: folder} of the zone folders among `paths` (zone folders and/or
  folders of zone folders, each one's sorted by name), found by their meta.json
  but not opened: a process that maps its share of thousands of zones opens
  only those (`open_zone`)."""
  found = {}
  for p in map(pathlib.Path, paths):
    found.update({p.name: p} if (p / "meta.json").is_file() else _zone_paths_under(p))
  return found


def _zone_paths_under(root: pathlib.Path) -> dict[str, pathlib.Path]:
  """{folder name: folder} of the zone folders directly under `root` (not opened)."""
  if not root.is_dir():
    raise UserError(f"{root}: folder of zone folders does not exist")
  found = {p.name: p for p in sorted(root.iterdir()) if (p / "meta.json").is_file()}
  if not found:
    raise UserError(f"{root}: holds no zone folder (no */meta.json); run prep first")
  return found
