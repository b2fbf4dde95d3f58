"""Writing a zone's maps: Cloud-Optimized GeoTIFFs on the zone grid, the QGIS style
and the parcel GeoPackage, assembled in a temporary folder renamed when complete.

  classes.tif        uint8 tier-3 class ids, 255 = nodata, colour table, names.
  classes.qml        QGIS style of classes.tif (palette with class names).
  classes_tier{1,2}.tif/.qml  (with tier maps) uint8 tier-1 / tier-2 ids, the same
                     layout; names from the nomenclature, each group / family in
                     the colour of its first tier-3 class (`tier_legend`).
  confidence.tif     uint8 max softmax probability in percent, 255 = nodata.
  probabilities.tif  (with probabilities) uint8 [K bands] probability in percent
                     (0-100; tags PROBABILITY_SCALE=100), one band per class named
                     by its class name, 255 = nodata; calibrated when the model has
                     a temperature (`jaxcrop.calibrate`).
  probabilities_tier{1,2}.tif  (with probabilities and tier maps) the same for the
                     tier-1 families / tier-2 groups (a group's probability: the sum
                     of its classes').
  validity.tif       uint8 [2 bands] clear acquisitions in the season, gap-filled
                     months (`jaxcrop.maps.validity`), 255 = nodata.
  parcels.gpkg       (zones with parcels) majority class per parcel.
  parcels.parquet    (zones with parcels) the same as GeoParquet 1.1 with fiboa's
                     core names (`jaxcrop.maps.geoparquet`).
  item.json          the STAC Item of the folder (`jaxcrop.maps.stac`).
  map.json           the zone row, the nomenclature, the model, the validity
                     summary and the files above (what
                     `jaxcrop.maps.runner.is_complete` and the national mosaic read);
                     for an in-season map, `until`: the last month it saw; with
                     season alignment, `season_shift_months` (jaxcrop.season_shift).
All rasters are COGs (deflate, 256 tiles, overviews).
"""
from __future__ import annotations

import json
import pathlib
from typing import Sequence

import numpy as np

from cropcontracts import atomic
from cropcontracts.errors import UserError
from cropcontracts.zonefolder import ZoneFolder
from jaxcrop.hierarchy import tier_legend
from jaxcrop.maps import geoparquet, stac, validity
from jaxcrop.maps.parcels import parcel_product
from jaxcrop.maps.tiling import NODATA, Prediction

BLOCK = 256
MAP_JSON = "map.json"
# The scale of probabilities*.tif: a band's value / 100 is the class's probability.
PROBABILITY_TAGS = {"PROBABILITY_SCALE": "100", "PROBABILITY_UNIT": "percent",
                    "PROBABILITY_NODATA": "255"}


def _cog(tmpdir: pathlib.Path, path: pathlib.Path, zone: ZoneFolder, bands: np.ndarray,
         resampling: str, descriptions: Sequence[str], tags: dict | None = None,
         colormap: dict | None = None) -> None:
  """Writes uint8 [N, H, W] as a Cloud-Optimized GeoTIFF on the zone grid.

  A plain GTiff is written first (colour table, tags, descriptions), then copied
  with GDAL's COG driver, which adds the overviews and the COG layout.
  """
  import rasterio
  import rasterio.shutil
  src = tmpdir / f".{path.name}.src.tif"
  z = zone.zone
  with rasterio.open(src, "w", driver="GTiff", count=bands.shape[0], dtype="uint8",
                     width=z.width, height=z.height, crs=z.crs, transform=z.transform,
                     nodata=NODATA) as dst:
    dst.write(bands)
    for i, d in enumerate(descriptions):
      dst.set_band_description(i + 1, d)
    if tags:
      dst.update_tags(**tags)
    if colormap:
      dst.write_colormap(1, colormap)
  rasterio.shutil.copy(src, path, driver="COG", compress="DEFLATE", blocksize=BLOCK,
                       overview_resampling=resampling, overviews="AUTO")
  src.unlink()


def class_tags(nomenclature, tier: int = 3) -> dict:
  """GeoTIFF metadata naming the classes: CLASS_NAMES (JSON list) and CLASS_<k>
  (+ TIER)."""
  names, _ = tier_legend(nomenclature, tier)
  tags = {"CLASS_NAMES": json.dumps(names), "NOMENCLATURE": nomenclature.version,
          "TIER": str(tier)}
  tags.update({f"CLASS_{k}": n for k, n in enumerate(names)})
  return tags


def qgis_style(nomenclature, tier: int = 3) -> str:
  """A QGIS layer style (.qml) for classes.tif (or a tier map): a paletted
  renderer with the class names as labels. QGIS applies `<name>.qml` beside a
  raster as its default style, so the map opens with its legend; GDAL's colour
  table alone gives colours but shows values, not names."""
  from xml.sax.saxutils import quoteattr
  entries = "\n".join(
      f'        <paletteEntry value="{k}" color="{color}" alpha="255" label={quoteattr(name)}/>'
      for k, (name, color) in enumerate(zip(*tier_legend(nomenclature, tier))))
  return f"""<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.28" styleCategories="Symbology">
  <pipe>
    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1">
      <rasterTransparency/>
      <colorPalette>
{entries}
      </colorPalette>
    </rasterrenderer>
  </pipe>
</qgis>
"""


