"""The demo's parcels and their RPG-like GeoPackage.

Parcels are recursive splits of the scene area by slightly tilted lines (the
first cuts leave roads, later ones hedges or nothing), 0.5-10 ha each, cut by
the water, villages and woods of `prep.demo.landcover`; each gets a crop from its
region's mix and its own phenology draws. The declared ones are written as the
RPG is: layer PARCELLES_GRAPHIQUES in Lambert-93, codes of the list in force
since 2023 (JAC, MCS, CAH, CPL, PPH …), fields in the layout of IGN's GeoPackage
(`RPG_FIELDS`), one parcel stored with a self-intersecting ring; the undeclared
ones (1.5-4.5 % of each zone) grow their crops in the scenes but have no RPG
polygon. Parcels cover the scene area, so many straddle a zone edge: the labels
are clipped to the zone grid, the zone folder's parcels.gpkg keeps them whole.
"""
from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np

from cropcontracts import atomic
from prep.demo import landcover
from prep.demo.crops import (CATCH_AFTER, CATCH_CROPS, CODES, MANAGEMENT, MIX, NIR_OF,
                             REGION_SHIFT_DAYS)
from prep.demo.region import SCENE_X0, SCENE_Y0, EPSG, DemoSpec, demo_zones
from prep.labels import RPG_LAYER

RPG_EPSG = 2154       # Lambert-93: the CRS of the RPG
# The fields of IGN's GeoPackage in the order of its delivery (the 2022 sample of
# shared/real), named in upper case as the 2023 edition's documentation names
# them; geometry column `the_geom`, SURF_PARC a 32-bit real, the rest text.
RPG_FIELDS = ("ID_PARCEL", "CODE_CULTU", "CODE_GROUP", "CULTURE_D1", "CULTURE_D2",
              "SURF_PARC")
RPG_GEOMETRY = "the_geom"
# Codes of the 2023 list each demo holds inside a zone: new in 2023 (JAC, MCS,
# CAH) or read by their 2023 meaning (CPL, PPH).
CODES_2023 = ("JAC", "MCS", "CAH", "CPL", "PPH")


def _half_plane(point, normal, offset, size=1e5):
  """Polygon of {p : (p - point) . normal >= offset}, clipped to `size` metres."""
  import shapely
  n = np.asarray(normal) / np.linalg.norm(normal)
  u = np.array([-n[1], n[0]])
  base = np.asarray(point) + n * offset
  return shapely.Polygon([base + u * size, base - u * size,
                          base - u * size + n * size, base + u * size + n * size])


def split_parcels(rng: np.random.Generator, area) -> list:
  """Tiles a polygon (UTM metres) into parcels of about 0.5-10 ha.

  Each polygon larger than a drawn target (log-uniform 1.5-10 ha) is cut across
  its long axis at 30-70 % by a line tilted by up to 8 degrees; the first three
  levels of cuts leave a road (12-20 m), later ones a hedge or track (0-8 m).
  Pieces under 0.5 ha are dropped (land outside the register).
  """
  out, stack = [], [(area, 0)]
  while stack:
    poly, depth = stack.pop()
    ha = poly.area / 1e4
    if ha <= 10 and ha < math.exp(rng.uniform(math.log(1.5), math.log(10))):
      if ha >= 0.5:
        out.append(poly)
      continue
    ring = np.asarray(poly.minimum_rotated_rectangle.exterior.coords)
    e1, e2 = ring[1] - ring[0], ring[2] - ring[1]
    axis = e1 if np.hypot(*e1) >= np.hypot(*e2) else e2
    tilt = math.radians(rng.uniform(-8, 8))
    normal = np.array([[math.cos(tilt), -math.sin(tilt)],
                       [math.sin(tilt), math.cos(tilt)]]) @ axis
    c = np.asarray(poly.centroid.coords[0]) + axis * (rng.uniform(0.3, 0.7) - 0.5)
    gap = rng.uniform(12, 20) if depth < 3 else rng.choice([0, 0, 2, 4, 6, 8])
    for sign in (1, -1):
      half = poly.intersection(_half_plane(c, sign * normal, gap / 2))
      if half.geom_type == "Polygon" and not half.is_empty:
        stack.append((half, depth + 1))
  return out


def _bowtie(poly):
  """`poly` with a small self-intersecting loop on its first edge (invalid).

  The RPG holds a few such rings; `make_valid` turns this one into the field
  plus a sliver, so its label stays where the field is.
  """
  import shapely
  ring = np.asarray(poly.exterior.coords)[:-1]
  a, b = ring[0], ring[1]
  t = (b - a) / np.linalg.norm(b - a)
  n = np.array([-t[1], t[0]])
  mid = a + (b - a) * 0.5
  loop = [mid - t * 6 + n * 3, mid + t * 6 - n * 3, mid - t * 6 - n * 3,
          mid + t * 6 + n * 3]
  return shapely.Polygon([a, *loop, *ring[1:]])


@dataclasses.dataclass
class Parcels:
  """The demo's parcels (P of them) in UTM, with their crop and phenology draws."""
  geometry: list          # P shapely Polygons (valid), EPSG:32631
  region: np.ndarray      # str [P]
  code: np.ndarray        # str [P] CODE_CULTU
  pheno: np.ndarray       # str [P] phenology (key of PHENOLOGY)
  catch: np.ndarray       # str [P] CULTURE_D1 ('' = none)
  catch2: np.ndarray      # str [P] CULTURE_D2
  shift: np.ndarray       # float [P] days added to the phenology dates
  amplitude: np.ndarray   # float [P] green-cover scale
  soil: np.ndarray        # float [P] soil brightness
  nir: np.ndarray         # float [P] leaf NIR scale
  declared: np.ndarray    # bool [P]: in the RPG (False: undeclared farmland)
  invalid: int            # index of the parcel stored with a self-intersecting ring
  land: landcover.Land    # water, villages, woods (no parcel there)


