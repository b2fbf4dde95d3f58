"""The parcel product as GeoParquet 1.1, with fiboa's core field names where they fit.

parcels.parquet, beside parcels.gpkg in a zone's map folder, holds the same rows
(one per parcel of the zone: `jaxcrop.maps.parcels.parcel_product`) and these
columns first:

  id                      the RPG parcel id (ID_PARCEL), fiboa core `id`
  area                    the parcel's area in hectares (fiboa core `area`),
                          from its polygon in the zone CRS
  determination_datetime  when the class was determined: the end of the season
                          mapped (fiboa core; UTC)
  pred_class, pred_name   the tier-3 class the parcel's pixels vote (255 / "" for
                          none); pred_tier2_name, pred_tier1_name: its group and
                          family
  confidence              the mean confidence of its pixels, percent (calibrated
                          when the model has a temperature)

then the other columns of parcels.gpkg (RPG attributes and the RPG's class_id,
pred_share, n_pred_pixels, …) and the geometry. GeoParquet 1.1 (`schema_version="1.1.0"`,
with the bbox covering column), WKB geometries, the zone's CRS.
"""
from __future__ import annotations

import datetime as dt

import numpy as np

from jaxcrop import hierarchy
from jaxcrop.maps.tiling import NODATA

FILE = "parcels.parquet"


def tier_names(classes: np.ndarray, nomenclature) -> dict:
  """{"pred_name", "pred_tier2_name", "pred_tier1_name"}: str [P] of tier-3 ids
  uint8 [P] (255 → "")."""
  c = np.asarray(classes).astype(np.int64)
  ok = c != NODATA
  out = {}
  for key, names, parents in (
      ("pred_name", nomenclature.tier3, np.arange(len(nomenclature.tier3))),
      ("pred_tier2_name", nomenclature.tier2_names, nomenclature.tier2_of()),
      ("pred_tier1_name", nomenclature.tier1_names, nomenclature.tier1_of())):
    col = np.full(len(c), "", dtype=object)
    col[ok] = np.asarray(names, dtype=object)[hierarchy.to_tier(c[ok], parents)]
    out[key] = col
  return out


def fiboa_frame(gdf, nomenclature, determined: dt.datetime):
  """The GeoDataFrame of parcels.parquet from parcel_product's `gdf` (see the module doc)."""
  import geopandas as gpd
  import pandas as pd
  first = pd.DataFrame({"id": gdf["ID_PARCEL"].astype(str).values,
                        "area": gdf.geometry.area.values / 1e4,
                        "determination_datetime": pd.Timestamp(determined),
                        "pred_class": gdf["pred_class"].values,
                        **tier_names(gdf["pred_class"].values, nomenclature),
                        "confidence": gdf["mean_confidence"].values})
  rest = gdf.drop(columns=["geometry", "pred_class", "pred_name", "mean_confidence"],
                  errors="ignore").reset_index(drop=True)
  return gpd.GeoDataFrame(pd.concat([first, rest], axis=1), geometry=gdf.geometry.values,
                          crs=gdf.crs)


def write(gdf, path, nomenclature, determined: dt.datetime) -> None:
  """Writes parcels.parquet (GeoParquet 1.1) of parcel_product's `gdf` at path."""
  import warnings
  frame = fiboa_frame(gdf, nomenclature, determined)
  with warnings.catch_warnings():   # pyarrow reads the UTC column through a pandas API
    warnings.filterwarnings(        # that pandas 3.1 deprecates: theirs, not the user's
        "ignore", message="Series.values returning an ndarray that drops timezone")
    frame.to_parquet(path, index=False, schema_version="1.1.0", write_covering_bbox=True)
