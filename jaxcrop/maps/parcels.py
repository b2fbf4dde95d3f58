"""The parcel product: the majority predicted class of every parcel of a zone, with
its RPG attributes and geometry (one row per row of the zone's parcels.csv).

A parcel is declared farmland: with a background class (nomenclature v3 on) its
class is the majority of its pixels predicted a crop class, the pixels predicted
background left out of the vote; it is the background only when none of its
pixels is predicted a crop (`jaxcrop.metrics.parcel_class`, the rule of the
parcel-level scores too). `pred_share` stays the winner's share of all the
parcel's valid pixels, so a parcel mostly predicted background shows a low share.

Geometries come from the zone folder (parcels.gpkg, format jaxcrop-zone/2): predict
never reads the RPG. A labelled jaxcrop-zone/1 folder (written before parcels.gpkg
existed) is refused with the command that upgrades it (`python -m prep labels`).
"""
from __future__ import annotations

import numpy as np

from cropcontracts.zonefolder import ZoneFolder
from cropcontracts.errors import UserError
from jaxcrop.maps.tiling import NODATA, Prediction
from jaxcrop.metrics import parcel_class


def parcel_votes(parcels: np.ndarray, classes: np.ndarray, confidence: np.ndarray,
                 num_classes: int, num_parcels: int = 0, background: int | None = None) -> dict:
  """Majority predicted class per parcel, vectorized with bincount (the background,
  id `background`, only for a parcel without a crop vote: see the module doc).

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
  voted = parcel_class(votes, background)
  with np.errstate(invalid="ignore", divide="ignore"):
    return dict(pred_class=np.where(has, voted, NODATA).astype(np.uint8),
                pred_share=np.where(has, votes[np.arange(P), voted] / n, np.nan),
                mean_confidence=np.where(has, conf / n, np.nan),
                n_pred_pixels=n.astype(np.int64))


def parcel_geometries(zone: ZoneFolder, table):
  """GeoSeries (zone CRS) indexed by parcel_index, in the order of `table`: the
  zone folder's parcels.gpkg (what prep labels rasterized)."""
  check_geometries_source(zone)
  g = zone.read_parcel_geometries().set_index("parcel_index").geometry
  return g.reindex(table["parcel_index"].values)


def check_geometries_source(zone: ZoneFolder) -> None:
  """Raises UserError for a labelled jaxcrop-zone/1 folder: its parcel product
  has no geometries (format 2 folders carry parcels.gpkg)."""
  if zone.has_labels and not zone.has_parcel_geometries:
    raise UserError(
        f"zone {zone.zone_id} ({zone.path}) is a {zone.format} folder without "
        f"parcels.gpkg; rerun `python -m prep labels` for it (it writes the parcel "
        f"geometries into the zone folder)")


def parcel_product(zone: ZoneFolder, pred: Prediction, nomenclature):
  """GeoDataFrame (zone CRS): one row per parcel of the zone, its parcels.csv
  attributes + the prediction (parcel_votes, pred_name, correct) + its geometry
  (parcel_geometries)."""
  import geopandas as gpd
  parcels = zone.read_parcels()
  table = zone.parcel_table()
  idx = table["parcel_index"].to_numpy() - 1
  votes = parcel_votes(parcels, pred.classes, pred.confidence, nomenclature.num_classes,
                       int(idx.max()) + 1 if len(idx) else 0, nomenclature.background_id)
  for k, v in votes.items():
    table[k] = v[idx]
  names = np.array(list(nomenclature.tier3) + [""] * (256 - nomenclature.num_classes))
  table["pred_name"] = names[table["pred_class"].to_numpy()]
  if "class_id" in table:
    table["correct"] = (table["class_id"] == table["pred_class"]) & (table["class_id"] != NODATA)
  geoms = parcel_geometries(zone, table)
  return gpd.GeoDataFrame(table, geometry=geoms.values, crs=zone.zone.crs)
