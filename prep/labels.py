"""Zone labels from the RPG: parcels -> parcel raster and tier-3 class raster.

The RPG (Registre Parcellaire Graphique) is the French register of the parcels
declared for CAP aid: one polygon per parcel, in Lambert-93 (EPSG:2154), with its
main crop code `CODE_CULTU`. It comes as one national GeoPackage (~10 M parcels)
or as regional Shapefiles; a zone only ever reads the parcels whose bounding box
meets the zone (`bbox=` read through the file's spatial index), never the file.

For one zone, `make_zone_labels` writes (through `cropcontracts.zonefolder.write_labels`):

  parcels.tif  uint32 [H, W]: 1-based row of parcels.csv whose parcel holds the
               pixel centre, 0 = no parcel.
  labels.tif   uint8 [H, W]: tier-3 class id of that parcel's crop (nomenclature
               `cropcontracts/data/rpg_codes_<version>.csv`), 255 = an `ignore`
               code; outside the parcels the background class (`non_agricultural`,
               from v3) beyond the margin, 255 within it. Always labels ==
               class_of[parcels] where parcels > 0.
  parcels.csv  one row per parcel intersecting the zone (n_pixels may be 0 for a
               sliver that holds no pixel centre).
  parcels.gpkg the same parcels' cleaned geometries in the zone CRS (whole, not
               clipped to the zone): what parcels.tif was rasterized from, so that
               predict never reads the RPG again.

Rules:
  * A pixel belongs to the parcel that contains its centre (GDAL's default
    rasterization). Where parcels overlap, the smaller parcel wins (it is drawn
    last), so a parcel declared inside another keeps its pixels; ties go to the
    later row of parcels.csv (rows are sorted by ID_PARCEL).
  * Background: a pixel whose cell holds no part of any parcel (`ignore` and
    unknown codes included: they are farmland too) and lies more than `margin`
    pixels (Chebyshev) from every cell that does (`near_parcels`: one binary
    dilation of that mask, computed on the grid grown by the margin so that
    parcels just outside the zone count). The cells a parcel boundary crosses
    (mixed pixels) are never background, whatever the margin; the margin
    (default 1) keeps the misregistration between the RPG and the Sentinel-2
    grid off the class. With `landcover` (`prep.landcover`) the pixels it calls
    farmland (WorldCover grassland, cropland) or leaves without a value stay
    unlabelled: undeclared farmland is not background.
  * `drop_border=True` removes (parcels 0, labels 255) every pixel whose 10 m
    cell is crossed by any parcel boundary, i.e. keeps only cells that lie whole
    inside one parcel. Exact: a boundary segment passes through the open cell
    centred at c iff c lies in the interior of the segment's Minkowski sum with
    the axis-aligned cell square; those hexagons (shrunk by 1 mm, so a boundary
    lying exactly on a pixel edge does not count) are rasterized by centre.
  * Invalid geometries are repaired with `shapely.make_valid`, keeping their
    polygonal parts; geometries that are null, empty or have no polygonal part
    are dropped. Parcels repeated under one ID_PARCEL (regional files overlap at
    their borders) are kept once. Every such count goes to meta.json.
  * A missing CODE_CULTU is read as `NR`, the producer's "not filled in".
  * Codes take their meaning in the RPG edition read (`rpg_edition`): the
    `edition` argument (`--rpg-year`), else the year in the RPG file's name or
    in a folder above it named RPG…, else the year of the zone's composites,
    else 2023 with a warning. A code the nomenclature lacks for that edition
    is an error listing each code with its parcels and area;
    `unknown_codes="ignore"` leaves them unlabelled, warns and records them.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import warnings
from typing import Sequence

import numpy as np

from cropcontracts import nomenclature as nomenclature_lib
from cropcontracts import zonefolder
from cropcontracts.errors import UserError
from cropcontracts.zone import Zone
from cropcontracts.zonefolder import NO_LABEL

RPG_CRS = "EPSG:2154"
RPG_LAYER = "PARCELLES_GRAPHIQUES"
REQUIRED_FIELDS = ("ID_PARCEL", "CODE_CULTU")
OPTIONAL_FIELDS = ("CODE_GROUP", "SURF_PARC", "CULTURE_D1", "CULTURE_D2")
TABLE_COLUMNS = ("parcel_index", "ID_PARCEL", "CODE_CULTU", "CODE_GROUP",
                 "class_id", "class_name", "tier2", "tier1", "surf_parc_ha",
                 "area_m2", "n_pixels")
BORDER_EPS = 1e-3  # metres: boundaries closer than this to a cell are "on its edge"

_POLYGON, _MULTIPOLYGON = 3, 6


def find_layer(path: pathlib.Path, layer: str | None = None) -> str:
  """The parcel layer of an RPG file: `layer`, else PARCELLES_GRAPHIQUES, else the only one.

  Names are matched case-insensitively (a GeoPackage may say `parcelles_graphiques`).
  """
  import pyogrio
  if path.suffix.lower() == ".7z":
    raise UserError(f"{path}: a 7-Zip archive; extract it first (7z x {path.name}) and "
                    f"pass the PARCELLES_GRAPHIQUES .gpkg or .shp inside")
  try:
    names = [str(n) for n in pyogrio.list_layers(path)[:, 0]]
  except Exception as e:  # pyogrio.errors.DataSourceError and friends
    raise UserError(f"{path}: not a readable GeoPackage/Shapefile ({e}); pass the "
                    f"RPG file (PARCELLES_GRAPHIQUES.gpkg or a regional .shp)") from None
  by_lower = {n.lower(): n for n in names}
  wanted = layer or RPG_LAYER
  if wanted.lower() in by_lower:
    return by_lower[wanted.lower()]
  if layer is None and len(names) == 1:
    return names[0]
  raise UserError(f"{path}: layer {wanted!r} not found; layers found: {', '.join(names) or 'none'}; "
                  f"pass --layer with one of them")


def _check_crs(path: pathlib.Path, crs) -> None:
  """UserError unless `crs` is Lambert-93 (the metropolitan RPG)."""
  import pyproj
  if crs is None:
    raise UserError(f"{path}: has no CRS (missing .prj?); the metropolitan RPG is in "
                    f"{RPG_CRS} (Lambert-93): restore the .prj or pass the original file")
  c = pyproj.CRS.from_user_input(crs)
  if c.to_epsg(min_confidence=25) == 2154 or c.equals(pyproj.CRS.from_epsg(2154),
                                                      ignore_axis_order=True):
    return
  name = f"EPSG:{c.to_epsg()}" if c.to_epsg() else c.name
  raise UserError(f"{path}: CRS is {name}, expected {RPG_CRS} (Lambert-93, metropolitan "
                  f"France); reproject it (ogr2ogr -t_srs {RPG_CRS}) or pass the "
                  f"metropolitan RPG file (overseas RPG files use other CRSs)")


def _field_map(path: pathlib.Path, layer: str, fields: Sequence[str]) -> dict:
  """{canonical name: name in the file} for the required and present optional fields."""
  by_upper = {f.upper(): f for f in fields}
  missing = [f for f in REQUIRED_FIELDS if f not in by_upper]
  if missing:
    raise UserError(f"{path} (layer {layer}): missing field(s) {', '.join(missing)}; "
                    f"fields found: {', '.join(fields) or 'none'}; is it an RPG "
                    f"PARCELLES_GRAPHIQUES file (RPG 2.x, 2015 or later)?")
  return {f: by_upper[f] for f in REQUIRED_FIELDS + OPTIONAL_FIELDS if f in by_upper}


def _text(col):
  """A column as stripped strings, '' where null (whole floats such as 12.0 -> '12').

  Some regional files store ID_PARCEL or CODE_GROUP as numbers.
  """
  import pandas as pd
  if pd.api.types.is_float_dtype(col) and bool((col.dropna() % 1 == 0).all()):
    col = col.astype("Int64")
  return col.astype("string").fillna("").str.strip()


def read_rpg(path, zone: Zone, layer: str | None = None):
  """Parcels of one RPG file whose bounding box meets the zone's (EPSG:2154).

  Returns:
    GeoDataFrame in EPSG:2154 with columns ID_PARCEL, CODE_CULTU, CODE_GROUP,
    SURF_PARC and, when present in the file, CULTURE_D1, CULTURE_D2 (str codes,
    '' when absent; SURF_PARC float, NaN when absent).
  """
  import pyogrio
  path = pathlib.Path(path)
  if not path.exists():
    raise UserError(f"{path}: RPG file not found; download the RPG (geoservices.ign.fr/rpg) "
                    f"and pass its PARCELLES_GRAPHIQUES file")
  layer = find_layer(path, layer)
  info = pyogrio.read_info(path, layer=layer)
  _check_crs(path, info.get("crs"))
  fields = _field_map(path, layer, [str(f) for f in info["fields"]])
  try:
    gdf = pyogrio.read_dataframe(path, layer=layer, columns=list(fields.values()),
                                 bbox=tuple(zone.bounds_in(RPG_CRS)))
  except Exception as e:  # pyogrio.errors.FeatureError and friends
    if "no such module: rtree" not in str(e):
      raise
    # TensorFlow imported before GDAL brings a SQLite without R*Tree, and a
    # GeoPackage's spatial index (every IGN delivery has one) cannot be read.
    raise UserError(f"{path}: its spatial index cannot be read in this process (its SQLite "
                    f"lacks the R*Tree module, as when TensorFlow is imported before GDAL); "
                    f"run `python -m prep labels` in a process of its own, or import "
                    f"pyogrio before tensorflow") from None
  gdf = gdf.rename(columns={v: k for k, v in fields.items()})
  gdf["ID_PARCEL"] = _text(gdf["ID_PARCEL"])
  code = _text(gdf["CODE_CULTU"])
  gdf["CODE_CULTU"] = code.mask(code == "", "NR")
  gdf["CODE_GROUP"] = _text(gdf["CODE_GROUP"]) if "CODE_GROUP" in gdf else ""
  gdf["SURF_PARC"] = gdf["SURF_PARC"].astype(float) if "SURF_PARC" in gdf else np.nan
  for f in ("CULTURE_D1", "CULTURE_D2"):
    if f in gdf:
      gdf[f] = _text(gdf[f])
  gdf = gdf.set_crs(RPG_CRS, allow_override=True)
  gdf.attrs["layer"] = layer
  return gdf


def repair_geometries(geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
  """Polygonal, valid versions of `geoms`.

  Args:
    geoms: object [N] shapely geometries (None allowed).
  Returns:
    (fixed object [N] with None where dropped, keep bool [N], n_repaired): an
    invalid or non-polygonal geometry is replaced by the polygonal parts of
    `shapely.make_valid`; one that is null, empty or has no polygonal part of
    non-zero area is dropped.
  """
  import shapely
  geoms = np.asarray(geoms, dtype=object)
  polygonal = np.isin(shapely.get_type_id(geoms), (_POLYGON, _MULTIPOLYGON))
  bad = ~(shapely.is_valid(geoms) & polygonal) & ~shapely.is_missing(geoms)
  fixed = geoms.copy()
  if bad.any():
    made = shapely.make_valid(geoms[bad])
    parts, owner = shapely.get_parts(made, return_index=True)
    parts, sub = shapely.get_parts(parts, return_index=True)  # nested collections
    owner = owner[sub]
    keep = (shapely.get_type_id(parts) == _POLYGON) & (shapely.area(parts) > 0)
    rebuilt = np.full(len(made), None, dtype=object)
    if keep.any():
      uniq, inv = np.unique(owner[keep], return_inverse=True)
      rebuilt[uniq] = shapely.multipolygons(parts[keep], indices=inv)
    fixed[bad] = rebuilt
  keep = ~shapely.is_missing(fixed)
  keep[keep] = ~shapely.is_empty(fixed[keep]) & (shapely.area(fixed[keep]) > 0)
  fixed[~keep] = None
  return fixed, keep, int((bad & keep).sum())


def rasterize_parcels(geoms: np.ndarray, zone: Zone) -> np.ndarray:
  """uint32 [H, W] 1-based index of the parcel holding each pixel centre, 0 = none.

  Args:
    geoms: object [N] polygons in the zone CRS; parcel i gets value i + 1.
  Overlaps: the smaller parcel wins (drawn last: rasterio's default merge
  replaces earlier values); between equal areas the later parcel wins.
  """
  import rasterio.features
  import shapely
  if len(geoms) == 0:
    return np.zeros(zone.shape, np.uint32)
  order = np.lexsort((np.arange(len(geoms)), -shapely.area(geoms)))  # large first
  return rasterio.features.rasterize(
      zip(geoms[order], (order + 1).tolist()), out_shape=zone.shape,
      transform=zone.transform, fill=0, dtype="uint32")


def _swept_cells(a: np.ndarray, b: np.ndarray, h: float) -> np.ndarray:
  """Polygons [S]: segment a->b swept by the square [-h, h]^2 (Minkowski sum).

  Args:
    a, b: float [S, 2] segment ends.
  The sum is the hexagon hull of the square at both ends; with the segment
  oriented so that dx >= 0, its vertices are known corners of the two squares.
  """
  import shapely
  swap = (b[:, 0] < a[:, 0]) | ((b[:, 0] == a[:, 0]) & (b[:, 1] < a[:, 1]))
  a, b = np.where(swap[:, None], b, a), np.where(swap[:, None], a, b)
  up = b[:, 1] >= a[:, 1]
  # Counter-clockwise hexagons: which end (0 = a, 1 = b) and which corner.
  end_up, end_down = np.array([0, 0, 1, 1, 1, 0]), np.array([0, 1, 1, 1, 0, 0])
  corner_up = np.array([[-1, -1], [1, -1], [1, -1], [1, 1], [-1, 1], [-1, 1]])
  corner_down = np.array([[-1, -1], [-1, -1], [1, -1], [1, 1], [1, 1], [-1, 1]])
  ends = np.stack([a, b], axis=1)  # [S, 2, 2]
  which = np.where(up[:, None], end_up, end_down)  # [S, 6]
  corner = np.where(up[:, None, None], corner_up, corner_down)  # [S, 6, 2]
  xy = np.take_along_axis(ends, which[:, :, None], axis=1) + h * corner
  return shapely.polygons(xy)


def border_mask(geoms: np.ndarray, zone: Zone) -> np.ndarray:
  """bool [H, W]: True where a parcel boundary passes through the pixel's cell.

  Each boundary segment is swept by the axis-aligned cell square of half-side
  res/2 - BORDER_EPS; a pixel centre falls inside that hexagon exactly when the
  segment enters the pixel's open cell (less a 1 mm margin, so a boundary lying
  on a pixel edge does not count).
  """
  import rasterio.features
  import shapely
  if len(geoms) == 0:
    return np.zeros(zone.shape, bool)
  rings = shapely.get_parts(shapely.get_parts(shapely.boundary(geoms)))
  xy, ring = shapely.get_coordinates(rings, return_index=True)
  same = ring[1:] == ring[:-1]
  swept = _swept_cells(xy[:-1][same], xy[1:][same], zone.res / 2 - BORDER_EPS)
  hit = rasterio.features.rasterize(
      ((g, 1) for g in swept), out_shape=zone.shape, transform=zone.transform,
      fill=0, dtype="uint8")
  return hit.astype(bool)


def grown(zone: Zone, pixels: int) -> Zone:
  """The zone's grid grown by `pixels` on every side (same CRS, resolution, pixel edges)."""
  return dataclasses.replace(zone, x0=zone.x0 - pixels * zone.res,
                             y0=zone.y0 + pixels * zone.res, width=zone.width + 2 * pixels,
                             height=zone.height + 2 * pixels)


