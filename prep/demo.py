"""The demo region: synthetic inputs in the real formats, offline and seeded.

`make_demo` writes what the real inputs look like, for a small area of the
Beauce near Chartres (UTM 31N, EPSG:32631):

  raw/rpg_demo.gpkg     RPG-like parcels, layer PARCELLES_GRAPHIQUES, Lambert-93
                        (EPSG:2154), fields ID_PARCEL SURF_PARC CODE_CULTU
                        CODE_GROUP CULTURE_D1 CULTURE_D2, real RPG crop codes.
  raw/scenes/<item>/    Sentinel-2 L2A-like scenes: B02 B03 B04 B08 (uint16,
                        10 m, reflectance x 10000, 0 = nodata), SCL (uint8,
                        20 m) as tiled deflate GeoTIFFs, and `<item>.json`, a
                        minimal STAC item; one scene every ~5 days of 2023.
  raw/zones.csv         the demo zones (two regions x four zones).

then runs the ordinary prep routes on them (`prep.scenes` for the composites,
`prep.labels` for the labels) into `zones/<zone_id>/`. Nothing here is real:
the parcels, crops and reflectances come from the small model below, made so
that crop classes are learnable but not trivially separable. Demo numbers are
never results.

The model:
  parcels   recursive splits of the area by slightly tilted lines; the first
            cuts leave roads, later ones hedges or nothing; 0.5-10 ha each.
  crops     a crop mix per region; each crop has a phenology: cover fractions
            of green vegetation, dry matter and flowers over the day of year
            (piecewise linear). Each parcel shifts it in time (sowing date,
            about +-2 weeks), scales its green peak and has its own soil.
  spectra   linear mixing of endmember spectra (green leaves, dry matter, soil,
            rapeseed flowers, water) in B2 B3 B4 B8, a static within-field
            vigour texture, a half-pixel blur (mixed pixels on field edges),
            sensor noise.
  clouds    per scene a cover fraction (many clear, some overcast, cloudier in
            winter): smooth blobs (SCL 8/9), cirrus (SCL 10), shadows offset to
            the north (SCL 3), unflagged haze and cloud edges (SCL 7 or clear),
            a few false cloud flags, swath no-data (SCL 0), and a persistent
            December front, so that some pixels have no valid observation in a
            month and gap filling is needed.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import math
import pathlib
import warnings

import numpy as np

from cropcontracts import atomic
from cropcontracts.errors import UserError
from cropcontracts.zone import Zone
from prep.zones import write_zones

EPSG = 32631          # UTM 31N: the grid of the scenes and of the zones
RPG_EPSG = 2154       # Lambert-93: the CRS of the RPG
RPG_LAYER = "PARCELLES_GRAPHIQUES"
TILE = "31UCP"        # the MGRS tile of the area
SCENE_X0, SCENE_Y0 = 390_000.0, 5_350_020.0  # scene upper-left, multiples of 60 m
BAND_FILES = ("B02", "B03", "B04", "B08")
RPG_FIELDS = ("ID_PARCEL", "SURF_PARC", "CODE_CULTU", "CODE_GROUP",
              "CULTURE_D1", "CULTURE_D2")


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

# ---------------------------------------------------------------------------
# Crops: RPG codes, official groups, phenology, regional mix.

# CODE_CULTU -> (CODE_GROUP, phenology), from the official RPG 2023 list.
CODES = {
    "BTH": ("1", "winter_wheat"),       # blé tendre d'hiver
    "BDH": ("4", "durum_wheat"),        # blé dur d'hiver
    "ORH": ("3", "winter_barley"),      # orge d'hiver
    "ORP": ("3", "spring_barley"),      # orge de printemps
    "MIS": ("2", "maize"),              # maïs
    "MIE": ("2", "silage_maize"),       # maïs ensilage
    "MID": ("2", "sweet_maize"),        # maïs doux
    "CZH": ("5", "rapeseed"),           # colza d'hiver
    "TRN": ("6", "sunflower"),          # tournesol
    "SOJ": ("7", "soybean"),            # soja
    "BTN": ("24", "sugar_beet"),        # betterave non fourragère
    "PTC": ("25", "potato"),            # pomme de terre de consommation
    "PPR": ("8", "peas"),               # pois de printemps
    "PPH": ("18", "grazed_grass"),      # prairie permanente
    "PTR": ("19", "mown_grass"),        # prairie temporaire
    "LUZ": ("16", "alfalfa"),           # autre luzerne
    "J5M": ("11", "fallow"),            # jachère de 5 ans ou moins
    "VRC": ("21", "vineyard"),          # vigne : raisins de cuve
    "VRG": ("20", "orchard"),           # verger
    "BOR": ("28", "border"),            # bordure de champ
    "SNE": ("28", "fallow"),            # surface temporairement non exploitée
}
# Grassland is managed by the farm, not by its RPG code: most temporary grassland
# is mown three times, most permanent grassland grazed with one cut, not all.
MANAGEMENT = {"PTR": (("mown_grass", 0.7), ("grazed_grass", 0.3)),
              "PPH": (("mown_grass", 0.3), ("grazed_grass", 0.7))}
CATCH_CROPS = ("MOT", "PCL")            # moutarde, phacélie (CULTURE_D1/D2)
# Crops after which a catch crop is sown in late summer.
_CATCH_AFTER = ("BTH", "BDH", "ORH", "ORP", "CZH", "PPR")

# Share of the parcels per code in each region (the south is warmer: more
# maize, sunflower, durum, vines; the north more beet, potato, peas).
MIX = {
    "demo-north": dict(BTH=.30, ORH=.10, BDH=.02, ORP=.04, MIS=.07, MIE=.02,
                       CZH=.10, TRN=.02, BTN=.07, PTC=.04, PPR=.04, PPH=.06,
                       PTR=.04, LUZ=.03, J5M=.03, BOR=.01, SNE=.01),
    "demo-south": dict(BTH=.18, ORH=.06, BDH=.07, ORP=.02, MIS=.12, MIE=.04,
                       MID=.01, CZH=.06, TRN=.10, SOJ=.04, BTN=.01, PTC=.01,
                       PPR=.02, PPH=.08, PTR=.05, LUZ=.03, J5M=.03, VRC=.04,
                       VRG=.02, BOR=.01, SNE=.01),
}
REGION_SHIFT_DAYS = {"demo-north": 0.0, "demo-south": -7.0}

# Phenology knots: (day of year, green, dry, flowers) cover fractions; the rest
# of the pixel is bare soil. Piecewise linear in between.
PHENOLOGY = {
    "winter_wheat": [(1, .25, 0, 0), (60, .30, 0, 0), (85, .50, 0, 0),
                     (115, .82, 0, 0), (145, .90, 0, 0), (165, .70, .20, 0),
                     (182, .20, .70, 0), (196, .05, .85, 0), (201, .02, .55, 0),
                     (240, .04, .30, 0), (258, .01, .05, 0), (295, 0, 0, 0),
                     (330, .10, 0, 0), (366, .18, 0, 0)],
    "durum_wheat": [(1, .22, 0, 0), (60, .28, 0, 0), (85, .48, 0, 0),
                    (112, .78, 0, 0), (140, .84, 0, 0), (158, .62, .28, 0),
                    (176, .15, .75, 0), (190, .04, .85, 0), (195, .02, .55, 0),
                    (240, .04, .30, 0), (258, .01, .05, 0), (295, 0, 0, 0),
                    (330, .10, 0, 0), (366, .16, 0, 0)],
    "winter_barley": [(1, .30, 0, 0), (55, .35, 0, 0), (78, .55, 0, 0),
                      (105, .85, 0, 0), (132, .88, 0, 0), (150, .60, .30, 0),
                      (168, .15, .75, 0), (182, .04, .85, 0), (187, .02, .55, 0),
                      (235, .04, .30, 0), (255, .01, .05, 0), (285, 0, 0, 0),
                      (320, .12, 0, 0), (366, .22, 0, 0)],
    "spring_barley": [(1, .04, .05, 0), (75, .02, 0, 0), (95, .06, 0, 0),
                      (122, .50, 0, 0), (150, .86, 0, 0), (170, .60, .30, 0),
                      (190, .10, .80, 0), (205, .02, .50, 0), (250, .05, .20, 0),
                      (270, 0, 0, 0), (366, .05, 0, 0)],
    "maize": [(1, .04, .15, 0), (100, .02, .05, 0), (125, 0, 0, 0),
              (150, .08, 0, 0), (175, .45, 0, 0), (200, .88, 0, 0),
              (235, .86, .04, 0), (255, .50, .40, 0), (275, .20, .70, 0),
              (286, .02, .45, 0), (330, .04, .20, 0), (366, .04, .10, 0)],
    "silage_maize": [(1, .04, .10, 0), (100, .02, .05, 0), (125, 0, 0, 0),
                     (150, .08, 0, 0), (175, .45, 0, 0), (200, .88, 0, 0),
                     (232, .84, .06, 0), (248, .60, .30, 0), (252, .02, .15, 0),
                     (300, .03, .05, 0), (366, .04, .05, 0)],
    "sweet_maize": [(1, .04, .10, 0), (110, 0, 0, 0), (135, .10, 0, 0),
                    (160, .55, 0, 0), (185, .88, 0, 0), (215, .80, .10, 0),
                    (228, .02, .25, 0), (300, .03, .05, 0), (366, .04, .05, 0)],
    "sunflower": [(1, .04, .05, 0), (115, 0, 0, 0), (132, 0, 0, 0),
                  (150, .15, 0, 0), (170, .55, 0, 0), (195, .85, 0, 0),
                  (215, .68, .22, 0), (235, .30, .60, 0), (255, .08, .80, 0),
                  (264, .02, .40, 0), (300, .03, .10, 0), (366, .05, 0, 0)],
    "soybean": [(1, .04, .05, 0), (130, 0, 0, 0), (155, .10, 0, 0),
                (180, .50, 0, 0), (210, .90, 0, 0), (240, .75, .20, 0),
                (260, .20, .70, 0), (275, .02, .40, 0), (366, .05, 0, 0)],
    "sugar_beet": [(1, .05, 0, 0), (80, 0, 0, 0), (110, .05, 0, 0),
                   (140, .35, 0, 0), (170, .85, 0, 0), (240, .92, 0, 0),
                   (280, .78, .10, 0), (296, .60, .10, 0), (300, .02, .05, 0),
                   (366, .04, 0, 0)],
    "potato": [(1, .02, 0, 0), (100, 0, 0, 0), (130, .10, 0, 0),
               (155, .70, 0, 0), (185, .86, 0, 0), (205, .50, .35, 0),
               (225, .10, .60, 0), (235, .02, .10, 0), (366, .05, 0, 0)],
    "rapeseed": [(1, .55, 0, 0), (50, .55, 0, 0), (78, .78, 0, 0),
                 (95, .80, 0, 0), (110, .45, 0, .45), (128, .72, 0, .08),
                 (140, .75, .05, 0), (160, .40, .45, 0), (180, .10, .80, 0),
                 (190, .02, .50, 0), (235, .05, .10, 0), (250, .15, 0, 0),
                 (300, .45, 0, 0), (366, .50, 0, 0)],
    "peas": [(1, .02, 0, 0), (70, 0, 0, 0), (95, .15, 0, 0), (120, .60, 0, 0),
             (145, .85, 0, 0), (160, .50, .40, 0), (175, .10, .80, 0),
             (185, .02, .40, 0), (230, .05, .10, 0), (366, .05, 0, 0)],
    "mown_grass": [(1, .55, .05, 0), (60, .60, 0, 0), (100, .85, 0, 0),
                        (135, .90, 0, 0), (140, .25, .30, 0), (165, .75, 0, 0),
                        (190, .75, .05, 0), (195, .25, .35, 0), (230, .55, .10, 0),
                        (255, .60, 0, 0), (260, .30, .20, 0), (300, .60, 0, 0),
                        (366, .55, .05, 0)],
    "grazed_grass": [(1, .60, .05, 0), (100, .82, 0, 0), (150, .85, 0, 0),
                        (156, .40, .30, 0), (185, .65, .10, 0),
                        (220, .50, .30, 0), (270, .65, .05, 0), (366, .60, .05, 0)],
    "alfalfa": [(1, .35, .10, 0), (80, .50, 0, 0), (125, .90, 0, 0),
                (130, .20, .30, 0), (160, .85, 0, 0), (165, .20, .30, 0),
                (195, .80, 0, 0), (200, .20, .35, 0), (235, .70, .05, 0),
                (240, .25, .30, 0), (280, .60, 0, 0), (366, .35, .10, 0)],
    "fallow": [(1, .30, .20, 0), (90, .35, .10, 0), (140, .60, .10, 0),
               (170, .55, .20, 0), (180, .15, .40, 0), (230, .25, .40, 0),
               (280, .35, .20, 0), (366, .30, .20, 0)],
    "vineyard": [(1, .12, .05, 0), (110, .12, 0, 0), (130, .20, 0, 0),
                 (170, .40, 0, 0), (220, .45, 0, 0), (260, .35, .05, 0),
                 (290, .20, .10, 0), (310, .10, .10, 0), (366, .12, .05, 0)],
    "orchard": [(1, .30, .05, 0), (90, .35, 0, 0), (120, .55, 0, 0),
                (180, .65, 0, 0), (250, .60, 0, 0), (290, .45, .10, 0),
                (320, .30, .10, 0), (366, .30, .05, 0)],
    "border": [(1, .45, .10, 0), (100, .70, 0, 0), (170, .60, .20, 0),
               (220, .40, .40, 0), (280, .55, .10, 0), (366, .45, .10, 0)],
    # Land outside parcels: hedges, trees and roads (scaled per pixel by tree cover).
    "hedge": [(1, .30, .10, 0), (100, .45, 0, 0), (130, .85, 0, 0),
              (260, .80, 0, 0), (300, .50, .20, 0), (330, .30, .10, 0),
              (366, .30, .10, 0)],
}
# Green-up of a catch crop sown after the harvest (added to the main crop).
CATCH_CROP = [(1, 0, 0, 0), (235, 0, 0, 0), (260, .10, 0, 0), (290, .50, 0, 0),
              (320, .45, .05, 0), (366, .25, .10, 0)]
# Leaf NIR relative to cereals: broadleaf canopies scatter more.
NIR_OF = {"sugar_beet": 1.15, "potato": 1.12, "sunflower": 1.10, "soybean": 1.10,
          "rapeseed": 1.08, "peas": 1.05, "alfalfa": 1.05, "maize": 1.04,
          "silage_maize": 1.04, "sweet_maize": 1.04}

# Endmember reflectances in B2 B3 B4 B8.
GREEN = np.array([.025, .058, .025, .48], np.float32)
DRY = np.array([.075, .105, .135, .26], np.float32)
SOIL = np.array([.070, .095, .125, .185], np.float32)
FLOWER = np.array([.050, .160, .150, .38], np.float32)
WATER = np.array([.040, .050, .030, .015], np.float32)
CLOUD = np.array([.42, .41, .42, .46], np.float32)
HAZE = np.array([1.0, .85, .70, .45], np.float32)
PSF_SIGMA = 0.5   # pixels: blur of the sensor, mixes pixels across field edges

# ---------------------------------------------------------------------------
# Zones and parcels.


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
  invalid: int            # index of the parcel stored with a self-intersecting ring
  pond: object            # shapely Polygon of the pond (no parcel there)


def make_parcels(spec: DemoSpec, seed: int) -> Parcels:
  """Draws the parcels of the scene area and their crops (deterministic)."""
  import shapely
  rng = np.random.default_rng([seed, 1])
  h, w = spec.scene_shape
  area = shapely.box(SCENE_X0, SCENE_Y0 - h * 10.0, SCENE_X0 + w * 10.0, SCENE_Y0)
  zones = demo_zones(spec)
  south = [z for z in zones if z.region == spec.regions[-1]]
  zb = south[min(1, len(south) - 1)].bounds
  pond = shapely.Point(zb[0] + 0.35 * (zb[2] - zb[0]),
                       zb[1] + 0.6 * (zb[3] - zb[1])).buffer(45, quad_segs=8)
  geoms = shapely.difference(np.array(split_parcels(rng, area)), pond)
  geoms = geoms[(shapely.get_type_id(geoms) == 3) & (shapely.area(geoms) >= 5000)]
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
  has_catch = np.isin(code, _CATCH_AFTER) & (rng.random(p) < 0.3)
  catch = np.where(has_catch, rng.choice(CATCH_CROPS, p), "")
  catch2 = np.where(has_catch & (rng.random(p) < 0.1), "PCL", "")
  catch2 = np.where(catch == "PCL", "", catch2)
  # The invalid parcel lies inside zone 1, so that the demo exercises the repair.
  box = shapely.box(*zones[1].bounds)
  inside = shapely.contains(box, geoms)
  crops = np.flatnonzero(np.isin(code, ["BTH", "ORH", "MIS", "TRN"]) & inside)
  crops = crops if crops.size else np.arange(p)
  return Parcels(list(geoms), region, code, pheno, catch, catch2, shift, amplitude,
                 soil, nir, invalid=int(rng.choice(crops)), pond=pond)


def write_rpg(parcels: Parcels, path, seed: int) -> None:
  """Writes the parcels as an RPG GeoPackage (Lambert-93, MultiPolygons)."""
  import geopandas as gpd
  import shapely
  rng = np.random.default_rng([seed, 2])
  geoms = list(parcels.geometry)
  geoms[parcels.invalid] = _bowtie(geoms[parcels.invalid])
  gdf = gpd.GeoDataFrame(
      {"ID_PARCEL": [str(i) for i in rng.choice(
          np.arange(1_000_000, 9_999_999), len(geoms), replace=False)],
       "CODE_CULTU": parcels.code, "CODE_GROUP": [CODES[c][0] for c in parcels.code],
       "CULTURE_D1": [c or None for c in parcels.catch],
       "CULTURE_D2": [c or None for c in parcels.catch2]},
      geometry=[shapely.MultiPolygon([g]) for g in geoms], crs=EPSG).to_crs(RPG_EPSG)
  area = shapely.area(shapely.make_valid(gdf.geometry.values))
  gdf.insert(1, "SURF_PARC", np.round(area / 1e4, 2))
  with atomic.atomic_path(path) as tmp, warnings.catch_warnings():
    warnings.filterwarnings("ignore", "The filename extension")  # tmp name
    gdf.to_file(tmp, layer=RPG_LAYER, driver="GPKG", engine="pyogrio")


# ---------------------------------------------------------------------------
# Phenology and spectra.


def cover_table(parcels: Parcels) -> np.ndarray:
  """float32 [P+1, 367, 3]: green, dry, flower cover of each parcel per day.

  Row 0 is the land outside parcels (hedges and roads); row p is parcel p-1.
  Vectorized over the parcels of a crop; one loop over crops.
  """
  days = np.arange(367, dtype=np.float64)
  pheno = np.concatenate([["hedge"], parcels.pheno])
  shift = np.concatenate([[0.0], parcels.shift])
  amp = np.concatenate([[1.0], parcels.amplitude])
  table = np.zeros((len(pheno), 367, 3), np.float32)
  for name, knots in PHENOLOGY.items():
    idx = np.flatnonzero(pheno == name)
    if idx.size:
      table[idx] = _interp(days[None] - shift[idx, None], knots)
  catch = np.flatnonzero(np.concatenate([[False], parcels.catch != ""]))
  table[catch] += _interp(days[None] - shift[catch, None], CATCH_CROP)
  table[..., 0] *= amp[:, None]
  total = table.sum(-1, keepdims=True)
  return np.where(total > 0.98, table * 0.98 / np.maximum(total, 1e-6), table)


def _interp(x: np.ndarray, knots) -> np.ndarray:
  """[..., 3] piecewise-linear cover fractions of the knots at days x."""
  k = np.asarray(knots, np.float64)
  return np.stack([np.interp(x, k[:, 0], k[:, i]) for i in (1, 2, 3)], -1)


@dataclasses.dataclass
class Ground:
  """Static rasters of the scene area, [H, W] on the 10 m scene grid."""
  pid: np.ndarray        # int32, 0 = outside parcels, p+1 = parcel p
  green_gain: np.ndarray # float32, within-field vigour (tree cover outside parcels)
  soil: np.ndarray       # float32 soil brightness
  nir: np.ndarray        # float32 leaf NIR scale
  water: np.ndarray      # bool, the pond
  table: np.ndarray      # float32 [P+1, 367, 3] cover per day (cover_table)


def _smooth_noise(rng, shape, sigma) -> np.ndarray:
  """float32 [H, W] Gaussian noise smoothed to `sigma` pixels, unit std."""
  from scipy import ndimage
  a = ndimage.gaussian_filter(rng.standard_normal(shape, np.float32), sigma)
  return a / max(float(a.std()), 1e-6)


def make_ground(spec: DemoSpec, parcels: Parcels, seed: int) -> Ground:
  """Rasterizes the parcels once on the scene grid and draws static textures."""
  import rasterio.features
  rng = np.random.default_rng([seed, 3])
  shape = spec.scene_shape
  tr = scene_transform(spec)
  pid = rasterio.features.rasterize(
      ((g, i + 1) for i, g in enumerate(parcels.geometry)), out_shape=shape,
      transform=tr, fill=0, dtype="int32")
  water = rasterio.features.rasterize([(parcels.pond, 1)], out_shape=shape,
                                      transform=tr, fill=0, dtype="uint8") > 0
  vigour = 1 + 0.07 * _smooth_noise(rng, shape, 2.0)
  trees = np.clip(0.5 + 0.4 * _smooth_noise(rng, shape, 3.0), 0.05, 1.0)
  texture = 1 + 0.04 * _smooth_noise(rng, shape, 1.0)
  soil = np.concatenate([[1.35], parcels.soil]).astype(np.float32)[pid] * texture
  nir = np.concatenate([[1.0], parcels.nir]).astype(np.float32)[pid]
  return Ground(pid, np.where(pid > 0, vigour, trees).astype(np.float32),
                soil.astype(np.float32), nir, water, cover_table(parcels))


def surface_reflectance(ground: Ground, doy: int) -> tuple[np.ndarray, np.ndarray]:
  """Cloud-free reflectance float32 [4, H, W] and green cover [H, W] on a day."""
  from scipy import ndimage
  cover = ground.table[:, doy][ground.pid]            # [H, W, 3]
  dry, flower = cover[..., 1], cover[..., 2]
  green = np.minimum(cover[..., 0] * ground.green_gain, 0.98 - dry - flower)
  soil = np.clip(1 - green - dry - flower, 0, 1)
  refl = (green[None] * GREEN[:, None, None] + dry[None] * DRY[:, None, None]
          + flower[None] * FLOWER[:, None, None]
          + (soil * ground.soil)[None] * SOIL[:, None, None])
  refl[3] += green * GREEN[3] * (ground.nir - 1)
  refl = np.where(ground.water[None], WATER[:, None, None], refl)
  # The sensor's point spread: pixels on a field edge see both fields.
  refl = ndimage.gaussian_filter(refl.astype(np.float32), (0, PSF_SIGMA, PSF_SIGMA),
                                 truncate=2.0)
  return refl, green


# ---------------------------------------------------------------------------
# Clouds and the scene classification layer.


def _blobs(rng, shape, scale) -> np.ndarray:
  """float32 [H, W] smooth random field (features of ~`scale` pixels), unit std."""
  from scipy import ndimage
  coarse = rng.standard_normal((shape[0] // scale + 4, shape[1] // scale + 4))
  a = ndimage.zoom(ndimage.gaussian_filter(coarse, 0.8), scale, order=1)
  a = a[:shape[0], :shape[1]].astype(np.float32)
  return (a - a.mean()) / max(float(a.std()), 1e-6)


def _cover_fraction(rng, month: int) -> float:
  """Cloud cover of one scene: many clear, some overcast, cloudier in winter."""
  winter = month in (1, 2, 11, 12)
  u = rng.random()
  if u < (0.30 if winter else 0.45):
    return float(rng.uniform(0, 0.03))
  if u > (0.62 if winter else 0.85):
    return float(rng.uniform(0.85, 1.0))
  return float(rng.uniform(0.05, 0.7))


def _opacity(field, cover) -> np.ndarray:
  """Cloud opacity in [0, 1] covering a `cover` share of the field, soft edges."""
  if cover <= 0:
    return np.zeros_like(field)
  if cover >= 1:
    return np.ones_like(field)
  thr = np.quantile(field, 1 - cover)
  return np.clip((field - thr) / 0.6, 0, 1)


def _shift(a, dy, dx) -> np.ndarray:
  """a[r + dy, c + dx], zero outside."""
  out = np.zeros_like(a)
  h, w = a.shape
  out[max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)] = \
      a[max(0, dy):h - max(0, -dy), max(0, dx):w - max(0, -dx)]
  return out


def _up(a) -> np.ndarray:
  """20 m -> 10 m by pixel repetition."""
  return np.repeat(np.repeat(a, 2, 0), 2, 1)


def _down(a) -> np.ndarray:
  """10 m -> 20 m by 2x2 mean."""
  h, w = a.shape
  return a.reshape(h // 2, 2, w // 2, 2).mean((1, 3))


def observe(ground: Ground, date: datetime.date, rng: np.random.Generator,
            front: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
  """One Sentinel-2 L2A-like acquisition.

  Returns:
    uint16 [4, H, W] reflectance x 10000 (0 = nodata), uint8 [H/2, W/2] SCL,
    and facts for the STAC item (cloud cover).
  """
  doy = date.timetuple().tm_yday
  refl, green = surface_reflectance(ground, doy)
  h, w = green.shape
  h2, w2 = h // 2, w // 2
  cover = _cover_fraction(rng, date.month)
  alpha = _opacity(_blobs(rng, (h2, w2), 24), cover)
  if date.month == 12:                 # a front that stays all month
    alpha = np.maximum(alpha, front)
  cirrus = np.zeros((h2, w2), np.float32)
  if rng.random() < 0.2:
    cirrus = 0.25 * _opacity(_blobs(rng, (h2, w2), 40), rng.uniform(0.2, 0.8))
  shadow = _shift(alpha, int(rng.integers(6, 14)), int(rng.integers(-4, 5))) * (alpha < 0.2)
  haze = float(min(rng.exponential(0.008), 0.04)) * (1 + 0.5 * _blobs(rng, (h2, w2), 48))
  a10, c10, s10, hz10 = (_up(x) for x in (alpha, cirrus, shadow, haze))
  gain = rng.uniform(0.97, 1.03)
  refl = refl * gain * (1 - 0.65 * s10[None])
  refl += rng.standard_normal(refl.shape, np.float32) * (0.003 + 0.015 * refl)
  cloud = CLOUD[:, None, None] * rng.uniform(0.8, 1.2)
  refl = (1 - a10[None]) * refl + a10[None] * cloud + c10[None] * cloud * 0.6
  refl += np.clip(hz10, 0, None)[None] * HAZE[:, None, None]
  dn = np.clip(np.rint(refl * 10000), 1, 65535).astype(np.uint16)

  g20 = _down(green)
  scl = np.where(g20 > 0.3, 4, 5).astype(np.uint8)
  scl[_down(ground.water.astype(np.float32)) > 0.5] = 6
  scl[shadow > 0.3] = 3
  scl[(rng.random((h2, w2)) < 0.002)] = 8                        # false alarms
  bright_soil = (g20 < 0.08) & (_down(ground.soil) > 1.2) & (date.month in (7, 8, 9))
  scl[bright_soil & (rng.random((h2, w2)) < 0.15)] = 8
  scl[cirrus > 0.08] = 10
  scl[(alpha > 0.2) & (alpha <= 0.35)] = 7                      # unclassified edges
  scl[(alpha > 0.35) & (alpha <= 0.65)] = 8
  scl[alpha > 0.65] = 9
  if rng.random() < 1 / 6:                                       # swath edge
    yy, xx = np.mgrid[0:h2, 0:w2]
    ang = rng.uniform(0.2, 0.5)
    edge = xx * math.cos(ang) + yy * math.sin(ang)
    nodata = edge > np.quantile(edge, 1 - rng.uniform(0.1, 0.4))
    scl[nodata] = 0
    dn[:, _up(nodata)] = 0
  return dn, scl, {"eo:cloud_cover": round(100 * float((scl >= 8).mean()), 2)}


# ---------------------------------------------------------------------------
# Writing scenes.


def item_id(date: datetime.date, i: int) -> str:
  return f"S2{'AB'[i % 2]}_{TILE}_{date:%Y%m%d}_0_L2A"


def _write_band(path, arr, transform, epsg=EPSG) -> None:
  import rasterio
  h, w = arr.shape
  block = 256 if min(h, w) >= 256 else 128
  prof = dict(driver="GTiff", width=w, height=h, count=1, dtype=arr.dtype.name,
              crs=f"EPSG:{epsg}", transform=transform, nodata=0, tiled=True,
              blockxsize=block, blockysize=block, compress="deflate",
              predictor=2, zlevel=6)
  with atomic.atomic_path(path) as tmp:
    with rasterio.open(tmp, "w", **prof) as dst:
      dst.write(arr, 1)


def stac_item(iid: str, date: datetime.date, spec: DemoSpec, facts: dict) -> dict:
  """A minimal STAC item for a scene (assets relative to the item's folder)."""
  import rasterio.warp
  h, w = spec.scene_shape
  left, top = SCENE_X0, SCENE_Y0
  right, bottom = left + w * 10.0, top - h * 10.0
  xs, ys = rasterio.warp.transform(f"EPSG:{EPSG}", "EPSG:4326",
                                   [left, right, right, left, left],
                                   [top, top, bottom, bottom, top])
  ring = [[round(x, 7), round(y, 7)] for x, y in zip(xs, ys)]
  cog = "image/tiff; application=geotiff; profile=cloud-optimized"
  assets = {b: {"href": f"{b}.tif", "type": cog, "roles": ["data"],
                "gsd": 10, "proj:shape": [h, w],
                "proj:transform": list(scene_transform(spec))[:6]}
            for b in BAND_FILES}
  assets["SCL"] = {"href": "SCL.tif", "type": cog, "roles": ["data"], "gsd": 20,
                   "proj:shape": [h // 2, w // 2],
                   "proj:transform": list(scene_transform(spec, 20.0))[:6]}
  return {
      "type": "Feature", "stac_version": "1.0.0", "id": iid,
      "stac_extensions": [
          "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
          "https://stac-extensions.github.io/eo/v1.1.0/schema.json"],
      "bbox": [min(xs), min(ys), max(xs), max(ys)],
      "geometry": {"type": "Polygon", "coordinates": [ring]},
      "properties": {"datetime": f"{date:%Y-%m-%d}T10:56:21.024000Z",
                     "platform": f"sentinel-2{iid[2].lower()}",
                     "constellation": "sentinel-2", "proj:epsg": EPSG,
                     "s2:mgrs_tile": TILE, "demo": True,
                     "earthsearch:boa_offset_applied": True, **facts},
      "assets": assets,
  }


def write_scene(scene_dir, ground, spec, i, date, seed, front) -> str:
  """Writes scene i (bands, SCL, then its STAC item last); returns its id."""
  iid = item_id(date, i)
  folder = pathlib.Path(scene_dir) / iid
  if (folder / f"{iid}.json").is_file():
    return iid
  rng = np.random.default_rng([seed, 100 + i])
  dn, scl, facts = observe(ground, date, rng, front)
  folder.mkdir(parents=True, exist_ok=True)
  for b, arr in zip(BAND_FILES, dn):
    _write_band(folder / f"{b}.tif", arr, scene_transform(spec))
  _write_band(folder / "SCL.tif", scl, scene_transform(spec, 20.0))
  atomic.write_json(folder / f"{iid}.json", stac_item(iid, date, spec, facts))
  return iid


def write_raw(raw_dir, *, seed: int = 0, small: bool = False,
              progress: bool = True) -> dict:
  """Writes the demo's raw inputs (zones.csv, rpg_demo.gpkg, scenes/) once.

  Idempotent: `raw/demo.json` records the seed and size first (`complete`
  false) and is completed last; a rerun keeps what exists and refuses a folder
  begun with another seed or size. Returns the content of demo.json.
  """
  from tqdm import tqdm
  raw = pathlib.Path(raw_dir)
  spec = SMALL if small else FULL
  stamp = {"seed": seed, "small": small, "spec": dataclasses.asdict(spec),
           "complete": False}
  done = raw / "demo.json"
  if done.is_file():
    old = json.loads(done.read_text(encoding="utf-8"))
    if {k: old.get(k) for k in ("seed", "small")} != {"seed": seed, "small": small}:
      raise UserError(f"{raw}: holds a demo made with seed={old.get('seed')} "
                      f"small={old.get('small')}, not seed={seed} small={small}; "
                      f"choose another output folder or delete it")
    if old.get("complete"):
      return old
  elif raw.exists() and any(raw.iterdir()):
    raise UserError(f"{raw}: exists and is not a demo folder; choose another output folder")
  else:
    atomic.write_json(done, stamp)
  zones = demo_zones(spec)
  parcels = make_parcels(spec, seed)
  ground = make_ground(spec, parcels, seed)
  frac = [float((ground.pid[_zone_window(spec, z)] > 0).mean()) for z in zones]
  write_zones([dataclasses.replace(z, cropland_fraction=round(f, 3))
               for z, f in zip(zones, frac)], raw / "zones.csv")
  if not (raw / "rpg_demo.gpkg").is_file():
    write_rpg(parcels, raw / "rpg_demo.gpkg", seed)
  h2, w2 = spec.scene_shape[0] // 2, spec.scene_shape[1] // 2
  front = _opacity(_blobs(np.random.default_rng([seed, 4]), (h2, w2), 32), 0.35)
  dates = spec.scene_dates
  bar = tqdm(dates, desc="demo scenes", unit="scene", disable=not progress)
  ids = [write_scene(raw / "scenes", ground, spec, i, d, seed, front)
         for i, d in enumerate(bar)]
  stamp.update(complete=True, n_parcels=len(parcels.geometry), n_scenes=len(ids),
               scene_shape=list(spec.scene_shape), invalid_parcel=parcels.invalid)
  atomic.write_json(done, stamp)
  return stamp


def _zone_window(spec: DemoSpec, zone: Zone):
  """Row/column slices of a zone in the scene grid."""
  r0 = int(round((SCENE_Y0 - zone.y0) / 10.0))
  c0 = int(round((zone.x0 - SCENE_X0) / 10.0))
  return slice(r0, r0 + zone.height), slice(c0, c0 + zone.width)


# ---------------------------------------------------------------------------
# The whole demo.


def make_demo(out_dir, *, seed: int = 0, progress: bool = True,
              small: bool = False) -> pathlib.Path:
  """Writes the demo region and its zone folders; returns `out_dir/zones`.

  Raw inputs go to `out_dir/raw` (`write_raw`); then, per zone, the scenes route
  (`prep.scenes.composite_zone_from_scenes`) and the labels route
  (`prep.labels.make_zone_labels`) write `out_dir/zones/<zone_id>/`. A rerun
  skips whatever is complete. `small=True` makes a tiny variant for tests
  (2 x 2 zones of 48 x 48 pixels, 25 scenes).
  """
  from tqdm import tqdm
  from prep.labels import make_zone_labels
  from prep.scenes import composite_zone_from_scenes
  from prep.zones import read_zones
  out = pathlib.Path(out_dir)
  raw = out / "raw"
  stamp = write_raw(raw, seed=seed, small=small, progress=progress)
  root = out / "zones"
  for zone in tqdm(read_zones(raw / "zones.csv"), desc="demo zones", unit="zone",
                   disable=not progress):
    folder = root / zone.zone_id
    meta = _meta(folder)
    if "imagery" not in meta:
      composite_zone_from_scenes(raw / "scenes", zone, folder,
                                 year=stamp["spec"]["year"], progress=False)
    if "labels" not in meta:
      make_zone_labels(raw / "rpg_demo.gpkg", zone, folder, progress=False)
  return root


def _meta(folder: pathlib.Path) -> dict:
  p = folder / "meta.json"
  try:
    return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else {}
  except json.JSONDecodeError:
    return {}
