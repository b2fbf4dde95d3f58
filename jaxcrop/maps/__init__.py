"""Crop-type maps of whole zones from a trained model (`python -m jaxcrop.predict`).

  checks.py   what zone, checkpoint, tiling and output must satisfy (UserError).
  tiling.py   predict_zone: fixed-shape tiles, batched over the local devices,
              blended with a cosine window into a seamless map (Prediction).
  parcels.py  the parcel product: majority class per parcel, RPG attributes, geometry.
  geotiff.py  write_outputs: COG GeoTIFFs + QGIS style + parcels.gpkg on the zone grid.

Outputs, on the zone's own grid, in `OUT/<zone_id>/`: see `jaxcrop.maps.geotiff` and
docs/predict.md.
"""
from jaxcrop.maps.geotiff import write_outputs
from jaxcrop.maps.parcels import parcel_product
from jaxcrop.maps.tiling import Prediction, predict_zone

__all__ = ["Prediction", "parcel_product", "predict_zone", "write_outputs"]
