"""The demo's land outside the declared fields: woods, villages, water, margins, undeclared farmland.

A real 10 km square of the Beauce is not all RPG parcels: it holds villages,
woods, a river, ponds, roads and hedges, and some farmland nobody declared. Each
demo zone gets them, drawn from `default_rng([seed, 5])` (`draw_land`):

  water       a river across each region (30 m wide, meandering W-E through one
              row of zones) and 1-2 ponds per zone (small demo: 1);
  village     one per zone, 5-8 % of it, irregular round; streets on a rotated
              grid, roofs (clay tile or slate) and gardens, all static;
  woods       3-6 blobs per zone (small demo: 2; the first deciduous, the second
              evergreen, the others 60 % deciduous) and deciduous strips along
              half the river's banks; the blobs are scaled together so that the
              zone's non-agricultural share reaches a target drawn in 28-35 %
              (`SHARE_TARGET`); a zone's shapes stay inside its square widened
              to mid-gap, so that its share is its own;
  margins     what lies between parcels: roads (12-20 m), hedges and tracks
              (0-8 m) of `parcels.split_parcels`, and field pieces under 0.5 ha;
  undeclared  parcels kept in the landscape, crops and phenology included, but
              left out of the RPG: 1.5-4.5 % of each zone (`choose_undeclared`,
              `default_rng([seed, 6])`).

Parcels are cut by water, village and woods (`cut_parcels`), so no RPG polygon
overlaps them; a field piece they leave under 0.5 ha joins the nearest wood or
village (water's banks: deciduous).

`truth(ground)` is the kind of every scene pixel (`KINDS`); `write_worldcover`
writes it in ESA WorldCover v200's classes and colours (`raw/landcover_demo.tif`,
what `prep labels --landcover` reads); `write_png` draws the kinds for a person.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from prep.demo.region import SCENE_X0, SCENE_Y0, DemoSpec, demo_zones

# Kinds of land in the truth raster (0 = none: outside the scene).
FIELD, UNDECLARED, MARGIN, DECIDUOUS, EVERGREEN, VILLAGE, WATER = range(1, 8)
KINDS = {FIELD: "field", UNDECLARED: "undeclared_field", MARGIN: "margin",
         DECIDUOUS: "deciduous_wood", EVERGREEN: "evergreen_wood", VILLAGE: "village",
         WATER: "water"}
NON_AGRICULTURAL = (MARGIN, DECIDUOUS, EVERGREEN, VILLAGE, WATER)
# Kinds drawn as polygons here, in the order they are burnt (later wins).
SHAPED = (DECIDUOUS, EVERGREEN, VILLAGE, WATER)
# ESA WorldCover v200 classes (10 tree cover, 30 grassland, 40 cropland,
# 50 built-up, 80 permanent water bodies) and their official colours.
WORLDCOVER = {FIELD: 40, UNDECLARED: 40, MARGIN: 30, DECIDUOUS: 10, EVERGREEN: 10,
              VILLAGE: 50, WATER: 80}
WORLDCOVER_GRASS_CODES = ("PPH", "PTR", "LUZ")   # fields WorldCover calls grassland (30)
WORLDCOVER_COLOURS = {10: (0, 100, 0), 30: (255, 255, 76), 40: (240, 150, 255),
                      50: (250, 0, 0), 80: (0, 100, 200)}
# Colours of `write_png` (one per kind).
COLOURS = {0: (0, 0, 0), FIELD: (233, 214, 107), UNDECLARED: (240, 130, 40),
           MARGIN: (160, 200, 120), DECIDUOUS: (60, 150, 60), EVERGREEN: (20, 80, 50),
           VILLAGE: (200, 60, 60), WATER: (40, 100, 210)}

SHARE_TARGET = (0.28, 0.35)     # non-agricultural share of each zone (the fit's target)
UNDECLARED_SHARE = (0.015, 0.045)
MIN_PARCEL_M2 = 5000.0          # field pieces under 0.5 ha are not parcels
RIVER_WIDTH_M = 30.0


@dataclasses.dataclass
class Land:
  """The shaped land of the scene area (UTM metres, EPSG:32631).

  shapes: kind (DECIDUOUS, EVERGREEN, VILLAGE, WATER) -> shapely geometry,
    pairwise disjoint.
  villages: [V] (centre (x, y), street angle (radians), street spacing (m)):
    each village's streets are a grid through its centre (`street_mask`).
  """
  shapes: dict
  villages: list


def _blob(centre, radius, shape) -> object:
  """Irregular closed polygon: r(t) = radius (1 + sum_k a_k cos(k t + p_k)), stretched, turned.

  `shape` = (a [K], p [K], aspect, angle), drawn once so that the blob of any
  radius has the same outline.
  """
  import shapely
  a, p, aspect, angle = shape
  t = np.linspace(0, 2 * math.pi, 96, endpoint=False)
  k = np.arange(2, 2 + len(a))[:, None]
  r = radius * (1 + (a[:, None] * np.cos(k * t + p[:, None])).sum(0))
  x, y = r * np.cos(t) * math.sqrt(aspect), r * np.sin(t) / math.sqrt(aspect)
  c, s = math.cos(angle), math.sin(angle)
  return shapely.Polygon(np.stack([centre[0] + c * x - s * y, centre[1] + s * x + c * y], 1))


def _shape(rng, wobble: float, max_aspect: float) -> tuple:
  """The outline of a `_blob`: harmonics 2-8 of amplitude up to wobble/k**0.7, aspect, angle."""
  k = np.arange(1, 8)
  return (rng.uniform(0, wobble, k.size) / k ** 0.7, rng.uniform(0, 2 * math.pi, k.size),
          rng.uniform(1, max_aspect), rng.uniform(0, math.pi))


def _river(rng, spec: DemoSpec, zones) -> tuple[object, object]:
  """A meandering river across a region's zone row, and its wooded banks."""
  import shapely
  import shapely.ops
  side = spec.zone_pixels * 10.0
  row = int(rng.integers(0, spec.rows))
  yc = zones[2 * row].y0 - side * (0.5 + rng.uniform(-0.25, 0.25))
  x = np.arange(SCENE_X0 - 200, SCENE_X0 + spec.scene_shape[1] * 10.0 + 200, 20.0)
  amp, wave, phase = rng.uniform(0.05, 0.1) * side, rng.uniform(0.7, 1.2) * side, rng.uniform(0, 7)
  y = yc + amp * (np.sin(2 * math.pi * x / wave + phase)
                  + 0.3 * np.sin(2 * math.pi * x / wave * 2.7 + 2 * phase))
  line = shapely.LineString(np.stack([x, y], 1))
  water = line.buffer(RIVER_WIDTH_M / 2, cap_style="flat")
  step = side / 5
  banks = [shapely.ops.substring(line, d, d + step).buffer(RIVER_WIDTH_M / 2 + rng.uniform(15, 35))
           for d in np.arange(0, line.length, step) if rng.random() < 0.5]
  return water, shapely.difference(shapely.union_all(banks), water)


