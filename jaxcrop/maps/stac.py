"""STAC metadata of the maps: an Item per zone map, a Collection over the national mosaic.

The ecosystem finds rasters through STAC (SpatioTemporal Asset Catalog). Each
zone's map folder holds `item.json`, a STAC 1.x Item (written with pystac, inside
the map folder's temporary name, so it appears with the maps or not at all):

  id            the zone id; geometry/bbox: the zone's square in WGS 84;
  datetime      null, with start_datetime / end_datetime: the season (first day
                of the first month, last day of the last month of the composites);
  properties    jaxcrop:checkpoint_step, jaxcrop:checkpoint (best | last),
                jaxcrop:nomenclature, jaxcrop:dataset, jaxcrop:dataset_version,
                jaxcrop:temperature (`jaxcrop.calibrate`), proj:code, proj:shape,
                proj:transform (the zone grid);
  assets        classes (+ classes_tier1/2) with the classification extension
                (class values, names, colours), confidence, validity and
                probabilities (+ tiers) with the raster extension (uint8, nodata
                255, scale 0.01 for percent), parcels (GeoPackage, GeoParquet),
                map.json.

Extensions: projection v2.0.0, raster v1.1.0, classification v2.0.0 (the
versions of pystac 1.15). Asset hrefs are relative, so a map folder can move.

The national product (`python -m jaxcrop.mosaic`) gets `collection.json`: a
Collection whose items are the zone Items (linked where they lie, relative
hrefs) and whose assets are the national COGs. A STAC file that cannot be
written (a read-only folder) is one UserError line.

The tests validate the Items and the Collection against STAC core's JSON schemas
offline (pystac's own copies, `jsonschema`); the extensions' schemas are not
shipped, so their fields are checked by round trip and by value (docs/evidence.md).
"""
from __future__ import annotations

import calendar
import datetime as dt
import json
import os
import pathlib

from cropcontracts import atomic
from cropcontracts.errors import UserError
from jaxcrop.hierarchy import tier_legend
from jaxcrop.maps.tiling import NODATA

ITEM = "item.json"
COLLECTION = "collection.json"
PREFIX = "jaxcrop"
MEDIA = {".tif": "image/tiff; application=geotiff; profile=cloud-optimized",
         ".gpkg": "application/geopackage+sqlite3",
         ".parquet": "application/vnd.apache.parquet",
         ".json": "application/json"}


def season(months) -> tuple[dt.datetime, dt.datetime]:
  """(start, end) UTC of the composites' months ("YYYY-MM" strings): the first
  day of the first month, the last second of the last one."""
  y0, m0 = map(int, months[0].split("-")[:2])
  y1, m1 = map(int, months[-1].split("-")[:2])
  last = calendar.monthrange(y1, m1)[1]
  return (dt.datetime(y0, m0, 1, tzinfo=dt.timezone.utc),
          dt.datetime(y1, m1, last, 23, 59, 59, tzinfo=dt.timezone.utc))


def class_list(nomenclature, tier: int = 3) -> list[dict]:
  """classification:classes of a tier map: value, name, color_hint (RRGGBB)."""
  names, colors = tier_legend(nomenclature, tier)
  return [{"value": k, "name": n, "color_hint": c.lstrip("#").upper()}
          for k, (n, c) in enumerate(zip(names, colors))]


def _band(name: str, unit: str | None = None):
  """A raster:bands entry of a uint8 band, nodata 255, 10 m; `name` as STAC 1.1's
  band name (the GeoTIFF band description)."""
  from pystac.extensions.raster import DataType, RasterBand
  band = RasterBand.create(nodata=NODATA, data_type=DataType.UINT8, spatial_resolution=10.0,
                           unit=unit)
  band.properties["name"] = name
  return band


def zone_item(folder, zone, nomenclature, months, model: dict | None = None):
  """The pystac.Item of a zone's map folder (the files it holds: see the module doc)."""
  item = _zone_item_without_assets(zone, nomenclature, months, model)
  _add_map_assets(item, pathlib.Path(folder), nomenclature)
  return item


def _zone_item_without_assets(zone, nomenclature, months, model: dict | None):
  """The Item of a zone (a Zone or a ZoneFolder): footprint, season, the model's
  properties, projection; the raster and classification extensions declared."""
  import pystac
  from pystac.extensions.classification import ClassificationExtension
  from pystac.extensions.projection import ProjectionExtension
  from pystac.extensions.raster import RasterExtension
  from shapely.geometry import box, mapping
  z = zone.zone if hasattr(zone, "zone") else zone
  bbox = list(z.bounds_in("EPSG:4326"))
  start, end = season(months)
  model = model or {}
  props = {f"{PREFIX}:nomenclature": nomenclature.version,
           f"{PREFIX}:checkpoint_step": model.get("step"),
           f"{PREFIX}:checkpoint": model.get("checkpoint"),
           f"{PREFIX}:dataset": model.get("dataset"),
           f"{PREFIX}:dataset_version": model.get("dataset_version"),
           f"{PREFIX}:temperature": model.get("temperature"),
           "region": z.region}
  item = pystac.Item(z.zone_id, mapping(box(*bbox)), bbox, None, props,
                     start_datetime=start, end_datetime=end)
  proj = ProjectionExtension.ext(item, add_if_missing=True)
  proj.apply(code=f"EPSG:{z.epsg}", shape=[z.height, z.width],
             transform=list(z.transform)[:6], bbox=list(z.bounds))
  RasterExtension.add_to(item)
  ClassificationExtension.add_to(item)
  return item