def make_parcels(spec: DemoSpec, seed: int) -> Parcels:
  """Draws the parcels of the scene area and their crops (deterministic)."""
  import shapely
  rng = np.random.default_rng([seed, 1])
  h, w = spec.scene_shape
  area = shapely.box(SCENE_X0, SCENE_Y0 - h * 10.0, SCENE_X0 + w * 10.0, SCENE_Y0)
  zones = demo_zones(spec)
  geoms = np.array(split_parcels(rng, area))
  geoms, land = landcover.cut_parcels(landcover.draw_land(spec, seed, geoms), geoms)
  p = len(geoms)
  ys = shapely.get_y(shapely.centroid(geoms))
  # A parcel belongs to the region of its centroid; regions meet mid-gap.
  n_reg = len(spec.regions)
  step = (spec.region_height + spec.region_gap) * 10.0
  reg_idx = np.clip(((SCENE_Y0 - spec.margin * 10.0 + spec.region_gap * 5.0 - ys)
                     // step).astype(int), 0, n_reg - 1)
  region = np.array(spec.regions)[reg_idx]
  code = np.empty(p, dtype=object)
  for r in spec.regions:
    mix = MIX.get(r, MIX["demo-north"])
    names, probs = list(mix), np.array(list(mix.values()))
    sel = region == r
    code[sel] = rng.choice(names, size=sel.sum(), p=probs / probs.sum())
  code = code.astype(str)
  # The codes a 2023 file has and an older table lacks or reads otherwise: each
  # lies inside a zone, also in the small demo.
  zone_box = shapely.union_all([shapely.box(*z.bounds) for z in zones])
  in_zone = np.flatnonzero(shapely.contains(zone_box, shapely.centroid(geoms)))
  for c in CODES_2023:
    if not np.isin(code[in_zone], [c]).any():
      spare = [k for k in in_zone if code[k] not in CODES_2023]
      code[rng.choice(spare)] = c
  pheno = np.array([CODES[c][1] for c in code], dtype=object)
  for c, choices in MANAGEMENT.items():
    sel = code == c
    names, probs = zip(*choices)
    pheno[sel] = rng.choice(names, size=sel.sum(), p=probs)
  pheno = pheno.astype(str)
  shift = (np.vectorize(REGION_SHIFT_DAYS.get)(region, 0.0)
           + np.clip(rng.normal(0, 6, p), -14, 14))
  amplitude = np.where(np.isin(pheno, ["fallow", "border"]),
                       rng.uniform(0.5, 1.15, p), rng.uniform(0.85, 1.05, p))
  soil = rng.uniform(0.75, 1.3, p)
  nir = np.vectorize(NIR_OF.get)(pheno, 1.0) * rng.normal(1, 0.04, p)
  has_catch = np.isin(code, CATCH_AFTER) & (rng.random(p) < 0.3)
  catch = np.where(has_catch, rng.choice(CATCH_CROPS, p), "")
  catch2 = np.where(has_catch & (rng.random(p) < 0.1), "PCL", "")
  catch2 = np.where(catch == "PCL", "", catch2)
  # The invalid parcel lies inside zone 1, so that the demo exercises the repair.
  box = shapely.box(*zones[1].bounds)
  inside = shapely.contains(box, geoms) & (shapely.get_num_interior_rings(geoms) == 0)
  crops = np.flatnonzero(np.isin(code, ["BTH", "ORH", "MIS", "TRN"]) & inside)
  crops = crops if crops.size else np.arange(p)
  invalid = int(rng.choice(crops))
  # Undeclared farmland: crops of the same mix, none of the parcels the demo needs declared.
  eligible = ~np.isin(code, [*CODES_2023, "BOR", "SNE"]) & (np.arange(p) != invalid)
  declared = ~landcover.choose_undeclared(spec, seed, geoms, eligible)
  return Parcels(list(geoms), region, code, pheno, catch, catch2, shift, amplitude,
                 soil, nir, declared, invalid=invalid, land=land)


def write_rpg(parcels: Parcels, path, seed: int) -> None:
  """Writes the declared parcels as an RPG GeoPackage (Lambert-93, MultiPolygons)."""
  import geopandas as gpd
  import shapely
  rng = np.random.default_rng([seed, 2])
  geoms = list(parcels.geometry)
  geoms[parcels.invalid] = _bowtie(geoms[parcels.invalid])
  ids = rng.choice(np.arange(1_000_000, 9_999_999), len(geoms), replace=False)
  keep = parcels.declared
  gdf = gpd.GeoDataFrame(
      {"ID_PARCEL": [str(i) for i in ids[keep]],
       "CODE_CULTU": parcels.code[keep],
       "CODE_GROUP": [CODES[c][0] for c in parcels.code[keep]],
       "CULTURE_D1": [c or None for c in parcels.catch[keep]],
       "CULTURE_D2": [c or None for c in parcels.catch2[keep]]},
      geometry=[shapely.MultiPolygon([g]) for g, k in zip(geoms, keep) if k],
      crs=EPSG).to_crs(RPG_EPSG)
  area = shapely.area(shapely.make_valid(gdf.geometry.values))
  gdf.insert(len(RPG_FIELDS) - 1, "SURF_PARC", np.round(area / 1e4, 2).astype(np.float32))
  with atomic.atomic_path(path) as tmp, warnings.catch_warnings():
    warnings.filterwarnings("ignore", "The filename extension")  # tmp name
    gdf.to_file(tmp, layer=RPG_LAYER, driver="GPKG", engine="pyogrio",
                layer_options={"GEOMETRY_NAME": RPG_GEOMETRY})