@dataclasses.dataclass
class _ZoneDraw:
  """What one zone gets, drawn once; woods sized by `woods(scale)`."""
  box: object             # the zone's square, widened to mid-gap (features stay inside)
  village: object
  streets: tuple          # (centre, angle, spacing) of the village's street grid
  ponds: list
  woods_at: list          # (centre, base radius, shape, kind)
  target: float

  def woods(self, scale: float) -> dict:
    import shapely
    out = {DECIDUOUS: [], EVERGREEN: []}
    for centre, radius, shape, kind in self.woods_at:
      if scale > 0:
        out[kind].append(_blob(centre, radius * scale, shape))
    return {k: shapely.intersection(shapely.union_all(v), self.box) for k, v in out.items()}


def _draw_zone(rng, spec: DemoSpec, zone, small: bool) -> _ZoneDraw:
  """The village, ponds and woods of one zone (module docstring)."""
  import shapely
  side = zone.width * zone.res
  x0, y1 = zone.x0, zone.y0

  def at(lo, hi):
    return np.array([x0 + rng.uniform(lo, hi) * side, y1 - rng.uniform(lo, hi) * side])

  box = shapely.box(*zone.bounds).buffer(spec.gap * 5.0 - 1, join_style="mitre")
  vc, vr = at(0.25, 0.75), side * math.sqrt(rng.uniform(0.05, 0.08) / math.pi)
  village = shapely.intersection(_blob(vc, vr, _shape(rng, 0.25, 1.4)), box)
  streets = (vc, rng.uniform(0, math.pi / 2), rng.uniform(90, 160))

  def away(radius, clearance):
    for _ in range(40):
      p = at(0.08, 0.92)
      if np.hypot(*(p - vc)) > vr * 1.2 + radius + clearance:
        return p
    return p

  ponds = []
  for _ in range(1 if small else int(rng.integers(1, 3))):
    r = rng.uniform(18, 28) if small else rng.uniform(25, 50)
    ponds.append(shapely.intersection(_blob(away(r, 20), r, _shape(rng, 0.15, 1.6)), box))
  woods = []
  for i in range(2 if small else int(rng.integers(3, 7))):
    r = side * rng.uniform(0.06, 0.12)
    kind = (DECIDUOUS, EVERGREEN)[i] if i < 2 else (DECIDUOUS if rng.random() < 0.6 else EVERGREEN)
    woods.append((away(r, 30), r, _shape(rng, 0.35, 2.2), kind))
  return _ZoneDraw(box, village, streets, ponds, woods, float(rng.uniform(*SHARE_TARGET)))


