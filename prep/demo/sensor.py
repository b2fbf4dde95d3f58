"""The demo's sensor: surface reflectance, clouds and the scene classification.

  spectra   fields and margins: linear mixing of endmember spectra (green
            leaves, dry matter, soil, rapeseed flowers) in B2 B3 B4 B8, a static
            within-field vigour texture; woods: a deciduous canopy between its
            leaf-on and leaf-off spectra over the year, a dark evergreen one
            all year; villages (roofs, streets, gardens) and water: static;
            then a half-pixel blur (mixed pixels on field edges), sensor noise.
  clouds    per scene a cover fraction (many clear, some overcast, cloudier in
            winter): smooth blobs (SCL 8/9), cirrus (SCL 10), shadows offset to
            the north (SCL 3), unflagged haze and cloud edges (SCL 7 or clear),
            a few false cloud flags, swath no-data (SCL 0), and a persistent
            December front, so that some pixels have no valid observation in a
            month and gap filling is needed.

Random streams: the static textures draw from `default_rng([seed, 3])`, the
December front from `[seed, 4]`, scene i from `[seed, 100 + i]` (`write_scene`
in `prep.demo.stac`), so a scene does not depend on which others were written.
"""
from __future__ import annotations

import dataclasses
import datetime
import math

import numpy as np

from prep.demo import landcover as lc
from prep.demo.crops import cover_table
from prep.demo.parcels import Parcels
from prep.demo.region import DemoSpec, scene_transform

# Endmember reflectances in B2 B3 B4 B8.
GREEN = np.array([.025, .058, .025, .48], np.float32)
DRY = np.array([.075, .105, .135, .26], np.float32)
SOIL = np.array([.070, .095, .125, .185], np.float32)
FLOWER = np.array([.050, .160, .150, .38], np.float32)
# The land outside fields: plausible Sentinel-2 L2A surface reflectances, of the
# order of the ranges published for temperate Europe (rounded; synthetic, not
# measured). Broadleaf canopy in summer: red 0.02-0.03, NIR 0.30-0.45 (NDVI
# ~0.85); leaf-off broadleaf woods in winter: bare crowns over litter and some
# green understorey, red ~0.06-0.08, NIR ~0.15-0.22 (NDVI ~0.4-0.5); autumn
# leaves browner (red up, NIR down); conifer plantations dark in the visible
# (red < 0.02) with NIR 0.18-0.25 and no leaf-off: the same all year.
LEAF_ON = np.array([.025, .050, .025, .36], np.float32)
LEAF_OFF = np.array([.045, .060, .070, .19], np.float32)
AUTUMN = np.array([.040, .070, .090, .27], np.float32)
CONIFER = np.array([.020, .038, .020, .22], np.float32)
# Deciduous leaf cover (day of year, leaves, brown leaves): bud-burst in late
# April, full canopy from May to September, leaf fall in October-November.
DECIDUOUS_LEAVES = [(1, 0, 0), (100, 0, 0), (118, .35, 0), (140, 1, 0), (265, 1, 0),
                    (290, .55, .35), (310, .15, .45), (330, 0, .15), (366, 0, 0)]
# Villages: clay-tile roofs (red brighter than green), slate or concrete roofs
# (grey, flat spectrum), asphalt streets (dark, flat), gardens (lawn, shrubs:
# static here). A village pixel mixes roofs and gardens: red 0.08-0.14, NIR
# 0.18-0.28, NDVI 0.2-0.4, bright and the same in every month.
TILE_ROOF = np.array([.070, .090, .150, .230], np.float32)
SLATE_ROOF = np.array([.110, .120, .125, .160], np.float32)
ASPHALT = np.array([.060, .070, .080, .100], np.float32)
GARDEN = np.array([.040, .070, .050, .300], np.float32)
# Inland water (river, ponds): dark in every band, NIR almost nothing (0.01-0.03).
WATER = np.array([.040, .050, .030, .015], np.float32)
CLOUD = np.array([.42, .41, .42, .46], np.float32)
HAZE = np.array([1.0, .85, .70, .45], np.float32)
PSF_SIGMA = 0.5   # pixels: blur of the sensor, mixes pixels across field edges


