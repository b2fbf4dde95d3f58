"""Selection of the study zones from ESA WorldCover v200 (through Earth Engine).

The study picked, around each region's reference town, five 10 km x 10 km
squares that are highly cultivated according to ESA WorldCover (10 m, class 40
= cropland). We make that reproducible:

1. Earth Engine computes the cropland fraction of WorldCover on a coarse grid
   of `step_m` cells (default 1 km) in the town's UTM zone, covering every
   candidate square within `radius_km` of the town: `Map.eq(40)` averaged by
   `reduceResolution(mean)` onto the requested grid. One small `computePixels`
   request per region (about 70 x 70 floats), instead of one reduction per
   candidate square.
2. Locally, the fraction of every square of `square_m` aligned to that grid is
   the mean of its k x k cells (k = square_m / step_m), from a summed-area table.
3. Greedy choice: the square with the highest fraction whose centre lies within
   the radius, then the next highest that keeps at least `gap_m` (default
   1 km) from every square already chosen, until `n_per_region` (ties: nearer
   the town first). Squares never touch, so no parcel lies in two zones, which
   may belong to different splits.
4. The test zone (index 0, see the builder's splits) is drawn among the
   region's chosen squares with `draw_test_rank(slug, n, seed)`: a uniform draw
   seeded by (seed, CRC-32 of the region's slug), the same on every machine.
   Taking the most cultivated square as test would make every test zone its
   region's most uniform cropland rather than a sample of the region. The other
   squares keep their order of cultivation as indices 1..n-1.

The squares' corners are multiples of `step_m` (hence of 10 m) in UTM, so they
sit on the Sentinel-2 10 m grid. `prep/data/zones.csv` holds the committed
result; `python -m prep zones --select` re-derives it.
"""
from __future__ import annotations

import dataclasses
import math
import time
import zlib
from typing import Callable, Sequence

import numpy as np

from prep import zones as zones_lib
from prep.landcover import CROPLAND, worldcover_image
from cropcontracts.errors import UserError
from cropcontracts.zone import Zone

SOURCE = "worldcover-v200"


@dataclasses.dataclass(frozen=True)
class FractionGrid:
  """The coarse grid of cropland fractions around one town.

  x0, y0 is its upper-left corner in `epsg` (multiples of step); `rows` x
  `cols` cells of `step` metres; (tx, ty) is the town in that CRS.
  """
  epsg: int
  x0: float
  y0: float
  rows: int
  cols: int
  step: float
  tx: float
  ty: float


def fraction_grid(lon: float, lat: float, *, radius_km: float = 30.0,
                  step_m: float = 1000.0, square_m: float = 10_000.0) -> FractionGrid:
  """The grid covering every square whose centre is within radius of the town."""
  import pyproj
  epsg = zones_lib.utm_epsg(lon, lat)
  tx, ty = pyproj.Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}",
                                       always_xy=True).transform(lon, lat)
  reach = radius_km * 1000 + square_m / 2
  x0 = math.floor((tx - reach) / step_m) * step_m
  y0 = math.ceil((ty + reach) / step_m) * step_m
  cols = math.ceil((tx + reach - x0) / step_m)
  rows = math.ceil((y0 - (ty - reach)) / step_m)
  return FractionGrid(epsg, float(x0), float(y0), rows, cols, step_m, tx, ty)


def square_fractions(cells: np.ndarray, k: int) -> np.ndarray:
  """Mean of every k x k block of cells: [R, C] -> [R-k+1, C-k+1].

  Entry (r, c) is the square whose upper-left cell is (r, c).
  """
  s = np.zeros((cells.shape[0] + 1, cells.shape[1] + 1))
  s[1:, 1:] = np.cumsum(np.cumsum(cells, axis=0), axis=1)
  return (s[k:, k:] - s[:-k, k:] - s[k:, :-k] + s[:-k, :-k]) / (k * k)


def greedy_squares(fractions: np.ndarray, k: int, n: int, allowed: np.ndarray | None = None,
                   distance: np.ndarray | None = None, gap: int = 0) -> list[tuple[int, int]]:
  """Greedy choice of up to n k x k squares at least `gap` cells apart, best first.

  Args:
    fractions: float [R, C], fraction of the square with upper-left cell (r, c).
    k: square side in cells; squares (r, c), (r', c') are too close iff
      |r - r'| < k + gap and |c - c'| < k + gap (gap 0: they overlap).
    n: how many squares to choose.
    allowed: bool [R, C], candidates (e.g. centre within the radius).
    distance: float [R, C], tie-breaker (smaller first).
    gap: cells of clearance between two chosen squares (along x or y; the
      Euclidean distance between the squares is then at least as large).
  Returns:
    the chosen (r, c), best first; fewer than n if the candidates run out.
  """
  score = np.where(np.ones_like(fractions, bool) if allowed is None else allowed,
                   fractions, -np.inf).astype(np.float64)
  score[np.isnan(score)] = -np.inf
  tie = np.zeros_like(score) if distance is None else distance
  reach = k + gap
  chosen = []
  for _ in range(n):
    best = np.flatnonzero(score == score.max())
    if not best.size or not np.isfinite(score.flat[best[0]]):
      break
    r, c = np.unravel_index(best[np.argmin(tie.flat[best])], score.shape)
    chosen.append((int(r), int(c)))
    score[max(r - reach + 1, 0):r + reach, max(c - reach + 1, 0):c + reach] = -np.inf
  return chosen


