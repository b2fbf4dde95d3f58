"""Crop-type maps of whole zones from a trained model (`python -m jaxcrop.predict`).

  compatibility.py  whether a checkpoint fits the zones, the tile and this code's
                    nomenclature (UserError, checked once before any model work).
  tiling.py         MapSettings; the pipeline read_imagery → cut_tiles → ZoneMapper
                    (fixed-shape tiles, batched over the local devices, blended with
                    a cosine window) → finish: a seamless map (Prediction).
  parcels.py        the parcel product: majority class per parcel, RPG attributes, geometry.
  geotiff.py        write_outputs: COG GeoTIFFs + QGIS style + parcels.gpkg on the zone
                    grid, renamed into place as one folder.
  runner.py         many zones: each process its share, reading, model and writing
                    overlapped, --resume.
  national.py       the national product from the zone maps (`python -m jaxcrop.mosaic`).

Outputs, on the zone's own grid, in `OUT/<zone_id>/`: see `jaxcrop.maps.geotiff` and
docs/predict.md.
"""
from jaxcrop.maps.geotiff import write_outputs
from jaxcrop.maps.parcels import parcel_product
from jaxcrop.maps.tiling import MapSettings, Prediction, ZoneMapper, predict_zone

__all__ = ["MapSettings", "Prediction", "ZoneMapper", "parcel_product", "predict_zone",
           "write_outputs"]