def colormap(nomenclature, tier: int = 3) -> dict:
  """GDAL colour table: class id → (r, g, b, 255); nodata transparent."""
  _, colors = tier_legend(nomenclature, tier)
  cmap = {k: tuple(int(c[i:i + 2], 16) for i in (1, 3, 5)) + (255,)
          for k, c in enumerate(colors)}
  cmap[NODATA] = (0, 0, 0, 0)
  return cmap


def check_output(folder, overwrite: bool) -> None:
  """Raises UserError when the map folder `folder` exists and `overwrite` is not given
  (the command checks every zone's before any work)."""
  if pathlib.Path(folder).exists() and not overwrite:
    raise _exists(folder)


def _exists(folder) -> UserError:
  return UserError(f"{folder}: output folder already exists; pass --overwrite to "
                   f"replace it or choose another --out")


def write_outputs(zone: ZoneFolder, pred: Prediction, nomenclature, out_dir, *,
                  overwrite: bool = False, model: dict | None = None,
                  until: str | None = None) -> pathlib.Path:
  """Writes OUT/<zone_id>/{classes,confidence[,probabilities]}.tif, classes.qml
  (QGIS style) [+ classes_tier{1,2}.{tif,qml} when pred.tiers] [+ parcels.gpkg],
  validity.tif, item.json (STAC Item, `jaxcrop.maps.stac`) and map.json; `model`
  (checkpoint, step, dataset, dataset_version, temperature) goes to both; `until`
  (the last month an in-season map saw, when given) to map.json.

  The folder is assembled under a temporary name beside it and renamed into
  place when complete (`atomic.atomic_folder`); an existing folder is replaced
  only with `overwrite`. The temporaries of runs killed in `out_dir` go first
  (`atomic.claim`).
  """
  final = pathlib.Path(out_dir) / zone.zone_id
  try:
    with atomic.claim(final.parent, shared=True, patterns=(atomic.PARTIAL, ".*.old")), \
        atomic.atomic_folder(final, overwrite=overwrite) as tmp:
      _write_files(tmp, zone, pred, nomenclature, model, until)
  except FileExistsError:
    raise _exists(final) from None
  return final


def _write_files(folder: pathlib.Path, zone: ZoneFolder, pred: Prediction,
                 nomenclature, model: dict | None = None, until: str | None = None) -> None:
  """The files of write_outputs, into `folder`; map.json last (the completeness record)."""
  tags = class_tags(nomenclature)
  _cog(folder, folder / "classes.tif", zone, pred.classes[None], "nearest",
       ["tier-3 class"], tags, colormap(nomenclature))
  (folder / "classes.qml").write_text(qgis_style(nomenclature), encoding="utf-8")
  for tier, tier_map in sorted((pred.tiers or {}).items()):
    name = f"classes_tier{tier}"
    _cog(folder, folder / f"{name}.tif", zone, tier_map[None], "nearest",
         [f"tier-{tier} class"], class_tags(nomenclature, tier), colormap(nomenclature, tier))
    (folder / f"{name}.qml").write_text(qgis_style(nomenclature, tier), encoding="utf-8")
  _cog(folder, folder / "confidence.tif", zone, pred.confidence[None], "average",
       ["confidence (max probability, %)"])
  if pred.probabilities is not None:
    _cog(folder, folder / "probabilities.tif", zone, pred.probabilities, "average",
         list(nomenclature.tier3), {**tags, **PROBABILITY_TAGS})
  for tier, probs in sorted((pred.tier_probabilities or {}).items()):
    _cog(folder, folder / f"probabilities_tier{tier}.tif", zone, probs, "average",
         tier_legend(nomenclature, tier)[0],
         {**class_tags(nomenclature, tier), **PROBABILITY_TAGS})
  if zone.has_labels:
    gdf = parcel_product(zone, pred, nomenclature)
    gdf.to_file(folder / "parcels.gpkg", driver="GPKG", layer="parcels")
    geoparquet.write(gdf, folder / geoparquet.FILE, nomenclature, stac.season(zone.months)[1])
  evidence = validity.validity_bands(zone.read_valid_count(), pred.classes == NODATA)
  _cog(folder, folder / validity.FILE, zone, evidence, "average", list(validity.BANDS),
       {"BANDS": json.dumps(list(validity.BANDS))})
  stac.write_item(folder, zone, nomenclature, zone.months, model)
  files = sorted(p.name for p in folder.iterdir())
  record = dict(zone=zone.zone.to_row(), nomenclature=nomenclature.version, files=files,
                validity=validity.summary(evidence), model=model)
  if pred.season_shift is not None:        # season alignment (jaxcrop.season_shift)
    record["season_shift_months"] = round(float(pred.season_shift), 2)
  (folder / MAP_JSON).write_text(json.dumps(
      record if until is None else dict(record, until=until), indent=1), encoding="utf-8")
