"""Tiny synthetic zone folders for tests and benchmarks (not real data).

Written through prep.zonefolder like any zone, so the builder is tested on the
real format. Pixel values are random; the upper-left patch of every zone's
label raster is left unlabelled so that training folds have patches to drop.
"""
from __future__ import annotations

import pathlib

import numpy as np

from prep import zonefolder
from prep.zones import Zone

MONTHS = tuple(f"2023-{m:02d}" for m in range(1, 13))


def synthetic_zone(region: str, town: str, index: int, height: int, width: int) -> Zone:
  return Zone(zone_id=f"{town}_{index}", region=region, town=town, index=index,
              epsg=32631, x0=500000.0 + 10_000 * index, y0=5_500_000.0,
              width=width, height=height, source="synthetic")


def write_zone(root, zone: Zone, *, seed: int, months=MONTHS, empty: int = 16,
               nomenclature: str = "v1", num_classes: int = 23) -> pathlib.Path:
  """Writes one labelled zone folder under root; returns its path.

  Imagery: uint16 in [1, 3000) with ~5 % nodata zeros; labels: random classes,
  255 on ~20 % of pixels and on the [0:empty, 0:empty] corner; parcels: the four
  quadrants 1..4 (row-major), their geometries the quadrants' boxes.
  """
  import pandas as pd
  rng = np.random.default_rng(seed)
  T, (H, W) = len(months), zone.shape
  comp = rng.integers(1, 3000, (T, 4, H, W), dtype=np.uint16)
  comp[rng.random((T, 4, H, W)) < 0.05] = 0
  counts = rng.integers(0, 6, (T, H, W), dtype=np.uint8)
  labels = rng.integers(0, num_classes, (H, W)).astype(np.uint8)
  labels[rng.random((H, W)) < 0.2] = zonefolder.IGNORE
  labels[:empty, :empty] = zonefolder.IGNORE
  rr, cc = np.mgrid[:H, :W]
  parcels = (1 + 2 * (rr >= H // 2) + (cc >= W // 2)).astype(np.uint32)
  geometries = [_pixel_box(zone, r0, r1, c0, c1) for r0, r1 in ((0, H // 2), (H // 2, H))
                for c0, c1 in ((0, W // 2), (W // 2, W))]
  table = pd.DataFrame(dict(parcel_index=[1, 2, 3, 4], ID_PARCEL=["a", "b", "c", "d"],
                            CODE_CULTU=["BTH"] * 4, CODE_GROUP=["1"] * 4,
                            class_id=[0] * 4, class_name=["x"] * 4, tier2=["x"] * 4,
                            tier1=["x"] * 4, surf_parc_ha=[1.0] * 4,
                            area_m2=[1e4] * 4, n_pixels=[1] * 4))
  folder = pathlib.Path(root) / zone.zone_id
  zonefolder.write_imagery(folder, zone, comp, counts, list(months), {"source": "synthetic"})
  zonefolder.write_labels(folder, zone, labels, parcels, table,
                          {"nomenclature": nomenclature}, geometries=geometries)
  return folder


def _pixel_box(zone: Zone, r0: int, r1: int, c0: int, c1: int):
  """Polygon (zone CRS) covering pixel rows r0:r1 and columns c0:c1."""
  import shapely
  return shapely.box(zone.x0 + c0 * zone.res, zone.y0 - r1 * zone.res,
                     zone.x0 + c1 * zone.res, zone.y0 - r0 * zone.res)


def write_zones(root, *, regions=("Alpha", "Beta"), per_region: int = 4,
                height: int = 40, width: int = 36, months=MONTHS) -> pathlib.Path:
  """`per_region` zones (index 0..) in each region under root; returns root."""
  root = pathlib.Path(root)
  for r, region in enumerate(regions):
    for i in range(per_region):
      zone = synthetic_zone(region, region.lower(), i, height, width)
      write_zone(root, zone, seed=100 * r + i, months=months)
  return root