def near_parcels(geoms: np.ndarray, zone: Zone, margin: int) -> np.ndarray:
  """bool [H, W]: True where a pixel's cell holds part of a parcel, or lies within
  `margin` pixels of such a cell (Chebyshev distance: the 8 neighbours are 1 away).

  Args:
    geoms: object [N] polygons in the zone CRS, every parcel that may lie within
      `margin` pixels of the zone, whatever its code (an `ignore` parcel is farmland).
    margin: pixels, >= 0.
  A cell holds part of a parcel when the parcel holds its centre (`rasterize_parcels`)
  or its boundary crosses the cell (`border_mask`: the mixed pixels at a parcel edge).
  Computed on the grid grown by `margin` pixels, so that a parcel just outside the zone
  counts too, then one binary dilation by a (2 margin + 1)^2 square.
  """
  from scipy import ndimage
  around = grown(zone, margin)
  held = (rasterize_parcels(geoms, around) > 0) | border_mask(geoms, around)
  if margin:
    held = ndimage.binary_dilation(held, np.ones((2 * margin + 1,) * 2, bool))
  return held[margin:margin + zone.height, margin:margin + zone.width]


_YEAR = re.compile(r"(?<!\d)(20\d\d)(?!\d)")
UNKNOWN_CODES = ("error", "ignore")
# Pixels beyond the cells holding part of a parcel that stay unlabelled (docs/prep-labels.md).
DEFAULT_MARGIN = 1


