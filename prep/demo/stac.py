"""The demo's scenes on disk: one product per (acquisition, tile), in the kinds real archives deliver.

Each acquisition (`sensor.observe` on the scene grid, one random stream per
date) is cut into the three tiles of `region.demo_tiles`: the two UTM-31 tiles
are windows of the scene grid (identical numbers where both cover, as two
tiles of one datatake are); the UTM-30 tile samples it on its own grid
(nearest neighbour from each of its pixel centres, `neighbour_index`).

Every product is of processing baseline 05.09 (05.10 from 2023-12-13, as ESA's
baselines ran), so its digital numbers carry the BOA offset: stored DN =
reflectance x 10000 + 1000 (0 stays nodata). They declare it as real products
do, never with a flag saying "harmonized" (`PRODUCT_KINDS`):

  safe          31UCP, every third date: `<name>.SAFE/` with MTD_MSIL2A.xml
                (PROCESSING_BASELINE, BOA_ADD_OFFSET per band) and
                GRANULE/L2A_…/IMG_DATA/R10m/T31UCP_…_B0x_10m.jp2, R20m/…_SCL_20m.jp2
                (lossless JPEG 2000); beside the MTD, `catalogue_item.json`, the
                item a Copernicus Data Space catalogue answers for the product
                (not part of a SAFE; `prep composite` ignores it, the test
                catalogue serves it, so both routes read the same products).
  earth-search  31UCP, the other dates: Earth Search ids (`S2A_31UCP_20230108_0_L2A`,
                no baseline in them), `s2:processing_baseline`, `s2:product_uri`,
                `earthsearch:boa_offset_applied: false`, asset keys blue … scl.
  planetary     31UCQ: Planetary Computer ids (`S2A_MSIL2A_…_R051_T31UCQ_…`, no
                baseline either), `s2:processing_baseline`, asset keys B02 … SCL.
  cdse          30UYU: Copernicus Data Space ids (`…_N0509_…`), `processing:version`,
                asset keys B02_10m … SCL_20m.

  raw/scenes/<item>/  B02 B03 B04 B08 (uint16, 10 m), SCL (uint8, 20 m), tiled
                      deflate GeoTIFFs, and `<item>.json`, the STAC item, last.
  raw/scenes/<product>.SAFE/  the SAFE products.
"""
from __future__ import annotations

import datetime
import functools
import pathlib

import numpy as np

from cropcontracts import atomic
from prep.demo.region import (EPSG, SCENE_X0, SCENE_Y0, TILE_NORTH, TILE_SOUTH,
                              TILE_WEST, DemoSpec, Tile, demo_tiles)
from prep.demo.sensor import observe
from prep.scenes import BAND_FILES   # B02 B03 B04 B08: the files the local route reads

BOA_OFFSET = 1000            # stored DN = reflectance x 10000 + 1000 from baseline 04.00
BASELINE_0510_FROM = datetime.date(2023, 12, 13)
_KEYS = {"earth-search": dict(zip((*BAND_FILES, "SCL"), ("blue", "green", "red", "nir", "scl"))),
         "planetary": {b: b for b in (*BAND_FILES, "SCL")},
         "cdse": {**{b: f"{b}_10m" for b in BAND_FILES}, "SCL": "SCL_20m"}}
SENSING = "T105031"          # sensing time of every demo datatake (UTC)


def baseline(date: datetime.date) -> str:
  """The processing baseline of the demo's products of `date`."""
  return "05.10" if date >= BASELINE_0510_FROM else "05.09"


def product_kind(tile: Tile, i: int) -> str:
  """How acquisition i is delivered for `tile` (module docstring)."""
  if tile.name == TILE_SOUTH:
    return "safe" if i % 3 == 0 else "earth-search"
  return "planetary" if tile.name == TILE_NORTH else "cdse"


def safe_name(tile: Tile, date: datetime.date, i: int) -> str:
  """The SAFE product name of acquisition i over `tile` (with .SAFE)."""
  n = baseline(date).replace(".", "")
  return (f"S2{'AB'[i % 2]}_MSIL2A_{date:%Y%m%d}{SENSING}_N{n}_R051_T{tile.name}_"
          f"{date:%Y%m%d}T170512.SAFE")


def item_id(date: datetime.date, i: int, tile: Tile) -> str:
  """The id of acquisition i over `tile` in its kind's catalogue (module docstring)."""
  kind = product_kind(tile, i)
  if kind == "earth-search":
    return f"S2{'AB'[i % 2]}_{tile.name}_{date:%Y%m%d}_0_L2A"
  name = safe_name(tile, date, i).removesuffix(".SAFE")
  if kind == "planetary":        # PC ids drop the baseline part
    return name.replace(f"_N{baseline(date).replace('.', '')}", "")
  return name


