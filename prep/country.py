"""The zones of a whole country: the 10 km grid over the RPG, kept where parcels are.

`python -m prep zones --country --rpg RPG.gpkg --out zones_fr.csv` writes a zones
table with the same contract as the 40 study zones (`cropcontracts.zone.Zone`
rows, `prep.zones.write_zones`), so every later stage consumes it unchanged.

Grid. Each UTM zone (30, 31, 32 N over metropolitan France) has its own grid of
squares of `pixels` x 10 m whose corners are multiples of the square's side in
that zone's coordinates (so on the 10 m Sentinel-2 grid). A parcel belongs to the
UTM zone of its band: the band (plain 6-degree bands) of a point on its surface
(`shapely.point_on_surface`, in longitude). A square of grid z holds the area of
z's parcels only, and is kept when that area is above `min_fraction` of it. So
every parcel lies inside the kept squares of its own grid, also next to 0 and 6
degrees East, where the grids of two zones are rotated against each other
(meridian convergence) and a rule on the squares alone (e.g. "its centre in the
band") would leave slivers whose parcels are in no zone. The price is overlap:
squares of both grids along the meridian (the mosaic keeps the zone whose centre
is nearest, `jaxcrop.maps.national`). The command reports the parcel area in the
RPG (`parcel_ha`, Lambert-93 m²) and inside the kept squares (`zone_parcel_ha`,
UTM m², whose scale differs by up to ~1e-3): equal up to that scale, when
`min_fraction` drops nothing.

Coverage. Agricultural coverage is the RPG parcels' area inside each square,
computed exactly from the RPG itself, without Earth Engine: the file is read by
bounding-box chunks of `chunk_km` (a parcel belongs to the chunk holding its
first vertex, so none is counted twice), each chunk's parcels are projected to
the UTM zone of its band (shapely 2 / pyproj, vectorized), a parcel inside
one square adds its area to it, and the few that
cross square edges are cut by the squares (`shapely.intersection` over the
(parcel, square) pairs). `cropland_fraction` of a row is that area over the
square's area; squares whose fraction is above `min_fraction` are kept.

Ids: `utm<zone>_<x km>_<y km>` of the upper-left corner (e.g. `utm31_0390_5360`;
in metres for squares that are not a whole number of km),
region `UTM <zone>N`, town `France`, index the row's rank in its UTM zone, source
`rpg-country`.
"""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Iterator, Sequence

import numpy as np

from cropcontracts.errors import UserError
from cropcontracts.zone import RES, ZONE_PIXELS, Zone

RPG_CRS = "EPSG:2154"
SOURCE = "rpg-country"
FRANCE_UTM = (30, 31, 32)


@dataclasses.dataclass
class Coverage:
  """Parcel area (m²) per square of each UTM grid: {(zone, col, row): m²}."""
  area: dict = dataclasses.field(default_factory=dict)
  parcels: int = 0
  parcel_m2: float = 0.0

  def add(self, utm: int, cols: np.ndarray, rows: np.ndarray, m2: np.ndarray) -> None:
    """Accumulates m2 [N] on the squares (cols, rows) [N] of grid `utm`."""
    if not len(m2):
      return
    keys, inv = np.unique(np.stack([cols, rows], 1), axis=0, return_inverse=True)
    sums = np.bincount(inv.ravel(), weights=m2, minlength=len(keys))
    for (c, r), s in zip(keys.tolist(), sums.tolist()):
      self.area[(utm, c, r)] = self.area.get((utm, c, r), 0.0) + s


def utm_band(lon: np.ndarray) -> np.ndarray:
  """int [N] UTM zone number of each longitude (plain 6-degree bands)."""
  return np.floor((np.asarray(lon) + 180.0) / 6.0).astype(int) + 1


def chunks(bounds, chunk_m: float) -> Iterator[tuple[float, float, float, float]]:
  """(xmin, ymin, xmax, ymax) chunks of `chunk_m` covering bounds, row-major."""
  x0, y0, x1, y1 = bounds
  for y in np.arange(y0, y1 + 1e-9, chunk_m):
    for x in np.arange(x0, x1 + 1e-9, chunk_m):
      yield float(x), float(y), float(x + chunk_m), float(y + chunk_m)