def edition_in_path(path) -> int | None:
  """The RPG edition written in an RPG file's path, None when it says none.

  The file's own name first (`RPG_2023.gpkg`, IGN's
  `RPG_2-2__GPKG_LAMB93_FXX_2023-01-01.gpkg`), then the folders above it whose
  name starts with RPG (IGN archives extract to `RPG_2-0__GPKG_LAMB93_FXX_2022-01-01/
  …/RPG_2-0_GPKG_LAMB93_FXX-2022/PARCELLES_GRAPHIQUES.gpkg`; their
  `1_DONNEES_LIVRAISON_<date>` folder carries the delivery date, not the edition).
  """
  path = pathlib.Path(path)
  for i, name in enumerate([path.stem] + [p.name for p in path.parents]):
    if i and not name.upper().startswith("RPG"):
      continue
    years = sorted(set(_YEAR.findall(name)))
    if len(years) > 1:
      raise UserError(f"{path}: the name {name!r} holds several years ({', '.join(years)}); "
                      f"pass the RPG edition with --rpg-year")
    if years:
      return int(years[0])
  return None


def rpg_edition(paths: Sequence[pathlib.Path], meta: dict,
                edition: int | None = None, year: int | None = None) -> tuple[int, str]:
  """(RPG edition, where it came from) for reading the codes of `paths`.

  Args:
    paths: the RPG files; meta: the zone folder's meta.json ({} if none);
    edition: the edition given by the user (`--rpg-year`), if any.
    year: the zone-year given by the user (`--year`), if any.
  Returns:
    `edition` ("--rpg-year"), else the year in the files' names ("file name"),
    else `year` ("--year"), else the year of the zone's composites
    ("composites"), else nomenclature.DEFAULT_EDITION ("default", with a
    warning).
  """
  if edition is not None:
    found = (int(edition), "--rpg-year")
  elif year is not None and not any(edition_in_path(p) for p in paths):
    found = (int(year), "--year")
  else:
    years = {p: y for p in paths if (y := edition_in_path(p)) is not None}
    if len(set(years.values())) > 1:
      raise UserError(f"RPG files of different editions: "
                      f"{', '.join(f'{p.name} ({y})' for p, y in years.items())}; "
                      f"label a zone from one edition")
    months = meta.get("imagery", {}).get("months") or []
    if years:
      found = (next(iter(years.values())), "file name")
    elif months:
      found = (int(str(months[0])[:4]), "composites")
    else:
      found = (nomenclature_lib.DEFAULT_EDITION, "default")
      warnings.warn(f"{', '.join(p.name for p in paths)}: no year in the file name and no "
                    f"composites in the zone folder; codes read as RPG edition {found[0]} "
                    f"(pass --rpg-year to say the edition)")
  if found[0] < nomenclature_lib.FIRST_EDITION:
    raise UserError(f"RPG edition {found[0]} ({found[1]}): the nomenclature covers RPG 2.x "
                    f"editions from {nomenclature_lib.FIRST_EDITION} on; pass --rpg-year")
  return found


