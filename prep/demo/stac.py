"""The demo's scenes on disk: Sentinel-2 L2A-like COG bands and minimal STAC items.

  raw/scenes/<item>/  B02 B03 B04 B08 (uint16, 10 m, reflectance x 10000,
                      0 = nodata), SCL (uint8, 20 m), tiled deflate GeoTIFFs,
                      and `<item>.json`, a minimal STAC item written last.
"""
from __future__ import annotations

import datetime
import pathlib

import numpy as np

from cropcontracts import atomic
from prep.demo.region import EPSG, SCENE_X0, SCENE_Y0, TILE, DemoSpec, scene_transform
from prep.demo.sensor import observe
from prep.scenes import BAND_FILES   # B02 B03 B04 B08: the files the local route reads


def item_id(date: datetime.date, i: int) -> str:
  return f"S2{'AB'[i % 2]}_{TILE}_{date:%Y%m%d}_0_L2A"


def _write_band(path, arr, transform, epsg=EPSG) -> None:
  import rasterio
  h, w = arr.shape
  block = 256 if min(h, w) >= 256 else 128
  prof = dict(driver="GTiff", width=w, height=h, count=1, dtype=arr.dtype.name,
              crs=f"EPSG:{epsg}", transform=transform, nodata=0, tiled=True,
              blockxsize=block, blockysize=block, compress="deflate",
              predictor=2, zlevel=6)
  with atomic.atomic_path(path) as tmp:
    with rasterio.open(tmp, "w", **prof) as dst:
      dst.write(arr, 1)


def stac_item(iid: str, date: datetime.date, spec: DemoSpec, facts: dict) -> dict:
  """A minimal STAC item for a scene (assets relative to the item's folder)."""
  import rasterio.warp
  h, w = spec.scene_shape
  left, top = SCENE_X0, SCENE_Y0
  right, bottom = left + w * 10.0, top - h * 10.0
  xs, ys = rasterio.warp.transform(f"EPSG:{EPSG}", "EPSG:4326",
                                   [left, right, right, left, left],
                                   [top, top, bottom, bottom, top])
  ring = [[round(x, 7), round(y, 7)] for x, y in zip(xs, ys)]
  cog = "image/tiff; application=geotiff; profile=cloud-optimized"
  assets = {b: {"href": f"{b}.tif", "type": cog, "roles": ["data"],
                "gsd": 10, "proj:shape": [h, w],
                "proj:transform": list(scene_transform(spec))[:6]}
            for b in BAND_FILES}
  assets["SCL"] = {"href": "SCL.tif", "type": cog, "roles": ["data"], "gsd": 20,
                   "proj:shape": [h // 2, w // 2],
                   "proj:transform": list(scene_transform(spec, 20.0))[:6]}
  return {
      "type": "Feature", "stac_version": "1.0.0", "id": iid,
      "stac_extensions": [
          "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
          "https://stac-extensions.github.io/eo/v1.1.0/schema.json"],
      "bbox": [min(xs), min(ys), max(xs), max(ys)],
      "geometry": {"type": "Polygon", "coordinates": [ring]},
      "properties": {"datetime": f"{date:%Y-%m-%d}T10:56:21.024000Z",
                     "platform": f"sentinel-2{iid[2].lower()}",
                     "constellation": "sentinel-2", "proj:epsg": EPSG,
                     "s2:mgrs_tile": TILE, "demo": True,
                     "earthsearch:boa_offset_applied": True, **facts},
      "assets": assets,
  }


def write_scene(scene_dir, ground, spec, i, date, seed, front) -> str:
  """Writes scene i (bands, SCL, then its STAC item last); returns its id."""
  iid = item_id(date, i)
  folder = pathlib.Path(scene_dir) / iid
  if (folder / f"{iid}.json").is_file():
    return iid
  rng = np.random.default_rng([seed, 100 + i])
  dn, scl, facts = observe(ground, date, rng, front)
  folder.mkdir(parents=True, exist_ok=True)
  for b, arr in zip(BAND_FILES, dn):
    _write_band(folder / f"{b}.tif", arr, scene_transform(spec))
  _write_band(folder / "SCL.tif", scl, scene_transform(spec, 20.0))
  atomic.write_json(folder / f"{iid}.json", stac_item(iid, date, spec, facts))
  return iid

