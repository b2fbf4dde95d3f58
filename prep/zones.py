"""Zones: the 10 km x 10 km squares of the study, on the Sentinel-2 10 m grid.

A zone is the unit of every stage: prep writes one folder per zone, the TFDS
builder splits by zone, predict maps one zone at a time. A zone's grid lives in
the native UTM zone of its centre (EPSG 326xx), with pixel edges on multiples of
10 m, which is the grid of every Sentinel-2 L2A 10 m band (tile origins such as
x=399960 are multiples of 10), so imagery needs no resampling on that axis.

The 40 study zones are data (`prep/data/zones.csv`), committed so that nobody
needs Earth Engine to know them; `python -m prep zones --select` re-derives them
from ESA WorldCover through Earth Engine (`prep.select_zones`).
"""
from __future__ import annotations

import csv
import math
import pathlib
import re
from typing import Iterable, Sequence

from cropcontracts.errors import UserError
from cropcontracts.zone import COLUMNS, RES, ZONE_PIXELS, Zone, snap, utm_epsg  # noqa: F401

DATA_DIR = pathlib.Path(__file__).resolve().parent / "data"
ZONES_CSV = DATA_DIR / "zones.csv"

# The study's 8 regions, each with its reference town (lon, lat in WGS84).
REGIONS = (
    ("Nord-Picardie", "Saint-Quentin", "stquentin", 3.2876, 49.8465),
    ("Paris Basin", "Chartres", "chartres", 1.4890, 48.4439),
    ("Brittany", "Vitré", "vitre", -1.2115, 48.1236),
    ("Southwest", "Auch", "auch", 0.5857, 43.6465),
    ("Southeast", "Carpentras", "carpentras", 5.0480, 44.0556),
    ("Massif Central", "Riom", "riom", 3.1132, 45.8936),
    ("Alsace", "Colmar", "colmar", 7.3585, 48.0794),
    ("Mediterranean", "Béziers", "beziers", 3.2150, 43.3442),
)

def zone_around(zone_id: str, region: str, town: str, index: int,
                lon: float, lat: float, *, pixels: int = ZONE_PIXELS,
                res: float = RES, epsg: int | None = None,
                cropland_fraction: float = math.nan, source: str = "") -> Zone:
  """A zone of `pixels` x `pixels` centred (to the nearest pixel edge) on lon/lat."""
  import pyproj
  epsg = epsg or utm_epsg(lon, lat)
  to_utm = pyproj.Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True)
  x, y = to_utm.transform(lon, lat)
  half = pixels * res / 2
  return Zone(zone_id=zone_id, region=region, town=town, index=index,
              epsg=epsg, x0=snap(x - half, res), y0=snap(y + half, res),
              width=pixels, height=pixels, res=res, center_lon=lon,
              center_lat=lat, cropland_fraction=cropland_fraction,
              source=source)


def read_zones(path: str | pathlib.Path = ZONES_CSV) -> list[Zone]:
  """Reads a zones table (CSV with the columns of `Zone`).

  Every mistake is one UserError naming the table: a missing column (also what
  a `;`-separated table looks like), a value that is not a number, a size that
  is not positive, a zone id that is not a plain name (a folder is made of it
  under --out: `/` or `..` would write elsewhere), a duplicate id.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise UserError(f"{path}: zones table not found")
  with path.open(newline="", encoding="utf-8") as f:
    reader = csv.DictReader(f)
    rows = list(reader)
    header = reader.fieldnames or []
    missing = [c for c in _REQUIRED if c not in header]
    if rows and missing:
      what = ("is ;-separated; write it with commas" if len(header) == 1 and ";" in header[0]
              else f"lacks column(s) {', '.join(missing)}")
      raise UserError(f"{path}: zones table {what} (expected a CSV with columns "
                      f"{', '.join(COLUMNS)})")
    zones = [_zone_of_row(path, line, r) for line, r in enumerate(rows, 2)]
  ids = [z.zone_id for z in zones]
  dup = sorted({i for i in ids if ids.count(i) > 1})
  if dup:
    raise UserError(f"{path}: duplicate zone ids {dup}")
  return zones


_REQUIRED = COLUMNS[:10]
# A zone id names a folder: letters, digits, `_`, `-`, `.`, not starting with `.`.
_PLAIN_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


def _zone_of_row(path: pathlib.Path, line: int, row: dict) -> Zone:
  """The Zone of one row of table `path` (at `line`), checked."""
  where = f"{path}: line {line}"
  try:
    zone = Zone.from_row(row)
  except UserError as e:
    raise UserError(f"{where}: {e}") from None
  if not _PLAIN_ID.fullmatch(zone.zone_id):
    raise UserError(f"{where}: zone id {zone.zone_id!r} is not a plain name (letters, "
                    f"digits, _ - . and no leading dot); it names the zone's folder")
  bad = [f"{k}={getattr(zone, k)}" for k in ("width", "height", "res")
         if not getattr(zone, k) > 0]
  if bad:
    raise UserError(f"{where}: zone {zone.zone_id}: {', '.join(bad)} must be positive")
  return zone


def write_zones(zones: Iterable[Zone], path: str | pathlib.Path) -> None:
  """Writes a zones table atomically."""
  from cropcontracts.atomic import atomic_path
  with atomic_path(path) as tmp:
    with open(tmp, "w", newline="", encoding="utf-8") as f:
      w = csv.DictWriter(f, fieldnames=COLUMNS)
      w.writeheader()
      for z in zones:
        w.writerow(z.to_row())


def select(zones: Sequence[Zone], ids: Sequence[str] | None) -> list[Zone]:
  """The zones named in `ids` (all when None); unknown ids are an error."""
  if not ids:
    return list(zones)
  by_id = {z.zone_id: z for z in zones}
  unknown = [i for i in ids if i not in by_id]
  if unknown:
    raise UserError(f"unknown zone id(s) {unknown}; known: "
                    f"{', '.join(sorted(by_id)[:12])}…")
  return [by_id[i] for i in ids]
