"""Synthetic zone folders for tests and benchmarks: random reflectances, square parcels.

`write_zone` writes one folder, `write_zones` a dataset's worth of them (regions x zones),
both through `cropcontracts.zonefolder` like any zone, so every stage is tested and timed
on the real format. Nothing here is real data, nor the demo region (`make_demo`): these are
the small, fast folders of the test suite and of `python -m benchmarks data`, with the
shapes and holes the tests count on (H, W, T, HOLE, BLOCK, STRIP below).
"""
from __future__ import annotations

import pathlib

import numpy as np
import pandas as pd

from cropcontracts import nomenclature, zonefolder
from cropcontracts.zone import Zone
from prep import labels as labels_lib

H, W, T = 40, 52, 3                    # the default zone: 40 x 52 px, 3 months
MONTHS = tuple(zonefolder.month_labels(2023))
HOLE = (slice(5, 9), slice(10, 20))    # rows, cols with no observation at all
BLOCK = 10                             # parcels are BLOCK x BLOCK squares
STRIP = 2                              # the last STRIP columns hold no parcel
MARGIN = 0                             # background from the strip's first clean column


def months(t=T):
  return list(MONTHS[:t])


def synthetic_zone(zone_id: str = "testz_0", *, region: str = "Testland", index: int = 0,
                   height: int = H, width: int = W) -> Zone:
  """A zone of the synthetic grid (EPSG:32631); zones of other indices lie 10 km apart."""
  return Zone(zone_id=zone_id, region=region, town=zone_id.rpartition("_")[0] or zone_id,
              index=index, epsg=32631, x0=500000.0 + 10_000 * index, y0=5_500_000.0,
              width=width, height=height, source="synthetic")


def write_zone(folder, zone: Zone | None = None, *, seed: int = 0, months=MONTHS[:T],
               labels: bool = True, nodata: float = 0.0, unlabelled: float = 0.0,
               empty: int = 0, version: str = nomenclature.VERSION,
               margin: int = MARGIN) -> zonefolder.ZoneFolder:
  """Writes one synthetic zone folder at `folder` and opens it.

  zone: default `synthetic_zone()`. Imagery: uint16 in [100, 3000), T x 4
  bands, 0 (nodata) on every band of every month over HOLE and on a `nodata`
  fraction of the single values; valid_count 1..5, 0 over HOLE. With labels:
  parcels are the BLOCK x BLOCK squares (1-based, row-major), none in the last
  STRIP columns: a parcel whose block lies there keeps a 2 m wide sliver of
  geometry there that holds no pixel centre (n_pixels 0), as in the RPG. Each
  parcel has one random crop class of the `version` nomenclature. Outside the
  parcels, `prep labels`' rule (`prep.labels.near_parcels`): the background
  class (from v3) where a cell holds no part of a parcel and lies more than
  `margin` pixels from one (default 0: the default zone's strip then has one
  background column, column 51, beside the sliver's; `write_zones`' zones two,
  34 and 35), else 255. 255 also on an `unlabelled` fraction of the pixels and
  on the [:empty, :empty] corner. meta.json records the class pixel counts,
  the margin, the land cover (none) and the background pixels.
  """
  zone = zone or synthetic_zone()
  rng = np.random.default_rng(seed)
  t, (h, w) = len(months), zone.shape
  comp = rng.integers(100, 3000, (t, 4, h, w)).astype(np.uint16)
  comp[rng.random(comp.shape) < nodata] = zonefolder.NODATA
  comp[:, :, HOLE[0], HOLE[1]] = zonefolder.NODATA
  counts = rng.integers(1, 6, (t, h, w)).astype(np.uint8)
  counts[:, HOLE[0], HOLE[1]] = 0
  zonefolder.write_imagery(folder, zone, comp, counts, list(months), {"source": "synthetic"})
  if labels:
    nom = nomenclature.load(version)
    per_row = (w + BLOCK - 1) // BLOCK
    rr, cc = np.mgrid[:h, :w]
    parcels = ((rr // BLOCK) * per_row + cc // BLOCK + 1).astype(np.uint32)
    parcels[:, w - STRIP:] = 0
    n = per_row * ((h + BLOCK - 1) // BLOCK)
    cls = np.asarray(nom.crop_ids, np.uint8)[rng.integers(0, len(nom.crop_ids), n)]
    lab = np.where(parcels > 0, cls[np.maximum(parcels, 1) - 1],
                   zonefolder.NO_LABEL).astype(np.uint8)
    geoms = np.array([_block(zone, i) for i in range(n)], dtype=object)
    if nom.background_id is not None:
      lab[~labels_lib.near_parcels(geoms, zone, margin)] = nom.background_id
    lab[rng.random((h, w)) < unlabelled] = zonefolder.NO_LABEL
    lab[:empty, :empty] = zonefolder.NO_LABEL
    table = pd.DataFrame(dict(
        parcel_index=np.arange(1, n + 1), ID_PARCEL=[str(1000 + i) for i in range(n)],
        CODE_CULTU="BTH", CODE_GROUP="1", class_id=cls,
        class_name=[nom.tier3[c] for c in cls], tier2="", tier1="",
        surf_parc_ha=1.0, area_m2=10000.0,
        n_pixels=np.bincount(parcels.ravel(), minlength=n + 1)[1:]))
    pixels = np.bincount(lab.ravel(), minlength=256)
    background = int(pixels[nom.background_id]) if nom.background_id is not None else 0
    zonefolder.write_labels(folder, zone, lab, parcels, table, dict(
        nomenclature=version, margin=margin, landcover=dict(source="none"),
        background_pixels=background,
        class_pixel_counts={name: int(pixels[k]) for k, name in enumerate(nom.tier3)}),
        geometries=geoms)
  return zonefolder.open_zone(folder)


def write_zones(root, *, regions=("Alpha", "Beta"), per_region: int = 4,
                height: int = 40, width: int = 36, months=MONTHS) -> pathlib.Path:
  """A dataset's zones under root: `per_region` zones (index 0..) per region,
  each with 5 % nodata values, 20 % unlabelled pixels and an unlabelled
  16 x 16 corner (one patch of 16 px without a label); returns root."""
  root = pathlib.Path(root)
  for r, region in enumerate(regions):
    for i in range(per_region):
      zone = synthetic_zone(f"{region.lower()}_{i}", region=region, index=i,
                            height=height, width=width)
      write_zone(root / zone.zone_id, zone, seed=100 * r + i, months=months,
                 nodata=0.05, unlabelled=0.2, empty=16)
  return root


def pixel_box(zone: Zone, r0: int, r1: int, c0: int, c1: int):
  """Polygon (zone CRS) covering pixel rows r0:r1 and columns c0:c1."""
  import shapely
  return shapely.box(zone.x0 + c0 * zone.res, zone.y0 - r1 * zone.res,
                     zone.x0 + c1 * zone.res, zone.y0 - r0 * zone.res)


def _block(zone: Zone, i: int):
  """The geometry of parcel i + 1 of write_zone: its block left of the strip."""
  h, w = zone.shape
  r0, c0 = divmod(i, (w + BLOCK - 1) // BLOCK)
  r0, c0 = BLOCK * r0, BLOCK * c0
  r1, c1 = min(r0 + BLOCK, h), min(c0 + BLOCK, w - STRIP)
  if c1 > c0:
    return pixel_box(zone, r0, r1, c0, c1)
  import shapely
  x = zone.x0 + c0 * zone.res
  return shapely.box(x, zone.y0 - r1 * zone.res, x + 2.0, zone.y0 - r0 * zone.res)