def draw_test_rank(slug: str, n: int, seed: int = 0) -> int:
  """Cultivation rank (0 = most cultivated) of the region's test zone among n.

  A uniform draw from a generator seeded by (seed, CRC-32 of slug): reproducible
  across machines and Python versions, different from region to region.
  """
  return int(np.random.default_rng([seed, zlib.crc32(slug.encode())]).integers(n))


def cropland_image():
  """WorldCover v200 cropland fraction, averaged onto whatever grid is requested."""
  import ee
  cover = worldcover_image()
  return (cover.eq(CROPLAND).rename("cropland").toFloat()
          .reduceResolution(reducer=ee.Reducer.mean(), maxPixels=65536)
          .unmask(0))


def fraction_request(grid: FractionGrid) -> dict:
  """The computePixels request of a region's fraction grid."""
  return {
      "expression": cropland_image(),
      "fileFormat": "NUMPY_NDARRAY",
      "bandIds": ["cropland"],
      "grid": {
          "dimensions": {"width": grid.cols, "height": grid.rows},
          "affineTransform": {"scaleX": grid.step, "shearX": 0, "translateX": grid.x0,
                              "shearY": 0, "scaleY": -grid.step, "translateY": grid.y0},
          "crsCode": f"EPSG:{grid.epsg}",
      },
  }


def choose_zones(cells: np.ndarray, grid: FractionGrid, region: str, town: str,
                 slug: str, *, n: int = 5, radius_km: float = 30.0,
                 square_m: float = 10_000.0, gap_m: float = 1000.0,
                 seed: int = 0) -> list[Zone]:
  """The region's zones from its fraction grid (pure: no Earth Engine).

  Index 0 (the test zone) is the square of cultivation rank
  `draw_test_rank(slug, n, seed)`; indices 1..n-1 are the others, most cultivated first.
  """
  import pyproj
  k = int(round(square_m / grid.step))
  frac = square_fractions(np.asarray(cells, np.float64), k)
  r, c = np.mgrid[0:frac.shape[0], 0:frac.shape[1]]
  cx = grid.x0 + (c + k / 2) * grid.step
  cy = grid.y0 - (r + k / 2) * grid.step
  dist = np.hypot(cx - grid.tx, cy - grid.ty)
  picks = greedy_squares(frac, k, n, allowed=dist <= radius_km * 1000, distance=dist,
                         gap=math.ceil(gap_m / grid.step))
  if len(picks) < n:
    raise UserError(f"{region}: only {len(picks)} {square_m / 1000:g} km squares at least "
                    f"{gap_m / 1000:g} km apart fit within {radius_km:g} km of {town}; "
                    f"raise radius_km")
  t = draw_test_rank(slug, n, seed)
  picks = [picks[t]] + picks[:t] + picks[t + 1:]
  to_wgs = pyproj.Transformer.from_crs(f"EPSG:{grid.epsg}", "EPSG:4326", always_xy=True)
  pixels = int(round(square_m / zones_lib.RES))
  out = []
  for i, (pr, pc) in enumerate(picks):
    lon, lat = to_wgs.transform(cx[pr, pc], cy[pr, pc])
    out.append(Zone(zone_id=f"{slug}_{i}", region=region, town=town, index=i,
                    epsg=grid.epsg, x0=grid.x0 + pc * grid.step,
                    y0=grid.y0 - pr * grid.step, width=pixels, height=pixels,
                    res=zones_lib.RES, center_lon=round(lon, 6), center_lat=round(lat, 6),
                    cropland_fraction=round(float(frac[pr, pc]), 4), source=SOURCE))
  return out


def select_zones(regions: Sequence = zones_lib.REGIONS, *, n_per_region: int = 5,
                 radius_km: float = 30.0, step_m: float = 1000.0,
                 square_m: float = 10_000.0, gap_m: float = 1000.0, seed: int = 0,
                 progress: bool = True,
                 project: str | None = None,
                 max_retries: int = 6, sleep: Callable = time.sleep) -> list[Zone]:
  """The study zones: per region, the n most cultivated squares 1 km apart.

  Args:
    regions: (region, town, slug, lon, lat) tuples, as `prep.zones.REGIONS`.
    n_per_region: squares per region.
    radius_km: squares' centres lie within this distance of the town.
    step_m: fraction grid cell (squares move by this step); divides square_m.
    square_m: square side.
    gap_m: least distance between two chosen squares of a region.
    seed: seed of the test-zone draw (`draw_test_rank`).
  Returns:
    list[Zone] with cropland_fraction and source "worldcover-v200"; write them
    with `prep.zones.write_zones`.
  """
  import ee
  from tqdm import tqdm
  from prep import gee
  if square_m % step_m or step_m % zones_lib.RES:
    raise UserError(f"step_m={step_m} must divide square_m={square_m} and be a "
                    f"multiple of {zones_lib.RES} m")
  gee.initialize(project)
  out = []
  for region, town, slug, lon, lat in tqdm(regions, desc="regions", disable=not progress):
    grid = fraction_grid(lon, lat, radius_km=radius_km, step_m=step_m, square_m=square_m)
    request = fraction_request(grid)
    data = gee.with_retries(lambda: ee.data.computePixels(request),
                            f"WorldCover fractions around {town}",
                            max_retries=max_retries, sleep=sleep)
    out += choose_zones(np.asarray(data["cropland"], np.float64), grid, region, town,
                        slug, n=n_per_region, radius_km=radius_km, square_m=square_m,
                        gap_m=gap_m, seed=seed)
  return out