def _add_map_assets(item, folder: pathlib.Path, nomenclature) -> None:
  """Adds to `item` an asset for each map file `folder` holds, with its bands and classes."""
  import pystac
  from pystac.extensions.classification import ClassificationExtension
  from pystac.extensions.raster import RasterExtension
  files = {p.name for p in folder.iterdir()}

  def add(key, name, title, roles):
    if name in files:
      item.add_asset(key, pystac.Asset(f"./{name}", title=title,
                                       media_type=MEDIA[pathlib.Path(name).suffix],
                                       roles=roles))
      return item.assets[key]
    return None

  for tier, suffix in ((3, ""), (2, "_tier2"), (1, "_tier1")):
    a = add(f"classes{suffix}", f"classes{suffix}.tif", f"tier-{tier} crop class",
            ["data"])
    if a is not None:
      ClassificationExtension.ext(a).apply(
          classes=[pystac.extensions.classification.Classification.create(**c)
                   for c in class_list(nomenclature, tier)])
      RasterExtension.ext(a).apply([_band(f"tier-{tier} class")])
  a = add("confidence", "confidence.tif", "confidence (max probability, percent)",
          ["data", "quality"])
  if a is not None:
    RasterExtension.ext(a).apply([_band("confidence", "percent")])
  a = add("validity", "validity.tif",
          "clear acquisitions in the season, gap-filled months", ["data", "quality"])
  if a is not None:
    from jaxcrop.maps.validity import BANDS
    RasterExtension.ext(a).apply([_band(n, "count") for n in BANDS])
  for tier, suffix in ((3, ""), (2, "_tier2"), (1, "_tier1")):
    a = add(f"probabilities{suffix}", f"probabilities{suffix}.tif",
            f"tier-{tier} class probabilities (percent)", ["data"])
    if a is not None:
      RasterExtension.ext(a).apply([_band(n, "percent")
                                    for n in tier_legend(nomenclature, tier)[0]])
  add("parcels", "parcels.gpkg", "parcels: majority class (GeoPackage)", ["data"])
  add("parcels_parquet", "parcels.parquet", "parcels: majority class (GeoParquet 1.1)",
      ["data"])
  files.add("map.json")           # written last, after the Item: the completeness record
  add("map_json", "map.json", "jaxcrop map record", ["metadata"])


def write_json(path, obj: dict, what: str) -> pathlib.Path:
  """Writes obj as JSON at path, whole (`atomic.write_text`); a folder that cannot be
  written is one UserError line naming it."""
  path = pathlib.Path(path)
  try:
    atomic.write_text(path, json.dumps(obj, indent=1))
  except PermissionError as e:
    raise UserError(f"{path.parent}: cannot write the STAC {what} {path.name} "
                    f"({os.strerror(e.errno) if e.errno else e}); make the folder "
                    f"writable or choose another --out") from None
  return path


def write_item(folder, zone, nomenclature, months, model: dict | None = None) -> pathlib.Path:
  """folder/item.json: `zone_item`, asset hrefs relative to the folder."""
  item = zone_item(folder, zone, nomenclature, months, model)
  return write_json(pathlib.Path(folder) / ITEM, item.to_dict(include_self_link=False),
                    "Item")


def national_collection(maps, out, products, *,
                        description: str = "") -> pathlib.Path | None:
  """out/collection.json: a Collection over the zone Items of `maps` ((zone, folder)
  pairs whose folder holds item.json) with the national COGs france_<product>.tif
  as assets; links relative to out. None (nothing written) when no map has an Item."""
  import pystac
  out = pathlib.Path(out)
  items = [pystac.Item.from_file(str(folder / ITEM)) for _, folder in maps
           if (folder / ITEM).is_file()]
  if not items:
    return None
  bbox = [min(i.bbox[0] for i in items), min(i.bbox[1] for i in items),
          max(i.bbox[2] for i in items), max(i.bbox[3] for i in items)]
  starts = [i.common_metadata.start_datetime for i in items]
  ends = [i.common_metadata.end_datetime for i in items]
  collection = pystac.Collection(
      "jaxcrop-national", description or "Crop-type maps of the zones and their "
      "national mosaic (jaxcrop)", pystac.Extent(
          pystac.SpatialExtent([bbox]), pystac.TemporalExtent([[min(starts), max(ends)]])),
      title="jaxcrop national crop-type map", license="other")
  for p in products:
    name = f"france_{p}.tif"
    if (out / name).is_file():
      collection.add_asset(p, pystac.Asset(f"./{name}", media_type=MEDIA[".tif"],
                                           roles=["data"], title=f"national {p} (EPSG:2154)"))
  d = collection.to_dict(include_self_link=False)
  d["links"] = [l for l in d["links"] if l["rel"] != "root"] + [
      {"rel": "root", "href": f"./{COLLECTION}", "type": "application/json"}] + [
      {"rel": "item", "href": os.path.relpath(folder / ITEM, out), "type": "application/json",
       "title": z.zone_id} for z, folder in maps if (folder / ITEM).is_file()]
  return write_json(out / COLLECTION, d, "Collection")