def check_edition_year(paths: Sequence[pathlib.Path], edition: int, edition_from: str,
                       year: int | None, folder, meta: dict) -> None:
  """UserError (naming the RPG files) when the RPG edition is not the zone-year:
  `year` (`--year`) or the year the zone folder already holds (its composites').

  A zone-year's labels are its own year's RPG: wheat declared in 2022 says
  nothing certain of the field in 2023 (`jaxcrop.previous_year` uses exactly that
  as a baseline, never as labels).
  """
  names = ", ".join(p.name for p in paths)
  if year is not None and int(year) != edition:
    raise UserError(f"{names}: RPG edition {edition} ({edition_from}) does not match "
                    f"--year {year}; pass the RPG of {year} (or --rpg-year when the file "
                    f"name is wrong)")
  held = zonefolder.year_of(meta)
  if held is not None and held != edition:
    raise UserError(f"{names}: RPG edition {edition} ({edition_from}) does not match the "
                    f"zone-year {held} of {folder}; label the folders of {edition} "
                    f"(--out <root>/{edition}) or pass the RPG of {held}")


def unknown_code_counts(gdf, codes: Sequence[str]) -> list:
  """[{code, parcels, area_ha}] of `codes` among the zone's parcels, by code.

  area_ha: the parcels' whole polygon area (as parcels.csv area_m2), hectares.
  """
  import shapely
  area = shapely.area(gdf.geometry.to_numpy())
  out = []
  for c in codes:
    sel = (gdf["CODE_CULTU"] == c).to_numpy()
    out.append(dict(code=c, parcels=int(sel.sum()),
                    area_ha=round(float(area[sel].sum()) / 1e4, 2)))
  return out