def first_vertex(geoms: np.ndarray) -> np.ndarray:
  """float [N, 2]: each geometry's first vertex (NaN for an empty one).

  The chunk a parcel belongs to: the vertex lies on the geometry, so the chunk's
  bbox read (OGR tests the geometry, not only its box) returns the parcel.
  """
  import shapely
  coords, index = shapely.get_coordinates(geoms, return_index=True)
  out = np.full((len(geoms), 2), np.nan)
  first, at = np.unique(index, return_index=True)
  out[first] = coords[at]
  return out


def _to_utm(geoms: np.ndarray, utm: int) -> np.ndarray:
  import pyproj
  import shapely
  t = pyproj.Transformer.from_crs(RPG_CRS, f"EPSG:{32600 + utm}", always_xy=True)
  return shapely.transform(geoms, lambda xy: np.stack(t.transform(xy[:, 0], xy[:, 1]), 1))


def parcel_utm(geoms: np.ndarray, utms: Sequence[int] = FRANCE_UTM) -> np.ndarray:
  """int [N]: the UTM zone of each parcel (EPSG:2154 polygons): the band of a point
  on its surface, clipped to `utms` (a parcel west of the first band belongs to it)."""
  import pyproj
  import shapely
  pts = shapely.get_coordinates(shapely.point_on_surface(geoms))
  lon, _ = pyproj.Transformer.from_crs(RPG_CRS, "EPSG:4326", always_xy=True).transform(
      pts[:, 0], pts[:, 1])
  return np.clip(utm_band(lon), min(utms), max(utms))


def add_parcels(cov: Coverage, geoms: np.ndarray, side: float,
                utms: Sequence[int] = FRANCE_UTM) -> None:
  """Adds the area of parcels geoms [N] (EPSG:2154 polygons) to the squares of
  side `side` metres of their own UTM grid (`parcel_utm`) that they meet."""
  import shapely
  geoms = geoms[~shapely.is_empty(geoms) & ~shapely.is_missing(geoms)]
  if not len(geoms):
    return
  cov.parcels += len(geoms)
  cov.parcel_m2 += float(shapely.area(geoms).sum())      # Lambert-93 m²
  band = parcel_utm(geoms, utms)
  for utm in utms:
    near = band == utm
    if not near.any():
      continue
    g = _to_utm(geoms[near], utm)
    gb = shapely.bounds(g)
    c0 = np.floor(gb[:, 0] / side).astype(np.int64)
    c1 = np.floor(gb[:, 2] / side).astype(np.int64)
    r0 = np.floor(gb[:, 1] / side).astype(np.int64)   # rows count northwards
    r1 = np.floor(gb[:, 3] / side).astype(np.int64)
    inside = (c0 == c1) & (r0 == r1)
    cov.add(utm, c0[inside], r0[inside], shapely.area(g[inside]))
    # parcels crossing square edges: one (parcel, square) pair per square met
    idx = np.flatnonzero(~inside)
    if not len(idx):
      continue
    nc, nr = c1[idx] - c0[idx] + 1, r1[idx] - r0[idx] + 1
    rep = np.repeat(np.arange(len(idx)), nc * nr)
    k = np.arange(len(rep)) - np.repeat(np.cumsum(nc * nr) - nc * nr, nc * nr)
    cols = c0[idx][rep] + k % nc[rep]
    rows = r0[idx][rep] + k // nc[rep]
    boxes = shapely.box(cols * side, rows * side, (cols + 1) * side, (rows + 1) * side)
    m2 = shapely.area(shapely.intersection(g[idx][rep], boxes))
    cov.add(utm, cols, rows, m2)


def _zone_id(utm: int, x0: float, y0: float, side: float) -> str:
  """`utm31_0390_5360`: the upper-left corner in km (in m for squares not of whole km)."""
  if side % 1000 == 0:
    return f"utm{utm}_{int(x0 // 1000):04d}_{int(y0 // 1000):04d}"
  return f"utm{utm}_{int(x0):07d}_{int(y0):07d}"


