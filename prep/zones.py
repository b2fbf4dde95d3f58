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
import dataclasses
import math
import pathlib
import re
from typing import Iterable, Sequence

import affine

from prep.errors import PrepError

DATA_DIR = pathlib.Path(__file__).resolve().parent / "data"
ZONES_CSV = DATA_DIR / "zones.csv"
RES = 10.0  # metres, Sentinel-2 B2/B3/B4/B8
ZONE_PIXELS = 1000  # 10 km / 10 m

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

_COLUMNS = ("zone_id", "region", "town", "index", "epsg", "x0", "y0", "width",
            "height", "res", "center_lon", "center_lat", "cropland_fraction",
            "source")


@dataclasses.dataclass(frozen=True)
class Zone:
  """One square of the study grid.

  Attributes:
    zone_id: unique id, `<town slug>_<index>`, e.g. `chartres_2`.
    region: the study region, e.g. `Paris Basin`.
    town: reference town of the region.
    index: 0-based zone index within the region (the test split picks one).
    epsg: UTM EPSG code of the zone's grid (326xx).
    x0, y0: upper-left corner of the grid in that CRS (metres, multiples of res).
    width, height: grid size in pixels (W, H).
    res: pixel size in metres.
    center_lon, center_lat: centre in WGS84, for people and for Earth Engine.
    cropland_fraction: ESA WorldCover cropland share when selected (nan if unknown).
    source: how the zone was chosen (e.g. `worldcover-v200`, `fallback-cross`, `demo`).
  """
  zone_id: str
  region: str
  town: str
  index: int
  epsg: int
  x0: float
  y0: float
  width: int = ZONE_PIXELS
  height: int = ZONE_PIXELS
  res: float = RES
  center_lon: float = math.nan
  center_lat: float = math.nan
  cropland_fraction: float = math.nan
  source: str = ""

  @property
  def crs(self) -> str:
    return f"EPSG:{self.epsg}"

  @property
  def transform(self) -> affine.Affine:
    """Pixel -> CRS affine transform (north-up)."""
    return affine.Affine(self.res, 0.0, self.x0, 0.0, -self.res, self.y0)

  @property
  def bounds(self) -> tuple[float, float, float, float]:
    """(left, bottom, right, top) in the zone's CRS."""
    return (self.x0, self.y0 - self.height * self.res,
            self.x0 + self.width * self.res, self.y0)

  @property
  def shape(self) -> tuple[int, int]:
    return (self.height, self.width)

  def bounds_in(self, crs: str, densify: int = 21) -> tuple[float, float, float, float]:
    """The zone's bounds in another CRS (densified edges, so the box contains it)."""
    import rasterio.warp
    return rasterio.warp.transform_bounds(self.crs, crs, *self.bounds,
                                          densify_pts=densify)

  def to_row(self) -> dict:
    return {k: getattr(self, k) for k in _COLUMNS}

  @classmethod
  def from_row(cls, row: dict) -> "Zone":
    try:
      return cls(
          zone_id=row["zone_id"], region=row["region"], town=row["town"],
          index=int(row["index"]), epsg=int(row["epsg"]),
          x0=float(row["x0"]), y0=float(row["y0"]),
          width=int(row["width"]), height=int(row["height"]),
          res=float(row["res"]),
          center_lon=float(row.get("center_lon") or "nan"),
          center_lat=float(row.get("center_lat") or "nan"),
          cropland_fraction=float(row.get("cropland_fraction") or "nan"),
          source=row.get("source", ""))
    except KeyError as e:
      raise PrepError(f"zone {row.get('zone_id')!r}: no {e} value; expected columns "
                      f"{', '.join(_COLUMNS)}") from None
    except (TypeError, ValueError) as e:
      raise PrepError(f"zone {row.get('zone_id')!r}: {e}") from None


def utm_epsg(lon: float, lat: float) -> int:
  """EPSG code of the WGS84/UTM zone containing (lon, lat).

  Plain 6-degree zones: the Norway/Svalbard exceptions do not touch France.
  """
  if not (-180.0 <= lon <= 180.0 and -80.0 <= lat <= 84.0):
    raise PrepError(f"({lon}, {lat}) is outside the UTM domain")
  number = min(int((lon + 180.0) // 6.0) + 1, 60)
  return (32600 if lat >= 0 else 32700) + number


def snap(value: float, res: float = RES) -> float:
  """Nearest multiple of `res`: a pixel edge of the Sentinel-2 grid."""
  return float(round(value / res) * res)


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

  Every mistake is one PrepError naming the table: a missing column (also what
  a `;`-separated table looks like), a value that is not a number, a size that
  is not positive, a zone id that is not a plain name (a folder is made of it
  under --out: `/` or `..` would write elsewhere), a duplicate id.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise PrepError(f"{path}: zones table not found")
  with path.open(newline="", encoding="utf-8") as f:
    reader = csv.DictReader(f)
    rows = list(reader)
    header = reader.fieldnames or []
    missing = [c for c in _REQUIRED if c not in header]
    if rows and missing:
      what = ("is ;-separated; write it with commas" if len(header) == 1 and ";" in header[0]
              else f"lacks column(s) {', '.join(missing)}")
      raise PrepError(f"{path}: zones table {what} (expected a CSV with columns "
                      f"{', '.join(_COLUMNS)})")
    zones = [_zone_of_row(path, line, r) for line, r in enumerate(rows, 2)]
  ids = [z.zone_id for z in zones]
  dup = sorted({i for i in ids if ids.count(i) > 1})
  if dup:
    raise PrepError(f"{path}: duplicate zone ids {dup}")
  return zones


_REQUIRED = _COLUMNS[:10]
# A zone id names a folder: letters, digits, `_`, `-`, `.`, not starting with `.`.
_PLAIN_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


def _zone_of_row(path: pathlib.Path, line: int, row: dict) -> Zone:
  """The Zone of one row of table `path` (at `line`), checked."""
  where = f"{path}: line {line}"
  try:
    zone = Zone.from_row(row)
  except PrepError as e:
    raise PrepError(f"{where}: {e}") from None
  if not _PLAIN_ID.fullmatch(zone.zone_id):
    raise PrepError(f"{where}: zone id {zone.zone_id!r} is not a plain name (letters, "
                    f"digits, _ - . and no leading dot); it names the zone's folder")
  bad = [f"{k}={getattr(zone, k)}" for k in ("width", "height", "res")
         if not getattr(zone, k) > 0]
  if bad:
    raise PrepError(f"{where}: zone {zone.zone_id}: {', '.join(bad)} must be positive")
  return zone


def write_zones(zones: Iterable[Zone], path: str | pathlib.Path) -> None:
  """Writes a zones table atomically."""
  from prep.atomic import atomic_path
  with atomic_path(path) as tmp:
    with open(tmp, "w", newline="", encoding="utf-8") as f:
      w = csv.DictWriter(f, fieldnames=_COLUMNS)
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
    raise PrepError(f"unknown zone id(s) {unknown}; known: "
                    f"{', '.join(sorted(by_id)[:12])}…")
  return [by_id[i] for i in ids]