def _fit_scale(draw: _ZoneDraw, zone, crop) -> float:
  """The woods' scale at which the zone's non-agricultural share meets its target.

  crop: the parcels inside the zone less water, village and banks (union).
  Share = 1 - (parcel area left after cutting)/(zone area); bisection on the scale.
  """
  import shapely
  area = zone.width * zone.height * zone.res ** 2

  def share(scale):
    woods = shapely.union_all(list(draw.woods(scale).values()))
    return 1 - shapely.difference(crop, woods).area / area

  if share(0.0) >= draw.target:
    return 0.0
  lo, hi = 0.0, 4.0
  for _ in range(10):                 # the scale to 0.4 %: the share to ~0.1 %
    mid = (lo + hi) / 2
    lo, hi = (mid, hi) if share(mid) < draw.target else (lo, mid)
  return hi


def draw_land(spec: DemoSpec, seed: int, parcels: np.ndarray) -> Land:
  """Draws the water, villages and woods of the scene area (module docstring).

  Args:
    parcels: shapely Polygons [P] tiling the scene area (`split_parcels`); the
      woods of each zone are scaled against them.
  """
  import shapely
  rng = np.random.default_rng([seed, 5])
  zones = demo_zones(spec)
  small = spec.zone_pixels < 128
  water, decid, ever, village = [], [], [], []
  for r in spec.regions:
    river, banks = _river(rng, spec, [z for z in zones if z.region == r])
    water.append(river)
    decid.append(banks)
  draws = [_draw_zone(rng, spec, z, small) for z in zones]
  tree = shapely.STRtree(parcels)
  for zone, draw in zip(zones, draws):
    zbox = shapely.box(*zone.bounds)
    crop = shapely.intersection(shapely.union_all(parcels[tree.query(zbox)]), zbox)
    fixed = shapely.intersection(
        shapely.union_all([*water, *decid, draw.village, *draw.ponds]), zbox)
    woods = draw.woods(_fit_scale(draw, zone, shapely.difference(crop, fixed)))
    water += draw.ponds
    village.append(draw.village)
    decid.append(woods[DECIDUOUS])
    ever.append(woods[EVERGREEN])
  h, w = spec.scene_shape
  scene = shapely.box(SCENE_X0, SCENE_Y0 - h * 10.0, SCENE_X0 + w * 10.0, SCENE_Y0)
  shapes, taken = {}, shapely.Polygon()
  for kind, geoms in ((WATER, water), (VILLAGE, village), (EVERGREEN, ever), (DECIDUOUS, decid)):
    g = shapely.difference(shapely.intersection(shapely.union_all(geoms), scene), taken)
    shapes[kind], taken = g, shapely.union(taken, g)
  return Land(shapes, [d.streets for d in draws])


