"""Zones: the 10 km x 10 km squares of the study, on the Sentinel-2 10 m grid.

A zone is the unit of every stage: prep writes one folder per zone, the TFDS
builder splits by zone, predict maps one zone at a time. A zone's grid lives in
the native UTM zone of its centre (EPSG 326xx), with pixel edges on multiples of
10 m, which is the grid of every Sentinel-2 L2A 10 m band (tile origins such as
x=399960 are multiples of 10), so imagery needs no resampling on that axis.

The 40 study zones are data (`prep/data/zones.csv`), committed so that nobody
needs Earth Engine to know them; `python -m prep zones --select` re-derives them
from ESA WorldCover through Earth Engine (`prep.select_zones`). A zones table is
read and written by `cropcontracts.zonetable` (predict reads it too).
"""
from __future__ import annotations

import math
import pathlib
from typing import Sequence

from cropcontracts import zonetable
from cropcontracts.errors import UserError
from cropcontracts.zone import COLUMNS, RES, ZONE_PIXELS, Zone, snap, utm_epsg  # noqa: F401
from cropcontracts.zonetable import write_zones  # noqa: F401  (prep's writers call it here)

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
  """The zones of a zones table (`cropcontracts.zonetable.read_zones`, its one
  reader), by default the study's 40 zones."""
  return zonetable.read_zones(path)


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
