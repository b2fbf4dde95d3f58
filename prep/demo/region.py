"""The demo region's layout: its size, its zones and the scene grid (pixels are 10 m).

The area lies in the Beauce near Chartres, on the UTM 31N grid (EPSG:32631) of
MGRS tile 31UCP. Zones of a region sit in rows of two; regions are stacked north
to south; one scene footprint covers them all with a margin.
"""
from __future__ import annotations

import dataclasses
import datetime
import functools
import math

from cropcontracts.zone import Zone

EPSG = 32631          # UTM 31N: the grid of the scenes and of the zones
TILE = "31UCP"        # the MGRS tile of the area
SCENE_X0, SCENE_Y0 = 390_000.0, 5_350_020.0  # scene upper-left, multiples of 60 m


@dataclasses.dataclass(frozen=True)
class DemoSpec:
  """Size of a demo region (pixels are 10 m).

  Zones of a region sit in rows of two, `gap` pixels apart; regions are stacked
  north to south, `region_gap` apart; the scene covers them with `margin`.
  """
  regions: tuple[str, ...] = ("demo-north", "demo-south")
  zones_per_region: int = 5
  zone_pixels: int = 256
  gap: int = 10
  margin: int = 15
  region_gap: int = 30
  scene_step_days: int = 5
  year: int = 2023

  @property
  def rows(self) -> int:
    return math.ceil(self.zones_per_region / 2)

  @property
  def region_height(self) -> int:
    return self.rows * self.zone_pixels + (self.rows - 1) * self.gap

  @property
  def scene_shape(self) -> tuple[int, int]:
    """(H, W) of the scenes at 10 m, both even so that SCL is exactly 20 m."""
    n = len(self.regions)
    h = 2 * self.margin + n * self.region_height + (n - 1) * self.region_gap
    w = 2 * self.margin + 2 * self.zone_pixels + self.gap
    return h + h % 2, w + w % 2

  @property
  def scene_dates(self) -> list[datetime.date]:
    start = datetime.date(self.year, 1, 3)
    end = datetime.date(self.year, 12, 31)
    n = (end - start).days // self.scene_step_days + 1
    return [start + datetime.timedelta(days=self.scene_step_days * i)
            for i in range(n)]


FULL = DemoSpec()
SMALL = DemoSpec(zones_per_region=2, zone_pixels=48, scene_step_days=15)


def demo_zones(spec: DemoSpec = FULL) -> list[Zone]:
  """The demo zones: `zones_per_region` per region, indices 0.. in each."""
  import pyproj
  to_wgs = pyproj.Transformer.from_crs(EPSG, 4326, always_xy=True)
  zp, res = spec.zone_pixels, 10.0
  zones = []
  for r, region in enumerate(spec.regions):
    top = spec.margin + r * (spec.region_height + spec.region_gap)
    for k in range(spec.zones_per_region):
      row, col = divmod(k, 2)
      x0 = SCENE_X0 + (spec.margin + col * (zp + spec.gap)) * res
      y0 = SCENE_Y0 - (top + row * (zp + spec.gap)) * res
      lon, lat = to_wgs.transform(x0 + zp * res / 2, y0 - zp * res / 2)
      zones.append(Zone(zone_id=f"{region}_{k}", region=region, town="Chartres",
                        index=k, epsg=EPSG, x0=x0, y0=y0, width=zp, height=zp,
                        res=res, center_lon=round(lon, 6), center_lat=round(lat, 6),
                        source="demo"))
  return zones


def scene_transform(spec: DemoSpec = FULL, res: float = 10.0):
  import affine
  return affine.Affine(res, 0.0, SCENE_X0, 0.0, -res, SCENE_Y0)



def zone_window(spec: DemoSpec, zone: Zone):
  """Row/column slices of a zone in the scene grid."""
  r0 = int(round((SCENE_Y0 - zone.y0) / 10.0))
  c0 = int(round((zone.x0 - SCENE_X0) / 10.0))
  return slice(r0, r0 + zone.height), slice(c0, c0 + zone.width)