def _class_columns(codes, nom, edition: int) -> dict:
  """class_id (255 = ignore or unknown), class_name, tier2, tier1 of each parcel's code."""
  ids = nom.classes_of_codes(codes, edition, unknown="ignore")
  names = np.array(list(nom.tier3) + [nomenclature_lib.IGNORE_NAME], dtype=object)
  tier2 = np.array(list(nom.tier2) + [nomenclature_lib.IGNORE_NAME], dtype=object)
  tier1 = np.array(list(nom.tier1) + [nomenclature_lib.IGNORE_NAME], dtype=object)
  pos = np.where(ids == NO_LABEL, nom.num_classes, ids)
  return dict(class_id=ids.astype(int), class_name=names[pos], tier2=tier2[pos],
              tier1=tier1[pos])


def zone_parcels(paths: Sequence[pathlib.Path], zone: Zone, layer: str | None = None, *,
                 margin: int = 0):
  """The cleaned RPG parcels intersecting `zone`, in the zone's CRS, and those near it.

  Args:
    margin: pixels around the zone whose parcels are also returned (`near`).
  Returns:
    (GeoDataFrame sorted by ID_PARCEL with a fresh 0-based index, counts dict
    with layer, invalid_repaired, invalid_dropped, duplicates_dropped (counts
    are over the parcels read, i.e. the bounding box of the zone grown by
    `margin` pixels), near: object [M] geometries (zone CRS) of the parcels
    within `margin` pixels of the zone that do not meet it).
  """
  import geopandas
  import pandas as pd
  import shapely
  names = ", ".join(p.name for p in paths)
  around = grown(zone, margin)
  frames = [read_rpg(p, around, layer) for p in paths]
  layers = ", ".join(dict.fromkeys(f.attrs["layer"] for f in frames))
  gdf = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
  geoms, keep, n_repaired = repair_geometries(gdf.geometry.to_numpy())
  gdf[gdf.geometry.name] = geopandas.GeoSeries(geoms, index=gdf.index, crs=gdf.crs)
  gdf = gdf[keep]
  dup = gdf["ID_PARCEL"].duplicated() & (gdf["ID_PARCEL"] != "")
  gdf = gdf[~dup].to_crs(zone.crs)
  geoms = gdf.geometry.to_numpy()
  inside = shapely.intersects(geoms, shapely.box(*zone.bounds))
  near = geoms[~inside & shapely.intersects(geoms, shapely.box(*around.bounds))]
  gdf = gdf[inside]
  if gdf.empty:
    raise UserError(f"zone {zone.zone_id} has no RPG parcel in {names}; is it the right "
                    f"region/vintage?")
  gdf = gdf.sort_values("ID_PARCEL", key=lambda s: s.str.zfill(20), kind="stable")
  counts = dict(layer=layers, invalid_repaired=n_repaired,
                invalid_dropped=int((~keep).sum()), duplicates_dropped=int(dup.sum()))
  return gdf.reset_index(drop=True), counts, near


