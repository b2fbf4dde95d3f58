"""Shared test fixtures: tiny zone folders, a checkpoint meta, stand-in models."""
from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np
import pandas as pd

from jaxcrop.input_pipeline import DatasetMeta
from prep import nomenclature, zonefolder
from prep.zones import Zone

H, W, T = 40, 52, 3
HOLE = (slice(5, 9), slice(10, 20))    # rows, cols with no observation at all


def months(t=T):
  return [f"2023-{m + 1:02d}" for m in range(t)]


def make_meta(t=T, version="v1", bands=zonefolder.BANDS) -> DatasetMeta:
  nom = nomenclature.load("v1")
  K = nom.num_classes
  return DatasetMeta(
      num_classes=K, class_names=list(nom.tier3), tier2_names=list(nom.tier2_names),
      tier1_names=list(nom.tier1_names), tier2_of=nom.tier2_of(), tier1_of=nom.tier1_of(),
      colors=list(nom.colors), months=months(t), bands=list(bands),
      mean=np.full((t, len(bands)), 1500, np.float32),
      std=np.full((t, len(bands)), 800, np.float32),
      class_pixel_counts=np.ones(K, np.int64), nomenclature_version=version,
      version="0.0.1")


def pixel_box(zone: Zone, r0: int, r1: int, c0: int, c1: int):
  """Polygon (zone CRS) covering pixel rows r0:r1 and columns c0:c1."""
  import shapely
  return shapely.box(zone.x0 + c0 * zone.res, zone.y0 - r1 * zone.res,
                     zone.x0 + c1 * zone.res, zone.y0 - r0 * zone.res)


def make_zone(folder, *, labels=True, seed=0, zone_id="testz_0", h=H, w=W,
              t=T, label_version="v1"):
  """A zone folder of h x w pixels, t months, a nodata hole, 10 x 10 parcels.

  The last two columns hold no parcel: a parcel whose block lies there keeps a
  2 m wide sliver there that holds no pixel centre (n_pixels 0), as in the RPG.
  """
  rng = np.random.default_rng(seed)
  zone = Zone(zone_id=zone_id, region="Testland", town="Testville", index=0,
              epsg=32631, x0=500000.0, y0=5000000.0, width=w, height=h, source="test")
  comp = rng.integers(100, 3000, (t, 4, h, w)).astype(np.uint16)
  comp[:, :, HOLE[0], HOLE[1]] = 0
  zonefolder.write_imagery(folder, zone, comp, np.ones((t, h, w), np.uint8), months(t))
  if labels:
    rr, cc = np.mgrid[:h, :w]
    parcels = ((rr // 10) * ((w + 9) // 10) + cc // 10 + 1).astype(np.uint32)
    parcels[:, -2:] = 0                                  # a strip without parcel
    n = int(parcels.max())
    cls = rng.integers(0, 23, n).astype(np.uint8)
    lab = np.where(parcels > 0, cls[np.maximum(parcels, 1) - 1], 255).astype(np.uint8)
    table = pd.DataFrame(dict(
        parcel_index=np.arange(1, n + 1), ID_PARCEL=[str(1000 + i) for i in range(n)],
        CODE_CULTU="BTH", CODE_GROUP="1", class_id=cls,
        class_name=[nomenclature.load().tier3[c] for c in cls], tier2="", tier1="",
        surf_parc_ha=1.0, area_m2=10000.0, n_pixels=np.bincount(parcels.ravel(),
                                                                minlength=n + 1)[1:]))
    pixels = np.bincount(lab.ravel(), minlength=256)
    zonefolder.write_labels(folder, zone, lab, parcels, table, dict(
        nomenclature=label_version,
        class_pixel_counts={n: int(pixels[k]) for k, n in enumerate(nomenclature.load().tier3)}),
        geometries=[_block(zone, i, h, w) for i in range(n)])
  return zonefolder.open_zone(folder)


def _block(zone: Zone, i: int, h: int, w: int):
  """The geometry of parcel i + 1 of make_zone: its 10 x 10 block left of the strip."""
  r0, c0 = divmod(i, (w + 9) // 10)
  r0, c0 = 10 * r0, 10 * c0
  r1, c1 = min(r0 + 10, h), min(c0 + 10, w - 2)
  if c1 > c0:
    return pixel_box(zone, r0, r1, c0, c1)
  import shapely
  x = zone.x0 + c0 * zone.res
  return shapely.box(x, zone.y0 - r1 * zone.res, x + 2.0, zone.y0 - r0 * zone.res)


class PixelModel(nn.Module):
  """1x1 convolution over the T*C values of each pixel (no spatial context)."""
  num_classes: int = 23

  @nn.compact
  def __call__(self, x, train=False):
    B, T_, H_, W_, C = x.shape
    x = x.transpose(0, 2, 3, 1, 4).reshape(B, H_, W_, T_ * C)
    return nn.Conv(self.num_classes, (1, 1))(x)


class ConvModel(nn.Module):
  """3x3 convolution: a receptive field of one pixel around each pixel."""
  num_classes: int = 23

  @nn.compact
  def __call__(self, x, train=False):
    B, T_, H_, W_, C = x.shape
    x = x.transpose(0, 2, 3, 1, 4).reshape(B, H_, W_, T_ * C)
    return nn.Conv(self.num_classes, (3, 3), padding="SAME")(x)


def init(model, t=T, size=16):
  variables = model.init(jax.random.PRNGKey(0), np.zeros((1, t, size, size, 4), np.float32))
  return (lambda v, x: model.apply(v, x)), variables