def street_mask(villages: list, x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """bool [N]: points (x, y) [N] (UTM metres, pixel centres) on a street of their nearest village.

  Streets: 10 m wide lines every `spacing` m along both axes of the village's
  grid, through its centre.
  """
  centres = np.array([v[0] for v in villages])
  near = np.argmin((x[:, None] - centres[None, :, 0]) ** 2
                   + (y[:, None] - centres[None, :, 1]) ** 2, 1)
  angle = np.array([v[1] for v in villages])[near]
  spacing = np.array([v[2] for v in villages])[near]
  dx, dy = x - centres[near, 0], y - centres[near, 1]
  u = dx * np.cos(angle) + dy * np.sin(angle)
  v = -dx * np.sin(angle) + dy * np.cos(angle)
  on = lambda a: np.abs((a + spacing / 2) % spacing - spacing / 2) < 5
  return on(u) | on(v)


def cut_parcels(land: Land, parcels: np.ndarray) -> tuple[np.ndarray, Land]:
  """Parcels minus water, village and woods; the pieces under 0.5 ha join the nearest shape.

  Returns the parcels (shapely Polygons [P'], each piece of >= 0.5 ha of a
  parcel its own parcel) and the land with the small pieces added (to the
  nearest village or wood; beside water: deciduous, the banks' trees).
  """
  import shapely
  taken = shapely.union_all(list(land.shapes.values()))
  shapely.prepare(taken)
  hit = shapely.intersects(taken, parcels)
  parts = shapely.get_parts(shapely.difference(parcels[hit], taken))
  parts = parts[shapely.get_type_id(parts) == 3]
  big = shapely.area(parts) >= MIN_PARCEL_M2
  kept = np.concatenate([parcels[~hit], parts[big]])
  small = parts[~big]
  shapes = dict(land.shapes)
  if small.size:
    kinds = np.array([VILLAGE, EVERGREEN, DECIDUOUS, WATER])
    dist = np.stack([shapely.distance(small, shapes[k]) for k in kinds], 1)
    near = kinds[np.nanargmin(np.where(np.isnan(dist), np.inf, dist), 1)]
    near = np.where(near == WATER, DECIDUOUS, near)
    for k in (VILLAGE, EVERGREEN, DECIDUOUS):
      if (near == k).any():
        shapes[k] = shapely.union_all([shapes[k], *small[near == k]])
  return kept, dataclasses.replace(land, shapes=shapes)


def choose_undeclared(spec: DemoSpec, seed: int, geoms: np.ndarray, eligible: np.ndarray
                      ) -> np.ndarray:
  """bool [P]: the parcels left out of the RPG, 1.5-4.5 % of each zone.

  Per zone, in a random order, eligible parcels are taken while every zone's
  undeclared share stays under the upper bound, until the zone's drawn target
  is met (a parcel across two zones counts in both).
  """
  import shapely
  rng = np.random.default_rng([seed, 6])
  zones = demo_zones(spec)
  boxes = [shapely.box(*z.bounds) for z in zones]
  inside = np.stack([shapely.area(shapely.intersection(geoms, b)) for b in boxes], 1)
  inside /= np.array([z.width * z.height * z.res ** 2 for z in zones])     # [P, Z] shares
  out = np.zeros(len(geoms), bool)
  got = np.zeros(len(zones))
  for z in range(len(zones)):
    target = rng.uniform(*UNDECLARED_SHARE)
    for p in rng.permutation(np.flatnonzero(eligible & (inside[:, z] > 0))):
      if got[z] >= target:
        break
      if not out[p] and (got + inside[p] <= UNDECLARED_SHARE[1]).all():
        out[p] = True
        got += inside[p]
  return out


def worldcover(kind: np.ndarray, pid: np.ndarray, codes: np.ndarray) -> np.ndarray:
  """uint8 [H, W]: the ESA WorldCover v200 class of each pixel (`WORLDCOVER`; 0 = none).

  Args:
    kind: uint8 [H, W] kinds (`KINDS`); pid: int [H, W] parcel p+1 (0 = none);
    codes: str [P] CODE_CULTU of the parcels (grassland ones are class 30).
  """
  lut = np.zeros(256, np.uint8)
  for k, v in WORLDCOVER.items():
    lut[k] = v
  grass = np.concatenate([[False], np.isin(codes, WORLDCOVER_GRASS_CODES)])[pid]
  return np.where(grass & (pid > 0), np.uint8(30), lut[kind])


def _write_paletted(path, arr: np.ndarray, colours: dict, driver: str, transform=None,
                    epsg: int | None = None) -> None:
  """Writes uint8 [H, W] with a colour table: a GeoTIFF (georeferenced, tiled deflate,
  nodata 0) or a PNG (a picture only)."""
  import warnings
  import rasterio
  from cropcontracts import atomic
  h, w = arr.shape
  prof = dict(driver=driver, width=w, height=h, count=1, dtype="uint8")
  if driver == "GTiff":
    prof.update(crs=f"EPSG:{epsg}", transform=transform, nodata=0, tiled=True,
                blockxsize=256, blockysize=256, compress="deflate")
  with atomic.atomic_path(path) as tmp, warnings.catch_warnings():
    warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)   # the PNG
    with rasterio.open(tmp, "w", **prof) as dst:
      dst.write(arr, 1)
      dst.write_colormap(1, {k: (*c, 255) for k, c in colours.items()})
    for aux in tmp.parent.glob(tmp.name + ".aux.xml"):
      aux.unlink()


def write_worldcover(path, spec: DemoSpec, kind, pid, codes) -> None:
  """Writes the scene area's land cover in WorldCover classes and colours (EPSG:32631, 10 m).

  Real WorldCover tiles are in EPSG:4326; the demo's lies on the scene grid, of
  which the zones are windows.
  """
  from prep.demo.region import EPSG, scene_transform
  _write_paletted(path, worldcover(kind, pid, codes), WORLDCOVER_COLOURS, "GTiff",
                  scene_transform(spec), EPSG)


def write_png(path, spec: DemoSpec, kind: np.ndarray) -> None:
  """A picture of the kinds (`COLOURS`) of the scene area, the zones outlined in black."""
  from prep.demo.region import zone_window
  img = kind.copy()
  for z in demo_zones(spec):
    rows, cols = zone_window(spec, z)
    r0, r1, c0, c1 = rows.start - 1, rows.stop, cols.start - 1, cols.stop
    img[[r0, r1], c0:c1 + 1] = 0
    img[r0:r1 + 1, [c0, c1]] = 0
  _write_paletted(path, img, COLOURS, "PNG")