def parcel_table(gdf, classes: dict, parcels: np.ndarray):
  """pandas DataFrame, one row per parcel (TABLE_COLUMNS, then CULTURE_D1/D2 if read).

  Args:
    gdf: the zone's parcels (`zone_parcels`), in the zone's UTM CRS.
    classes: per-parcel class columns (`_class_columns`).
    parcels: uint32 [H, W] parcel raster (row i is value i + 1).
  """
  import pandas as pd
  import shapely
  n = len(gdf)
  table = pd.DataFrame(dict(
      parcel_index=np.arange(1, n + 1), ID_PARCEL=gdf["ID_PARCEL"].to_numpy(),
      CODE_CULTU=gdf["CODE_CULTU"].to_numpy(), CODE_GROUP=gdf["CODE_GROUP"].to_numpy(),
      **classes, surf_parc_ha=gdf["SURF_PARC"].to_numpy(),
      area_m2=np.round(shapely.area(gdf.geometry.to_numpy()), 2),
      n_pixels=np.bincount(parcels.ravel(), minlength=n + 1)[1:]))
  for extra in ("CULTURE_D1", "CULTURE_D2"):
    if extra in gdf:
      table[extra] = gdf[extra].fillna("").to_numpy()
  return table


def make_zone_labels(rpg_path, zone: Zone, out_folder, *, layer: str | None = None,
                     drop_border: bool = False, progress: bool = True,
                     edition: int | None = None, unknown_codes: str = "error",
                     margin: int = DEFAULT_MARGIN, landcover=None,
                     year: int | None = None) -> dict:
  """Rasterizes the RPG parcels of `zone` into its zone folder.

  Args:
    rpg_path: the RPG GeoPackage or a regional Shapefile (EPSG:2154), or a list
      of them (neighbouring regions; parcels repeated by ID_PARCEL kept once).
    zone: the zone whose grid the rasters are on.
    out_folder: the zone folder (created if absent; may already hold imagery).
    layer: layer name; default PARCELLES_GRAPHIQUES (any case) or the only layer.
    drop_border: keep only pixels whose cell lies whole inside one parcel.
    progress: show a progress bar.
    edition: the RPG edition (declaration year) the codes are read in; None:
      see `rpg_edition`.
    unknown_codes: "error" (default) stops on codes the nomenclature lacks for
      the edition; "ignore" leaves their parcels unlabelled, with a warning.
    margin: pixels around the cells holding part of a parcel that stay
      unlabelled; the background class goes to the pixels beyond.
    landcover: None (every pixel beyond the margin is background), "worldcover"
      (ESA WorldCover through Earth Engine, initialized first) or a land-cover
      GeoTIFF path: its farmland (grassland, cropland) stays unlabelled
      (`prep.landcover`).
    year: the zone-year (`--year`), None: the folder's. An RPG of another
      edition, or a folder of another year, is refused (`check_edition_year`).
  Returns:
    The `labels` section written to meta.json: nomenclature, rpg_edition,
    rpg_edition_from, rpg_file, layer, parcels, parcels_ignored (ignored and
    unknown codes), unknown_codes (the policy), unknown_codes_ignored
    [{code, parcels, area_ha}], invalid_repaired, invalid_dropped,
    duplicates_dropped, drop_border, border_pixels_dropped, overlap_rule,
    margin, landcover {source, …}, background_pixels,
    class_pixel_counts {class name: pixels, background included},
    unlabelled_pixels.
  Raises:
    UserError (one line naming the file and the fix) on a bad input;
    UnknownCodeError (unknown_codes="error") listing each CODE_CULTU the
    nomenclature lacks for the edition, with its parcels and area.
  """
  from tqdm import tqdm
  paths = [rpg_path] if isinstance(rpg_path, (str, os.PathLike)) else list(rpg_path)
  paths = [pathlib.Path(p) for p in paths]
  _check_options(unknown_codes, margin)
  meta = zonefolder.check_folder(out_folder, zone)     # before the RPG is read
  nom = nomenclature_lib.load()
  with tqdm(total=3, desc=f"labels {zone.zone_id}", unit="step",
            disable=not progress) as bar:
    gdf, counts, near = zone_parcels(paths, zone, layer, margin=margin)
    edition, edition_from = rpg_edition(paths, meta, edition, year)
    check_edition_year(paths, edition, edition_from, year, out_folder, meta)
    found = _check_codes(gdf, nom, edition, paths, zone, unknown_codes)
    classes = _class_columns(gdf["CODE_CULTU"].tolist(), nom, edition)
    bar.update()

    geoms = gdf.geometry.to_numpy()
    parcels = rasterize_parcels(geoms, zone)
    border = np.zeros(zone.shape, bool)
    if drop_border:
      border = border_mask(geoms, zone) & (parcels > 0)
      parcels[border] = 0
    away = ~near_parcels(np.concatenate([geoms, near]), zone, margin)
    labels, cover = zone_labels(parcels, classes["class_id"], nom, away, landcover, zone)
    bar.update()

    pixels = np.bincount(labels.ravel(), minlength=256)
    info = dict(
        nomenclature=nom.version, rpg_edition=edition, rpg_edition_from=edition_from,
        rpg_file=", ".join(p.name for p in paths), layer=counts["layer"], parcels=len(gdf),
        parcels_ignored=int((classes["class_id"] == NO_LABEL).sum()),
        unknown_codes=unknown_codes, unknown_codes_ignored=found,
        invalid_repaired=counts["invalid_repaired"],
        invalid_dropped=counts["invalid_dropped"],
        duplicates_dropped=counts["duplicates_dropped"],
        drop_border=bool(drop_border), border_pixels_dropped=int(border.sum()),
        overlap_rule="smaller parcel wins", margin=int(margin), landcover=cover,
        background_pixels=int(pixels[nom.background_id]) if nom.background_id is not None else 0,
        class_pixel_counts={name: int(pixels[i]) for i, name in enumerate(nom.tier3)},
        unlabelled_pixels=int(pixels[NO_LABEL]))
    zonefolder.write_labels(out_folder, zone, labels, parcels,
                            parcel_table(gdf, classes, parcels), info, geometries=geoms)
    bar.update()
  return info


