"""Zones: the squares of the study, on the Sentinel-2 10 m grid.

A zone is the unit of every stage: prep writes one folder per zone, the TFDS
builder splits by zone, predict maps one zone at a time. A zone's grid lives in
the native UTM zone of its centre (EPSG 326xx), with pixel edges on multiples of
10 m, which is the grid of every Sentinel-2 L2A 10 m band (tile origins such as
x=399960 are multiples of 10), so imagery needs no resampling on that axis.
"""
from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

from cropcontracts.errors import UserError

if TYPE_CHECKING:
  import affine

RES = 10.0  # metres, Sentinel-2 B2/B3/B4/B8
ZONE_PIXELS = 1000  # 10 km / 10 m

COLUMNS = ("zone_id", "region", "town", "index", "epsg", "x0", "y0", "width",
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
    """Pixel -> CRS affine transform (north-up). affine (rasterio's) is imported here, as
    zonefolder imports rasterio: a zone's record needs neither (the JAX-only benchmarks)."""
    import affine  # pylint: disable=g-import-not-at-top,redefined-outer-name
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
    return {k: getattr(self, k) for k in COLUMNS}

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
      raise UserError(f"zone {row.get('zone_id')!r}: no {e} value; expected columns "
                      f"{', '.join(COLUMNS)}") from None
    except (TypeError, ValueError) as e:
      raise UserError(f"zone {row.get('zone_id')!r}: {e}") from None


def utm_epsg(lon: float, lat: float) -> int:
  """EPSG code of the WGS84/UTM zone containing (lon, lat).

  Plain 6-degree zones: the Norway/Svalbard exceptions do not touch France.
  """
  if not (-180.0 <= lon <= 180.0 and -80.0 <= lat <= 84.0):
    raise UserError(f"({lon}, {lat}) is outside the UTM domain")
  number = min(int((lon + 180.0) // 6.0) + 1, 60)
  return (32600 if lat >= 0 else 32700) + number


def snap(value: float, res: float = RES) -> float:
  """Nearest multiple of `res`: a pixel edge of the Sentinel-2 grid."""
  return float(round(value / res) * res)