@dataclasses.dataclass
class Ground:
  """Static rasters of the scene area, [H, W] on the 10 m scene grid.

  The L pixels of woods, villages and water ("land pixels") are listed in
  `land` (flat indices) with their kind and static parts.
  """
  pid: np.ndarray        # int32, 0 = no parcel, p+1 = parcel p (declared or not)
  kind: np.ndarray       # uint8, the kind of land (`landcover.KINDS`): the truth
  green_gain: np.ndarray # float32, within-field vigour (tree cover outside parcels, canopy in woods)
  soil: np.ndarray       # float32 soil brightness
  nir: np.ndarray        # float32 leaf NIR scale
  table: np.ndarray      # float32 [P+1, 367, 3] cover per day (cover_table)
  land: np.ndarray       # int64 [L] flat indices of the land pixels
  static: np.ndarray     # float32 [4, L] their static reflectance (villages, water; woods 0)
  static_green: np.ndarray  # float32 [L] their static green cover (village gardens)
  water20: np.ndarray    # bool [H/2, W/2]: SCL pixels at least half water (SCL 6)
  bright_soil20: np.ndarray  # bool [H/2, W/2]: SCL pixels of soil brightness > 1.2

  @property
  def water(self) -> np.ndarray:
    """bool [H, W]: river and ponds."""
    return self.kind == lc.WATER


def _smooth_noise(rng, shape, sigma) -> np.ndarray:
  """float32 [H, W] Gaussian noise smoothed to `sigma` pixels, unit std."""
  from scipy import ndimage
  a = ndimage.gaussian_filter(rng.standard_normal(shape, np.float32), sigma)
  return a / max(float(a.std()), 1e-6)


def _rasterize(shapes, spec: DemoSpec) -> np.ndarray:
  """int32 [H, W] of (geometry, value) pairs on the scene grid (later wins), 0 elsewhere."""
  import rasterio.features
  shapes = [(g, v) for g, v in shapes if not g.is_empty]
  if not shapes:
    return np.zeros(spec.scene_shape, np.int32)
  return rasterio.features.rasterize(shapes, out_shape=spec.scene_shape,
                                     transform=scene_transform(spec), fill=0, dtype="int32")


def make_ground(spec: DemoSpec, parcels: Parcels, seed: int) -> Ground:
  """Rasterizes the parcels and the land once on the scene grid and draws static textures."""
  rng = np.random.default_rng([seed, 3])
  shape = spec.scene_shape
  pid = _rasterize(((g, i + 1) for i, g in enumerate(parcels.geometry)), spec)
  shaped = _rasterize(((parcels.land.shapes[k], k) for k in lc.SHAPED), spec)
  pid[shaped > 0] = 0
  declared = np.concatenate([[False], parcels.declared])[pid]
  kind = np.where(shaped > 0, shaped, np.where(
      pid == 0, lc.MARGIN, np.where(declared, lc.FIELD, lc.UNDECLARED))).astype(np.uint8)
  vigour = 1 + 0.07 * _smooth_noise(rng, shape, 2.0)
  trees = np.clip(0.5 + 0.4 * _smooth_noise(rng, shape, 3.0), 0.05, 1.0)
  texture = 1 + 0.04 * _smooth_noise(rng, shape, 1.0)
  soil = np.concatenate([[1.35], parcels.soil]).astype(np.float32)[pid] * texture
  nir = np.concatenate([[1.0], parcels.nir]).astype(np.float32)[pid]
  canopy = 1 + 0.08 * _smooth_noise(rng, shape, 1.5)
  gain = np.where(pid > 0, vigour, np.where(shaped > 0, canopy, trees))
  land = np.flatnonzero(shaped > 0)
  static, static_green = _static_land(rng, spec, parcels.land, kind, land)
  return Ground(pid, kind, gain.astype(np.float32), soil.astype(np.float32), nir,
                cover_table(parcels), land, static, static_green,
                _down((kind == lc.WATER).astype(np.float32)) > 0.5, _down(soil) > 1.2)


def _static_land(rng, spec, land, kind, idx) -> tuple[np.ndarray, np.ndarray]:
  """float32 [4, L] static reflectance and [L] green cover of the land pixels `idx`.

  Villages: roofs (tile or slate by block, 30-95 % of a pixel) and gardens,
  asphalt on the streets; water: its spectrum x (1 +- 3 %); woods: 0 (seasonal).
  """
  shape = spec.scene_shape
  k = kind.ravel()[idx]
  roof = np.clip(0.65 + 0.2 * _smooth_noise(rng, shape, 1.0), 0.3, 0.95).ravel()[idx]
  tile = (_smooth_noise(rng, shape, 3.0) > -0.3).ravel()[idx]
  rows, cols = np.divmod(idx, shape[1])
  tr = scene_transform(spec)
  street = (k == lc.VILLAGE) & lc.street_mask(land.villages, tr.c + (cols + 0.5) * tr.a,
                                              tr.f + (rows + 0.5) * tr.e)
  roofs = np.where(tile, TILE_ROOF[:, None], SLATE_ROOF[:, None])
  village = roof * roofs + (1 - roof) * GARDEN[:, None]
  village = np.where(street, 0.8 * ASPHALT[:, None] + 0.2 * village, village)
  murk = 1 + 0.03 * _smooth_noise(rng, shape, 4.0).ravel()[idx]
  static = np.where(k == lc.VILLAGE, village,
                    np.where(k == lc.WATER, WATER[:, None] * murk, 0)).astype(np.float32)
  green = np.where(k == lc.VILLAGE, 0.9 * (1 - roof) * ~street, 0).astype(np.float32)
  return static, green