@functools.lru_cache(maxsize=4)
def neighbour_index(spec: DemoSpec, tile: Tile, res: float) -> tuple[np.ndarray, np.ndarray]:
  """Scene-grid (row, col) of each `res`-m pixel centre of a tile in another CRS.

  Returns int [h, w] arrays on the scene grid of that resolution; -1 outside
  the scene area (nodata there).
  """
  import pyproj
  h, w = int(tile.height * 10 / res), int(tile.width * 10 / res)
  yy, xx = np.mgrid[0:h, 0:w]
  x = tile.x0 + (xx + 0.5) * res
  y = tile.y0 - (yy + 0.5) * res
  to_scene = pyproj.Transformer.from_crs(tile.epsg, EPSG, always_xy=True)
  sx, sy = to_scene.transform(x.ravel(), y.ravel())
  col = np.floor((np.asarray(sx) - SCENE_X0) / res).astype(np.int64).reshape(h, w)
  row = np.floor((SCENE_Y0 - np.asarray(sy)) / res).astype(np.int64).reshape(h, w)
  sh, sw = (int(s * 10 / res) for s in spec.scene_shape)
  out = (row < 0) | (row >= sh) | (col < 0) | (col >= sw)
  return np.where(out, -1, row), np.where(out, -1, col)


def cut(spec: DemoSpec, tile: Tile, dn: np.ndarray, scl: np.ndarray
        ) -> tuple[np.ndarray, np.ndarray]:
  """An acquisition as `tile` delivers it, before the offset.

  Args:
    dn: uint16 [4, H, W] and scl: uint8 [H/2, W/2] on the scene grid (`observe`).
  Returns:
    uint16 [4, h, w] and uint8 [h/2, w/2] on the tile's grid (0 = nodata).
  """
  if tile.rows is not None:
    (r0, r1), (c0, c1) = tile.rows, tile.cols
    return dn[:, r0:r1, c0:c1], scl[r0 // 2:r1 // 2, c0 // 2:c1 // 2]
  out = []
  for arr, res in ((dn, 10.0), (scl[None], 20.0)):
    row, col = neighbour_index(spec, tile, res)
    inside = row >= 0
    got = arr[:, np.maximum(row, 0), np.maximum(col, 0)]
    out.append(np.where(inside[None], got, 0).astype(arr.dtype))
  return out[0], out[1][0]


def with_offset(dn: np.ndarray) -> np.ndarray:
  """Stored DNs of a baseline >= 04.00 product: DN + 1000, nodata 0 kept."""
  return np.where(dn == 0, 0, np.minimum(dn.astype(np.int32) + BOA_OFFSET, 65535)
                  ).astype(np.uint16)


def _write_band(path, arr, transform, epsg=EPSG, driver="GTiff") -> None:
  import rasterio
  h, w = arr.shape
  if driver == "JP2OpenJPEG":       # lossless, as ESA's L2A JPEG 2000
    prof = dict(driver=driver, width=w, height=h, count=1, dtype=arr.dtype.name,
                crs=f"EPSG:{epsg}", transform=transform, QUALITY="100", CODEC="JP2",
                REVERSIBLE="YES", RESOLUTIONS="1")
  else:
    block = 256 if min(h, w) >= 256 else 128
    prof = dict(driver="GTiff", width=w, height=h, count=1, dtype=arr.dtype.name,
                crs=f"EPSG:{epsg}", transform=transform, nodata=0, tiled=True,
                blockxsize=block, blockysize=block, compress="deflate",
                predictor=2, zlevel=6)
  with atomic.atomic_path(path) as tmp:
    with rasterio.open(tmp, "w", **prof) as dst:
      dst.write(arr, 1)
    for aux in pathlib.Path(tmp).parent.glob(pathlib.Path(tmp).name + ".aux.xml"):
      aux.unlink()


def _footprint(tile: Tile) -> tuple[list, list]:
  """bbox and GeoJSON ring (WGS84) of a tile."""
  import rasterio.warp
  left, top = tile.x0, tile.y0
  right, bottom = left + tile.width * 10.0, top - tile.height * 10.0
  xs, ys = rasterio.warp.transform(f"EPSG:{tile.epsg}", "EPSG:4326",
                                   [left, right, right, left, left],
                                   [top, top, bottom, bottom, top])
  ring = [[round(x, 7), round(y, 7)] for x, y in zip(xs, ys)]
  return [min(xs), min(ys), max(xs), max(ys)], ring


def stac_item(iid: str, date: datetime.date, tile: Tile, kind: str, facts: dict,
              hrefs: dict, i: int) -> dict:
  """The STAC item of a product, with its kind's properties and asset keys.

  `hrefs`: band (B02 … SCL) -> href relative to the item's folder.
  """
  bbox, ring = _footprint(tile)
  cog = "image/tiff; application=geotiff; profile=cloud-optimized"
  jp2 = "image/jp2"
  keys = _KEYS["cdse" if kind == "safe" else kind]
  assets = {}
  for b, href in hrefs.items():
    res = 20 if b == "SCL" else 10
    assets[keys[b]] = {"href": href, "type": jp2 if href.endswith(".jp2") else cog,
                       "roles": ["data"], "gsd": res,
                       "proj:shape": [tile.height * 10 // res, tile.width * 10 // res],
                       "proj:transform": list(tile.transform(float(res)))[:6]}
  props = {"datetime": f"{date:%Y-%m-%d}T10:50:31.024000Z",
           "platform": f"sentinel-2{'ab'[i % 2]}", "constellation": "sentinel-2",
           "proj:epsg": tile.epsg, "s2:mgrs_tile": tile.name, "demo": True, **facts}
  if kind == "earth-search":
    props.update({"s2:processing_baseline": baseline(date),
                  "s2:product_uri": safe_name(tile, date, i),
                  "earthsearch:boa_offset_applied": False,
                  "mgrs:utm_zone": int(tile.name[:2]), "mgrs:latitude_band": tile.name[2],
                  "mgrs:grid_square": tile.name[3:]})
  elif kind == "planetary":
    props.update({"s2:processing_baseline": baseline(date),
                  "s2:product_type": "MSIL2A", "s2:mgrs_tile": tile.name})
  else:                                                   # cdse (and SAFE products)
    props.update({"processing:version": baseline(date), "product:type": "S2MSI2A",
                  "grid:code": f"MGRS-{tile.name}"})
  return {
      "type": "Feature", "stac_version": "1.0.0", "id": iid,
      "stac_extensions": [
          "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
          "https://stac-extensions.github.io/eo/v1.1.0/schema.json"],
      "bbox": bbox, "geometry": {"type": "Polygon", "coordinates": [ring]},
      "properties": props, "assets": assets,
  }


def mtd_xml(name: str, date: datetime.date, i: int, granule: str, stem: str) -> str:
  """A `MTD_MSIL2A.xml` in the layout of ESA's (the parts compositing reads, and their neighbours)."""
  bl = baseline(date)
  ns = "https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-2A.xsd"
  files = "\n".join(f"            <IMAGE_FILE>GRANULE/{granule}/IMG_DATA/R{r}m/{stem}_{b}_{r}m"
                    f"</IMAGE_FILE>" for b, r in [(b, 10) for b in BAND_FILES] + [("SCL", 20)])
  offsets = "\n".join(f'        <BOA_ADD_OFFSET band_id="{k}">-{BOA_OFFSET}</BOA_ADD_OFFSET>'
                      for k in range(13))
  start = f"{date:%Y-%m-%d}T10:50:31.024Z"
  return f"""<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<n1:Level-2A_User_Product xmlns:n1="{ns}">
    <n1:General_Info>
        <Product_Info>
            <PRODUCT_START_TIME>{start}</PRODUCT_START_TIME>
            <PRODUCT_STOP_TIME>{start}</PRODUCT_STOP_TIME>
            <PRODUCT_URI>{name}</PRODUCT_URI>
            <PROCESSING_LEVEL>Level-2A</PROCESSING_LEVEL>
            <PRODUCT_TYPE>S2MSI2A</PRODUCT_TYPE>
            <PROCESSING_BASELINE>{bl}</PROCESSING_BASELINE>
            <GENERATION_TIME>{date:%Y-%m-%d}T17:05:12.000000Z</GENERATION_TIME>
            <Datatake datatakeIdentifier="GS2{'AB'[i % 2]}_{date:%Y%m%d}{SENSING}_0{40000 + i}_N{bl}">
      <SPACECRAFT_NAME>Sentinel-2{'AB'[i % 2]}</SPACECRAFT_NAME>
      <DATATAKE_TYPE>INS-NOBS</DATATAKE_TYPE>
      <DATATAKE_SENSING_START>{start}</DATATAKE_SENSING_START>
      <SENSING_ORBIT_NUMBER>51</SENSING_ORBIT_NUMBER>
      <SENSING_ORBIT_DIRECTION>DESCENDING</SENSING_ORBIT_DIRECTION>
    </Datatake>
<Product_Organisation>
        <Granule_List>
          <Granule granuleIdentifier="S2{'AB'[i % 2]}_OPER_MSI_L2A_TL_DEMO_{date:%Y%m%d}T170512_N{bl}" imageFormat="JPEG2000">
{files}
          </Granule>
        </Granule_List>
</Product_Organisation>
        </Product_Info>
        <Product_Image_Characteristics>
            <Special_Values>
                <SPECIAL_VALUE_TEXT>NODATA</SPECIAL_VALUE_TEXT>
                <SPECIAL_VALUE_INDEX>0</SPECIAL_VALUE_INDEX>
            </Special_Values>
            <QUANTIFICATION_VALUES_LIST>
                <BOA_QUANTIFICATION_VALUE unit="none">10000</BOA_QUANTIFICATION_VALUE>
            </QUANTIFICATION_VALUES_LIST>
            <BOA_ADD_OFFSET_VALUES_LIST>
{offsets}
      </BOA_ADD_OFFSET_VALUES_LIST>
        </Product_Image_Characteristics>
    </n1:General_Info>
</n1:Level-2A_User_Product>
"""


def _write_safe(scene_dir: pathlib.Path, tile: Tile, date, i, dn, scl, facts) -> str:
  """A SAFE product (JP2 bands, MTD_MSIL2A.xml, the catalogue's item last); its name."""
  name = safe_name(tile, date, i)
  folder = scene_dir / name
  if (folder / "catalogue_item.json").is_file():
    return name
  granule = f"L2A_T{tile.name}_A0{40000 + i}_{date:%Y%m%d}{SENSING}"
  stem = f"T{tile.name}_{date:%Y%m%d}{SENSING}"
  img = folder / "GRANULE" / granule / "IMG_DATA"
  (img / "R10m").mkdir(parents=True, exist_ok=True)
  (img / "R20m").mkdir(parents=True, exist_ok=True)
  hrefs = {}
  for b, arr in zip(BAND_FILES, dn):
    rel = f"GRANULE/{granule}/IMG_DATA/R10m/{stem}_{b}_10m.jp2"
    _write_band(folder / rel, arr, tile.transform(), tile.epsg, "JP2OpenJPEG")
    hrefs[b] = rel
  rel = f"GRANULE/{granule}/IMG_DATA/R20m/{stem}_SCL_20m.jp2"
  _write_band(folder / rel, scl, tile.transform(20.0), tile.epsg, "JP2OpenJPEG")
  hrefs["SCL"] = rel
  with atomic.atomic_path(folder / "MTD_MSIL2A.xml") as tmp:
    tmp.write_text(mtd_xml(name, date, i, granule, stem), encoding="utf-8")
  atomic.write_json(folder / "catalogue_item.json",
                    stac_item(name.removesuffix(".SAFE"), date, tile, "safe", facts, hrefs, i))
  return name


def _write_cog_item(scene_dir: pathlib.Path, tile: Tile, kind, date, i, dn, scl, facts) -> str:
  iid = item_id(date, i, tile)
  folder = scene_dir / iid
  if (folder / f"{iid}.json").is_file():
    return iid
  folder.mkdir(parents=True, exist_ok=True)
  for b, arr in zip(BAND_FILES, dn):
    _write_band(folder / f"{b}.tif", arr, tile.transform(), tile.epsg)
  _write_band(folder / "SCL.tif", scl, tile.transform(20.0), tile.epsg)
  hrefs = {b: f"{b}.tif" for b in (*BAND_FILES, "SCL")}
  atomic.write_json(folder / f"{iid}.json", stac_item(iid, date, tile, kind, facts, hrefs, i))
  return iid


def products_of(spec: DemoSpec, i: int, date: datetime.date) -> list[tuple[Tile, str, str]]:
  """(tile, kind, folder name under raw/scenes) of every product of acquisition i."""
  out = []
  for tile in demo_tiles(spec):
    kind = product_kind(tile, i)
    out.append((tile, kind, safe_name(tile, date, i) if kind == "safe"
                else item_id(date, i, tile)))
  return out


def write_scene(scene_dir, ground, spec, i, date, seed, front,
                cloudiness: float = 1.0) -> list[str]:
  """Writes the products of acquisition i (one per tile); returns their folder names.

  The acquisition is drawn from `default_rng([seed, 100 + i])` once (`observe`)
  and cut per tile, so a product does not depend on which others were written.
  """
  scene_dir = pathlib.Path(scene_dir)
  todo = [p for p in products_of(spec, i, date) if not _complete(scene_dir, p[2])]
  if todo:
    rng = np.random.default_rng([seed, 100 + i])
    dn, scl, facts = observe(ground, date, rng, front, cloudiness)
    for tile, kind, _ in todo:
      t_dn, t_scl = cut(spec, tile, dn, scl)
      t_dn = with_offset(t_dn)
      if kind == "safe":
        _write_safe(scene_dir, tile, date, i, t_dn, t_scl, facts)
      else:
        _write_cog_item(scene_dir, tile, kind, date, i, t_dn, t_scl, facts)
  return [p[2] for p in products_of(spec, i, date)]


def _complete(scene_dir: pathlib.Path, name: str) -> bool:
  folder = scene_dir / name
  last = "catalogue_item.json" if name.endswith(".SAFE") else f"{name}.json"
  return (folder / last).is_file()