# --- the tiles that deliver each acquisition ----------------------------------
# Real L2A products come per MGRS tile; neighbouring tiles overlap (~10 km) and
# deliver the same acquisition, and near a UTM zone edge a tile of the
# neighbouring zone covers the area too. The demo's scene area is delivered by
# three tiles (docs/demo.md):
#   31UCQ  EPSG:32631, the northern rows down to the middle of the southern
#          region's first zone row, west strip excluded
#   31UCP  EPSG:32631, the southern rows from the middle of the northern
#          region's last zone row: both tiles cover the rows in between
#   30UYU  EPSG:32630 (the neighbouring UTM zone), on its own 10 m grid, over
#          the western strip: the first quarter of the western zones' columns
#          lie in no 31U tile, so only this tile, reprojected, sees them.
# (Over Chartres no real UTM-30 tile reaches; the demo puts one there on
# purpose, as the Auch zones have. The tile names are illustrative.)
NEIGHBOUR_EPSG = 32630
TILE_NORTH, TILE_SOUTH, TILE_WEST = "31UCQ", TILE, "30UYU"


@dataclasses.dataclass(frozen=True)
class Tile:
  """One MGRS tile of the demo: its CRS and its grid.

  Attributes:
    name: MGRS tile id.
    epsg: its UTM CRS.
    x0, y0: upper-left corner (multiples of 60 m, as real tiles), 10 m pixels.
    height, width: 10 m pixels (even, so that SCL is exactly 20 m).
    rows, cols: for tiles of the scene's CRS, their window of the scene grid.
  """
  name: str
  epsg: int
  x0: float
  y0: float
  height: int
  width: int
  rows: tuple[int, int] | None = None
  cols: tuple[int, int] | None = None

  def transform(self, res: float = 10.0):
    import affine
    return affine.Affine(res, 0.0, self.x0, 0.0, -res, self.y0)


def west_strip(spec: DemoSpec) -> int:
  """Scene columns [0, west_strip) lie in no UTM-31 tile (a quarter of a zone)."""
  return spec.margin + spec.zone_pixels // 4


@functools.lru_cache(maxsize=4)
def demo_tiles(spec: DemoSpec = FULL) -> tuple[Tile, ...]:
  """The three tiles of the scene area (module comment above), north first."""
  import pyproj
  h, w = spec.scene_shape
  zp = spec.zone_pixels
  last_north = spec.margin + (spec.rows - 1) * (zp + spec.gap)
  first_south = spec.margin + spec.region_height + spec.region_gap
  r_south = (last_north + zp // 2) // 6 * 6        # multiples of 60 m
  r_north = -(-(first_south + zp // 2) // 6) * 6
  c_w = west_strip(spec) // 6 * 6 + 6 if west_strip(spec) % 6 else west_strip(spec)
  tiles = []
  for name, rows in ((TILE_NORTH, (0, r_north)), (TILE_SOUTH, (r_south, h))):
    tiles.append(Tile(name, EPSG, SCENE_X0 + c_w * 10.0, SCENE_Y0 - rows[0] * 10.0,
                      rows[1] - rows[0], w - c_w, rows, (c_w, w)))
  # The UTM-30 tile: its own grid around the scene's columns [0, west_strip + zp / 4).
  east = west_strip(spec) + zp // 4
  xs = [SCENE_X0, SCENE_X0 + east * 10.0] * 2
  ys = [SCENE_Y0, SCENE_Y0, SCENE_Y0 - h * 10.0, SCENE_Y0 - h * 10.0]
  x30, y30 = pyproj.Transformer.from_crs(EPSG, NEIGHBOUR_EPSG, always_xy=True).transform(xs, ys)
  left, top = math.floor(min(x30) / 60) * 60, math.ceil(max(y30) / 60) * 60
  right, bottom = math.ceil(max(x30) / 60) * 60, math.floor(min(y30) / 60) * 60
  tiles.append(Tile(TILE_WEST, NEIGHBOUR_EPSG, float(left), float(top),
                    int(round((top - bottom) / 10)), int(round((right - left) / 10))))
  return tuple(tiles)