def wood_spectra(doy: int) -> tuple[np.ndarray, np.ndarray]:
  """float32 [K, 4] reflectance and [K] green cover of each kind's woods on a day.

  Rows are `landcover` kinds (K = 8, row 0 none): DECIDUOUS and EVERGREEN
  filled, the others 0.
  """
  k = np.asarray(DECIDUOUS_LEAVES, np.float64)
  leaves, brown = np.interp(doy, k[:, 0], k[:, 1]), np.interp(doy, k[:, 0], k[:, 2])
  spec = np.zeros((len(lc.KINDS) + 1, 4), np.float32)
  green = np.zeros(len(lc.KINDS) + 1, np.float32)
  spec[lc.DECIDUOUS] = leaves * LEAF_ON + brown * AUTUMN + (1 - leaves - brown) * LEAF_OFF
  spec[lc.EVERGREEN] = CONIFER
  green[lc.DECIDUOUS], green[lc.EVERGREEN] = 0.9 * leaves, 0.85
  return spec, green


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
  spec, wood_green = wood_spectra(doy)
  kind = ground.kind.ravel()[ground.land]
  refl.reshape(4, -1)[:, ground.land] = (
      spec[kind].T * ground.green_gain.ravel()[ground.land] + ground.static)
  green.reshape(-1)[ground.land] = wood_green[kind] + ground.static_green
  # The sensor's point spread: pixels on a field edge see both fields.
  refl = ndimage.gaussian_filter(refl.astype(np.float32), (0, PSF_SIGMA, PSF_SIGMA),
                                 truncate=2.0)
  return refl, green


def _blobs(rng, shape, scale) -> np.ndarray:
  """float32 [H, W] smooth random field (features of ~`scale` pixels), unit std."""
  from scipy import ndimage
  coarse = rng.standard_normal((shape[0] // scale + 4, shape[1] // scale + 4))
  a = ndimage.zoom(ndimage.gaussian_filter(coarse, 0.8), scale, order=1)
  a = a[:shape[0], :shape[1]].astype(np.float32)
  return (a - a.mean()) / max(float(a.std()), 1e-6)


def _cover_fraction(rng, month: int, cloudiness: float = 1.0) -> float:
  """Cloud cover of one scene: many clear, some overcast, cloudier in winter;
  `cloudiness` scales the odds of overcast (and divides those of clear) scenes."""
  winter = month in (1, 2, 11, 12)
  clear = (0.30 if winter else 0.45) / cloudiness
  overcast = min((0.38 if winter else 0.15) * cloudiness, 1 - clear)
  u = rng.random()
  if u < clear:
    return float(rng.uniform(0, 0.03))
  if u > 1 - overcast:
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
            front: np.ndarray, cloudiness: float = 1.0) -> tuple[np.ndarray, np.ndarray, dict]:
  """One Sentinel-2 L2A-like acquisition (`cloudiness`: the year's, `_cover_fraction`).

  Returns:
    uint16 [4, H, W] reflectance x 10000 (0 = nodata), uint8 [H/2, W/2] SCL,
    and facts for the STAC item (cloud cover).
  """
  doy = date.timetuple().tm_yday
  refl, green = surface_reflectance(ground, doy)
  h, w = green.shape
  h2, w2 = h // 2, w // 2
  cover = _cover_fraction(rng, date.month, cloudiness)
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
  scl[ground.water20] = 6
  scl[shadow > 0.3] = 3
  scl[(rng.random((h2, w2)) < 0.002)] = 8                        # false alarms
  bright_soil = (g20 < 0.08) & ground.bright_soil20 & (date.month in (7, 8, 9))
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



def december_front(spec: DemoSpec, seed: int) -> np.ndarray:
  """float32 [H/2, W/2] opacity of the front that stays over 35 % of the area all December."""
  h2, w2 = spec.scene_shape[0] // 2, spec.scene_shape[1] // 2
  return _opacity(_blobs(np.random.default_rng([seed, 4]), (h2, w2), 32), 0.35)