def _check_options(unknown_codes: str, margin) -> None:
  if unknown_codes not in UNKNOWN_CODES:
    raise UserError(f"unknown_codes={unknown_codes!r}: expected one of "
                    f"{', '.join(UNKNOWN_CODES)}")
  if not isinstance(margin, (int, np.integer)) or isinstance(margin, bool) or margin < 0:
    raise UserError(f"--margin {margin}: expected a whole number of pixels, 0 or more")


def _check_codes(gdf, nom, edition: int, paths, zone: Zone, unknown_codes: str) -> list:
  """[{code, parcels, area_ha}] of the zone's codes the nomenclature lacks for the
  edition, with a warning; UnknownCodeError when unknown_codes is "error"."""
  names = ", ".join(p.name for p in paths)
  unknown = nom.unknown_codes(gdf["CODE_CULTU"].tolist(), edition)
  found = unknown_code_counts(gdf, unknown)
  if unknown:
    err = nomenclature_lib.UnknownCodeError(
        unknown, nom.version, edition, {u["code"]: (u["parcels"], u["area_ha"]) for u in found},
        nom.other_editions(unknown))
    if unknown_codes == "error":
      err.args = (f"{names}: {err}",)
      raise err
    warnings.warn(f"{names}: zone {zone.zone_id}: {sum(u['parcels'] for u in found)} "
                  f"parcel(s) left unlabelled (--unknown-codes ignore), {err.listing}; "
                  f"recorded in meta.json")
  return found


