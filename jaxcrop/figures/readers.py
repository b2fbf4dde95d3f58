"""Reading what the figures draw: a prediction folder's classes.tif (checked against
the zone's grid) and an evaluation's metrics.json, with one-line errors."""
from __future__ import annotations

import json
import pathlib

import numpy as np

from cropcontracts import nomenclature as nomenclature_lib
from cropcontracts.errors import UserError


def read_classes(pred_dir, zone=None) -> tuple[np.ndarray, str | None]:
  """(uint8 [H, W] classes.tif of a prediction folder, its NOMENCLATURE tag or None);
  with `zone`, refuses a map of another zone (a different grid: CRS, geotransform or
  size)."""
  import rasterio
  p = pathlib.Path(pred_dir) / "classes.tif"
  if not p.is_file():
    raise UserError(f"{p}: not found; run `python -m jaxcrop.predict` first (--pred is "
                    f"OUT/<zone_id>)")
  with rasterio.open(p) as src:
    if zone is not None and (src.crs != zone.zone.crs or
                             not src.transform.almost_equals(zone.zone.transform)):
      raise UserError(f"{p}: map is not on zone {zone.zone_id}'s grid (another zone's "
                      f"prediction?); pass --pred OUT/{zone.zone_id}")
    if zone is not None and src.shape != zone.zone.shape:
      raise UserError(f"{p}: map {src.shape} is not on zone {zone.zone_id}'s grid "
                      f"{zone.zone.shape}; pass the prediction of this zone")
    return src.read(1), src.tags().get("NOMENCLATURE")


def read_metrics(path) -> dict:
  """metrics.json of jaxcrop.evaluate, checked (jaxcrop.metrics.read_metrics)."""
  from jaxcrop.metrics import read_metrics as read  # pylint: disable=g-import-not-at-top
  return read(path)


def map_nomenclature(map_version: str | None, zone):
  """The nomenclature of a map: its NOMENCLATURE tag, else the zone's labels', else
  the default one."""
  return nomenclature_lib.load(map_version or zone.nomenclature or nomenclature_lib.VERSION)