def square_zones(cov: Coverage, side: float, pixels: int, *,
                 min_fraction: float = 0.0) -> tuple[list[Zone], float]:
  """The kept squares as Zone rows, and the parcel area (m²) inside them.

  A square of grid z is kept when the area of z's parcels in it over its area is
  above `min_fraction` (its centre may lie in the next band: module docstring).
  """
  import pyproj
  keys = sorted(cov.area)
  if not keys:
    return [], 0.0
  zones, kept_m2 = [], 0.0
  for utm in sorted({k[0] for k in keys}):
    mine = [k for k in keys if k[0] == utm]
    cols = np.array([k[1] for k in mine]); rows = np.array([k[2] for k in mine])
    to_wgs = pyproj.Transformer.from_crs(f"EPSG:{32600 + utm}", "EPSG:4326",
                                         always_xy=True)
    lon, lat = to_wgs.transform((cols + 0.5) * side, (rows + 0.5) * side)
    frac = np.array([cov.area[k] for k in mine]) / side**2
    keep = frac > min_fraction
    order = np.lexsort((cols, -rows))                  # north to south, west to east
    index = 0
    for i in order[keep[order]]:
      x0, y0 = float(cols[i] * side), float((rows[i] + 1) * side)
      zones.append(Zone(
          zone_id=_zone_id(utm, x0, y0, side),
          region=f"UTM {utm}N", town="France", index=index, epsg=32600 + utm,
          x0=x0, y0=y0, width=pixels, height=pixels, res=RES,
          center_lon=round(float(lon[i]), 6), center_lat=round(float(lat[i]), 6),
          cropland_fraction=round(float(frac[i]), 6), source=SOURCE))
      kept_m2 += cov.area[mine[i]]
      index += 1
  return zones, kept_m2


def country_zones(rpg_paths: Sequence, *, layer: str | None = None,
                  pixels: int = ZONE_PIXELS, min_fraction: float = 0.0,
                  chunk_km: float = 50.0, progress: bool = True) -> tuple[list[Zone], dict]:
  """The zones of the squares holding parcels of the RPG file(s).

  Returns:
    (zones, summary): summary holds zones, per_utm_zone, parcels, parcel_ha and
    zone_parcel_ha (the parcel area inside the kept squares).
  """
  import pyogrio
  from tqdm import tqdm
  from prep.labels import _check_crs, find_layer, repair_geometries
  if pixels < 1 or pixels * RES % 1:
    raise UserError(f"--pixels {pixels} must be a positive number of 10 m pixels")
  side = pixels * RES
  cov = Coverage()
  for path in map(pathlib.Path, rpg_paths):
    if not path.exists():
      raise UserError(f"{path}: RPG file not found; pass the RPG PARCELLES_GRAPHIQUES file")
    lyr = find_layer(path, layer)
    info = pyogrio.read_info(path, layer=lyr, force_total_bounds=True)
    _check_crs(path, info.get("crs"))
    if not info.get("features"):
      continue
    xmin, ymin, xmax, ymax = info["total_bounds"]
    boxes = list(chunks((xmin, ymin, xmax, ymax), chunk_km * 1000.0))
    for bx in tqdm(boxes, desc=f"{path.name} coverage", unit="chunk", disable=not progress):
      df = pyogrio.read_dataframe(path, layer=lyr, columns=[], bbox=bx)
      if not len(df):
        continue
      g = np.asarray(df.geometry.values, dtype=object)
      xy = first_vertex(g)
      mine = ((xy[:, 0] >= bx[0]) & (xy[:, 0] < bx[2]) &
              (xy[:, 1] >= bx[1]) & (xy[:, 1] < bx[3]))
      fixed, keep, _ = repair_geometries(g[mine])     # as prep labels does
      add_parcels(cov, fixed[keep], side)
  zones, inside = square_zones(cov, side, pixels, min_fraction=min_fraction)
  per_utm = {}
  for z in zones:
    per_utm[z.region] = per_utm.get(z.region, 0) + 1
  summary = dict(zones=len(zones), per_utm_zone=per_utm, parcels=cov.parcels,
                 parcel_ha=round(cov.parcel_m2 / 1e4, 2),
                 zone_parcel_ha=round(inside / 1e4, 2))
  return zones, summary