def zone_labels(parcels: np.ndarray, class_id: np.ndarray, nom, away: np.ndarray,
                landcover, zone: Zone) -> tuple[np.ndarray, dict]:
  """uint8 [H, W] tier-3 labels and the land-cover record of meta.json.

  Args:
    parcels: uint32 [H, W] parcel raster; class_id: int [N] class of parcel i + 1
      (NO_LABEL for `ignore` and unknown codes).
    away: bool [H, W], True beyond the margin of every parcel (`near_parcels`).
    landcover: None, "worldcover" or a GeoTIFF path (`prep.landcover.read`).
  Returns:
    labels: the parcel's class, else the nomenclature's background class where
    `away` and the land cover (if any) is neither farmland nor unknown, else
    NO_LABEL; record: {source: "none"}, or the land cover's with
    undeclared_farmland_pixels and no_data_pixels (pixels `away` it keeps
    unlabelled).
  """
  lut = np.concatenate([[NO_LABEL], class_id]).astype(np.uint8)
  labels = lut[parcels]
  record = dict(source="none")
  if landcover is not None:
    from prep import landcover as landcover_lib
    cover, record = landcover_lib.read(landcover, zone)
    record.update(undeclared_farmland_pixels=int((away & np.isin(
                      cover, landcover_lib.FARMLAND)).sum()),
                  no_data_pixels=int((away & (cover == landcover_lib.NO_DATA)).sum()))
    away = away & ~landcover_lib.farmland_or_unknown(cover)
  if nom.background_id is not None:
    labels[away] = nom.background_id
  return labels, record
