"""The parcel product: the majority predicted class of every parcel of a zone, with
its RPG attributes and geometry (one row per row of the zone's parcels.csv)."""
from __future__ import annotations

import pathlib

import numpy as np

from jaxcrop.maps.checks import PredictError
from jaxcrop.maps.tiling import NODATA, Prediction
from prep.zonefolder import ZoneFolder


def check_rpg(path) -> None:
  """Fails before any prediction on an RPG file that is missing or unreadable."""
  from prep.labels import find_layer
  p = pathlib.Path(path)
  if not p.exists():
    raise PredictError(f"{p}: RPG file not found (--rpg); pass the RPG file used by prep, "
                       f"or leave --rpg out to polygonize the parcel raster")
  find_layer(p)


def parcel_votes(parcels: np.ndarray, classes: np.ndarray, confidence: np.ndarray,
                 num_classes: int, num_parcels: int = 0) -> dict:
  """Majority predicted class per parcel, vectorized with bincount.

  Args:
    parcels: uint32 [H, W] 1-based parcel index, 0 = none.
    classes: uint8 [H, W] predicted class, 255 = nodata (not counted).
    confidence: uint8 [H, W] percent.
    num_classes: K.
    num_parcels: P at least (parcels without a pixel get empty votes).
  Returns:
    dict of arrays [P] for parcel indices 1..P: `pred_class` (255 when no valid
    pixel), `pred_share` (fraction of the parcel's valid pixels voting for it),
    `mean_confidence` (percent), `n_pred_pixels` (valid pixels).
  """
  P = max(num_parcels, int(parcels.max()) if parcels.size else 0)
  ok = (parcels > 0) & (classes != NODATA)
  p = parcels[ok].astype(np.int64)
  votes = np.bincount(p * num_classes + classes[ok], minlength=(P + 1) * num_classes)
  votes = votes.reshape(P + 1, num_classes)[1:]
  n = votes.sum(1)
  conf = np.bincount(p, weights=confidence[ok].astype(np.float64), minlength=P + 1)[1:]
  has = n > 0
  with np.errstate(invalid="ignore", divide="ignore"):
    return dict(pred_class=np.where(has, votes.argmax(1), NODATA).astype(np.uint8),
                pred_share=np.where(has, votes.max(1) / n, np.nan),
                mean_confidence=np.where(has, conf / n, np.nan),
                n_pred_pixels=n.astype(np.int64))


def parcel_geometries(zone: ZoneFolder, parcels: np.ndarray, table, rpg=None):
  """GeoSeries (zone CRS) indexed by parcel_index: the RPG polygons when `rpg` is
  given (joined on ID_PARCEL), else the polygonized parcel raster."""
  import geopandas as gpd
  if rpg is not None:
    gdf = _read_rpg(rpg, zone)
    gdf = gdf.drop_duplicates("ID_PARCEL").set_index("ID_PARCEL")
    ids = table["ID_PARCEL"].astype(str).str.strip()
    geoms = gdf.geometry.to_crs(zone.zone.crs).reindex(ids.values)
    if geoms.isna().all():
      raise PredictError(f"{rpg}: none of zone {zone.zone_id}'s {len(ids)} parcels "
                         f"(ID_PARCEL) are in this file; pass the RPG file used by prep")
    return gpd.GeoSeries(geoms.values, index=table["parcel_index"].values,
                         crs=zone.zone.crs)
  import rasterio.features
  import shapely.geometry
  shapes = rasterio.features.shapes(parcels.astype(np.int32), mask=parcels > 0,
                                    transform=zone.zone.transform)
  polys = [(shapely.geometry.shape(g), int(v)) for g, v in shapes]
  g = gpd.GeoDataFrame({"parcel_index": [v for _, v in polys]},
                       geometry=[s for s, _ in polys], crs=zone.zone.crs)
  g = g.dissolve(by="parcel_index")
  return g.geometry.reindex(table["parcel_index"].values)


def _read_rpg(path, zone: ZoneFolder):
  """RPG parcels meeting the zone (bbox read, field checks: prep.labels)."""
  from prep.labels import read_rpg
  return read_rpg(pathlib.Path(path), zone.zone)


def parcel_product(zone: ZoneFolder, pred: Prediction, nomenclature, rpg=None):
  """GeoDataFrame: one row per parcel of the zone, RPG attributes + prediction."""
  import geopandas as gpd
  parcels = zone.read_parcels()
  table = zone.parcel_table()
  idx = table["parcel_index"].to_numpy() - 1
  votes = parcel_votes(parcels, pred.classes, pred.confidence, nomenclature.num_classes,
                       int(idx.max()) + 1 if len(idx) else 0)
  for k, v in votes.items():
    table[k] = v[idx]
  names = np.array(list(nomenclature.tier3) + [""] * (256 - nomenclature.num_classes))
  table["pred_name"] = names[table["pred_class"].to_numpy()]
  if "class_id" in table:
    table["correct"] = (table["class_id"] == table["pred_class"]) & (table["class_id"] != NODATA)
  geoms = parcel_geometries(zone, parcels, table, rpg)
  return gpd.GeoDataFrame(table, geometry=geoms.values, crs=zone.zone.crs)
