"""The national product: mosaics of the zone maps and the parcel product of all parcels.

Inputs: a folder of zone maps (`jaxcrop.predict` output, OUT/<zone_id>/ with
map.json). Outputs (`python -m jaxcrop.mosaic`):

  utm<NN>/classes.vrt, utm<NN>/confidence.vrt, utm<NN>/validity.vrt
      one GDAL VRT per UTM zone over the zone COGs, on their common 10 m grid
      (no resampling: a zone's pixels are the VRT's). Squares of one UTM grid
      do not overlap on the country grid; where zones do overlap (e.g. study
      zones), the zone listed last (ids sorted) wins in the VRT.
  france_classes.tif, france_confidence.tif, france_validity.tif
      one Cloud-Optimized GeoTIFF each in Lambert-93 (EPSG:2154, the RPG's CRS),
      10 m pixels on multiples of 10 m, uint8, 255 = nodata, overviews (`mode`
      for classes, so a coarse pixel keeps a real class; `average` for
      confidence). Each national pixel takes the value of the zone pixel holding
      its centre (nearest neighbour), from the zone whose centre is nearest
      among the zones whose square holds it (a tie: the first zone id): overlaps
      between UTM grids (and any others) are resolved by that rule, the one used
      for the parcels. france_validity.tif keeps validity.tif's two bands
      (clear acquisitions, gap-filled months: `jaxcrop.maps.validity`); it is
      left out, with a notice, when a zone map predates it.
      Written block by block (`BLOCK_PX` pixels a side): memory stays at one
      block whatever the country's size.
  parcels/departement=<code>/part-0.parquet (GeoParquet, EPSG:2154)
      every parcel of the zone maps' parcels.gpkg once: a parcel met by several
      zones keeps the row of the zone whose centre is nearest its
      representative point. `departement` comes from a polygon layer (e.g. IGN
      ADMIN EXPRESS DEPARTEMENT, field INSEE_DEP) holding the representative
      point; without one it is `unknown`. `parcels.gpkg` on request (--gpkg).
  areas.csv
      the area of each crop class per département (`class_areas`) in
      france_classes.tif: pixels by the département holding their centre
      (`unknown` without a layer), 1 ha = 100 pixels of 10 m. The background
      (`non_agricultural`, nomenclature v3 on) is not listed: the areas are
      the crops'.

Each file is written under a temporary name and renamed when whole, inside
`claim(out)` (shared, on out/.lock), which first removes what killed runs left.
"""
from __future__ import annotations

import json
import pathlib
from typing import Sequence
from xml.sax.saxutils import escape

import numpy as np

from cropcontracts import atomic
from cropcontracts.errors import UserError
from cropcontracts.nomenclature import BACKGROUND
from cropcontracts.zone import Zone
from jaxcrop.maps.geotiff import BLOCK, MAP_JSON
from jaxcrop.maps.runner import is_complete
from jaxcrop.maps.tiling import NODATA

NATIONAL_CRS = "EPSG:2154"
RES = 10.0
BLOCK_PX = 4096
PRODUCTS = {"classes": "mode", "confidence": "average",    # overview resampling
            "validity": "average"}
# What a killed run leaves in the national product's folders: `atomic_path`'s
# `.NAME.<random>.partial` (a national COG's scratch folder too) in OUT, OUT/utm<NN>
# and OUT/parcels/departement=<code>.
TEMPORARIES = (atomic.PARTIAL, f"utm*/{atomic.PARTIAL}", f"parcels/*/{atomic.PARTIAL}")


def claim(out):
  """Holds the national product's folder `out` for the block (`atomic.claim`,
  shared, on out/.lock), after removing the temporaries (`TEMPORARIES`) of runs
  killed there: every writer of the product writes inside it."""
  return atomic.claim(out, shared=True, patterns=TEMPORARIES)


def zone_maps(root) -> list[tuple[Zone, pathlib.Path]]:
  """(zone, folder) of the complete zone maps under root, by zone id."""
  root = pathlib.Path(root)
  if not root.is_dir():
    raise UserError(f"{root}: not a folder of zone maps; pass the --out of jaxcrop.predict")
  found = []
  for p in sorted(root.iterdir()):
    if is_complete(p):
      meta = json.loads((p / MAP_JSON).read_text(encoding="utf-8"))
      found.append((Zone.from_row(meta["zone"]), p))
  if not found:
    raise UserError(f"{root}: holds no complete zone map (no */{MAP_JSON}); run "
                    f"`python -m jaxcrop.predict` first")
  return found


def products(maps) -> list[str]:
  """The PRODUCTS every zone map of `maps` holds (validity.tif: maps written
  since issue 22)."""
  return [p for p in PRODUCTS if all((folder / f"{p}.tif").is_file() for _, folder in maps)]


def utm_vrt(maps: Sequence[tuple[Zone, pathlib.Path]], product: str, path) -> pathlib.Path:
  """Writes a VRT over `product`.tif (each of its bands) of zones sharing one CRS
  and 10 m grid."""
  zones = [z for z, _ in maps]
  if len({(z.epsg, z.res) for z in zones}) != 1:
    raise ValueError("one VRT covers zones of one CRS and resolution")
  res = zones[0].res
  x0 = min(z.x0 for z in zones)
  y0 = max(z.y0 for z in zones)
  W = int(round((max(z.x0 + z.width * z.res for z in zones) - x0) / res))
  H = int(round((y0 - min(z.y0 - z.height * z.res for z in zones)) / res))
  path = pathlib.Path(path)
  import rasterio
  from rasterio.crs import CRS
  with rasterio.open(maps[0][1] / f"{product}.tif") as src:
    tags = "".join(f'    <MDI key="{escape(k)}">{escape(v)}</MDI>\n'
                   for k, v in src.tags().items())
    descriptions = src.descriptions
  sources = {b: [] for b in range(1, len(descriptions) + 1)}
  for z, folder in maps:
    rel = escape(str(pathlib.Path("..") / folder.name / f"{product}.tif")
                 if folder.parent == path.parent.parent else str(folder / f"{product}.tif"))
    xoff, yoff = int(round((z.x0 - x0) / res)), int(round((y0 - z.y0) / res))
    for b, band_sources in sources.items():
      band_sources.append(f"""    <SimpleSource>
      <SourceFilename relativeToVRT="{int(not rel.startswith('/'))}">{rel}</SourceFilename>
      <SourceBand>{b}</SourceBand>
      <SrcRect xOff="0" yOff="0" xSize="{z.width}" ySize="{z.height}"/>
      <DstRect xOff="{xoff}" yOff="{yoff}" xSize="{z.width}" ySize="{z.height}"/>
    </SimpleSource>""")
  bands = "\n".join(f"""  <VRTRasterBand dataType="Byte" band="{b}">
    <Description>{escape(descriptions[b - 1] or "")}</Description>
    <NoDataValue>{NODATA}</NoDataValue>
{chr(10).join(band_sources)}
  </VRTRasterBand>""" for b, band_sources in sources.items())
  wkt = escape(CRS.from_epsg(zones[0].epsg).to_wkt())
  text = f"""<VRTDataset rasterXSize="{W}" rasterYSize="{H}">
  <SRS>{wkt}</SRS>
  <GeoTransform>{x0!r}, {res!r}, 0.0, {y0!r}, 0.0, {-res!r}</GeoTransform>
  <Metadata>
{tags}  </Metadata>
{bands}
</VRTDataset>
"""
  atomic.write_text(path, text)
  return path


def national_grid(zones: Sequence[Zone]):
  """(transform, width, height) of the Lambert-93 10 m grid holding every zone."""
  import affine
  b = np.array([z.bounds_in(NATIONAL_CRS) for z in zones])
  x0, y0 = np.floor(b[:, 0].min() / RES) * RES, np.ceil(b[:, 3].max() / RES) * RES
  x1, y1 = np.ceil(b[:, 2].max() / RES) * RES, np.floor(b[:, 1].min() / RES) * RES
  return (affine.Affine(RES, 0.0, float(x0), 0.0, -RES, float(y0)),
          int(round((x1 - x0) / RES)), int(round((y0 - y1) / RES)))


def zone_centres(zones: Sequence[Zone]) -> np.ndarray:
  """float [N, 2]: each zone's centre in Lambert-93."""
  import pyproj
  out = np.zeros((len(zones), 2))
  for i, z in enumerate(zones):
    t = pyproj.Transformer.from_crs(z.crs, NATIONAL_CRS, always_xy=True)
    left, bottom, right, top = z.bounds
    out[i] = t.transform((left + right) / 2, (bottom + top) / 2)
  return out


def mosaic_block(maps, centres: np.ndarray, product: str, transform, window,
                 count: int = 1) -> np.ndarray:
  """uint8 [h, w] (a product of `count` bands: [count, h, w]) of the national
  grid's window (row0, col0, h, w): each pixel from the zone pixel holding its
  centre, of the nearest-centre zone holding it.

  Only the pixels of each zone's Lambert-93 box are projected (a zone's ~1.1 M,
  not the block's), so a country costs about one projection per zone pixel.
  """
  import pyproj
  import rasterio
  r0, c0, h, w = window
  out = np.full((count, h, w), NODATA, np.uint8)
  best = np.full((h, w), np.inf)
  for (z, folder), (cx, cy) in zip(maps, centres):
    left, bottom, right, top = z.bounds_in(NATIONAL_CRS)
    ca = max(c0, int(np.floor((left - transform.c) / transform.a)))
    cb = min(c0 + w, int(np.ceil((right - transform.c) / transform.a)))
    ra = max(r0, int(np.floor((transform.f - top) / -transform.e)))
    rb = min(r0 + h, int(np.ceil((transform.f - bottom) / -transform.e)))
    if ca >= cb or ra >= rb:
      continue
    rr, cc = np.mgrid[ra:rb, ca:cb]
    x = transform.c + (cc + 0.5) * transform.a
    y = transform.f + (rr + 0.5) * transform.e
    t = pyproj.Transformer.from_crs(NATIONAL_CRS, z.crs, always_xy=True)
    u, v = t.transform(x.ravel(), y.ravel())
    col = np.floor((np.asarray(u) - z.x0) / z.res).astype(np.int64).reshape(x.shape)
    row = np.floor((z.y0 - np.asarray(v)) / z.res).astype(np.int64).reshape(x.shape)
    inside = (col >= 0) & (col < z.width) & (row >= 0) & (row < z.height)
    sub = (slice(ra - r0, rb - r0), slice(ca - c0, cb - c0))
    d = np.hypot(x - cx, y - cy)
    take = inside & (d < best[sub])
    if not take.any():
      continue
    with rasterio.open(folder / f"{product}.tif") as src:
      bands = src.read(list(range(1, count + 1)))
    out[(slice(None),) + sub][:, take] = bands[:, row[take], col[take]]
    best[sub][take] = d[take]
  return out if count > 1 else out[0]


def national_cog(maps, product: str, path, *, block: int = BLOCK_PX,
                 progress: bool = False, cog_block: int = BLOCK) -> pathlib.Path:
  """Writes the Lambert-93 COG of `product` (one of PRODUCTS): the mosaic,
  block by block, into a scratch GeoTIFF (in a `.partial` folder beside `path`,
  gone with it), then that converted to a COG with overviews."""
  import tempfile
  import rasterio.shutil
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(prefix=f".{path.name}.", suffix=".partial",
                                   dir=path.parent) as scratch:
    src_path = pathlib.Path(scratch) / "mosaic.tif"
    _mosaic_tif(maps, product, src_path, block=block, progress=progress)
    with atomic.atomic_path(path) as tmp:
      rasterio.shutil.copy(src_path, tmp, driver="COG", compress="DEFLATE",
                           blocksize=cog_block, overview_resampling=PRODUCTS[product],
                           overviews="AUTO", BIGTIFF="IF_SAFER")
  return path


def _mosaic_tif(maps, product: str, path: pathlib.Path, *, block: int,
                progress: bool) -> None:
  """Writes the national mosaic of `product` to the tiled GeoTIFF `path`, one
  block of `block` pixels a side at a time, with the zone maps' tags and colours."""
  import rasterio
  from tqdm import tqdm
  zones = [z for z, _ in maps]
  transform, W, H = national_grid(zones)
  centres = zone_centres(zones)
  with rasterio.open(maps[0][1] / f"{product}.tif") as src:
    tags = src.tags()
    cmap = src.colormap(1) if product == "classes" else None
    descriptions, count = src.descriptions, src.count
  blocks = [(r, c, min(block, H - r), min(block, W - c))
            for r in range(0, H, block) for c in range(0, W, block)]
  with rasterio.open(path, "w", driver="GTiff", count=count, dtype="uint8", width=W,
                     height=H, crs=NATIONAL_CRS, transform=transform, nodata=NODATA,
                     tiled=True, blockxsize=BLOCK, blockysize=BLOCK, compress="deflate",
                     BIGTIFF="IF_SAFER") as dst:
    for win in tqdm(blocks, desc=f"national {product}", unit="block", disable=not progress):
      # only the zones whose Lambert-93 box meets the block
      left = transform.c + win[1] * RES
      top = transform.f - win[0] * RES
      box = (left, top - win[2] * RES, left + win[3] * RES, top)
      near = [i for i, z in enumerate(zones) if _meets(z.bounds_in(NATIONAL_CRS), box)]
      data = mosaic_block([maps[i] for i in near], centres[near], product, transform, win,
                          count)
      dst.write(data.reshape(count, win[2], win[3]),
                window=rasterio.windows.Window(win[1], win[0], win[3], win[2]))
    dst.update_tags(**tags)
    for b, d in enumerate(descriptions):
      dst.set_band_description(b + 1, d or "")
    if cmap:
      dst.write_colormap(1, cmap)


def _meets(a, b) -> bool:
  return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def national_parcels(maps, *, departements=None, field: str = "INSEE_DEP"):
  """GeoDataFrame (EPSG:2154) of every parcel once, with `zone_id` and `departement`."""
  import geopandas as gpd
  import pandas as pd
  import shapely
  frames = []
  for z, folder in maps:
    p = folder / "parcels.gpkg"
    if p.is_file():
      g = gpd.read_file(p).to_crs(NATIONAL_CRS)
      g["zone_id"] = z.zone_id
      frames.append(g)
  if not frames:
    raise UserError("no zone map holds parcels.gpkg (zones without labels); nothing to "
                    "write for --parcels")
  gdf = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs=NATIONAL_CRS)
  pts = shapely.point_on_surface(gdf.geometry.values)
  centres = dict(zip([z.zone_id for z, _ in maps], zone_centres([z for z, _ in maps])))
  c = np.array([centres[i] for i in gdf["zone_id"]])
  gdf["_d"] = np.hypot(shapely.get_x(pts) - c[:, 0], shapely.get_y(pts) - c[:, 1])
  gdf = gdf.sort_values(["ID_PARCEL", "_d", "zone_id"]).drop_duplicates("ID_PARCEL")
  gdf = gdf.drop(columns="_d").sort_values(["zone_id", "parcel_index"]).reset_index(drop=True)
  gdf["departement"] = "unknown"
  if departements is not None:
    deps = read_departements(departements, field)
    pts = gpd.GeoDataFrame(geometry=shapely.point_on_surface(gdf.geometry.values),
                           crs=NATIONAL_CRS)
    joined = gpd.sjoin(pts, deps[[field, "geometry"]], how="left", predicate="within")
    joined = joined[~joined.index.duplicated()]
    gdf["departement"] = joined[field].fillna("unknown").astype(str).values
  return gdf


def read_departements(path, field: str = "INSEE_DEP"):
  """The départements layer `path` in Lambert-93 (GeoDataFrame); UserError when it
  lacks `field`."""
  import geopandas as gpd
  deps = gpd.read_file(path)
  if field not in deps:
    raise UserError(f"{path}: no field {field!r} (fields: "
                    f"{', '.join(c for c in deps.columns if c != 'geometry')}); pass "
                    f"--departement-field")
  return deps.to_crs(NATIONAL_CRS)


def class_areas(classes_cog, *, departements=None, field: str = "INSEE_DEP",
                block: int = BLOCK_PX) -> list[dict]:
  """The area of each crop class per département in the national classes COG.

  A pixel belongs to the département holding its centre (`unknown` outside every
  polygon, and everywhere without a layer). Background pixels
  (`nomenclature.BACKGROUND`, named in the COG's CLASS_NAMES) and nodata are not
  counted: the areas are those of the crop classes. Read block by block.
  Returns rows {departement, class_id, class_name, pixels, area_ha}, sorted by
  département and class id, only classes with pixels.
  """
  import json
  import affine
  import rasterio
  import rasterio.features
  deps = read_departements(departements, field) if departements is not None else None
  codes = ["unknown"] + ([] if deps is None else [str(c) for c in deps[field]])
  with rasterio.open(classes_cog) as src:
    names = json.loads(src.tags()["CLASS_NAMES"])
    counts = np.zeros((len(codes), 256), np.int64)
    for r in range(0, src.height, block):
      for c in range(0, src.width, block):
        win = rasterio.windows.Window(c, r, min(block, src.width - c), min(block, src.height - r))
        data = src.read(1, window=win)
        dep = np.zeros(data.shape, np.int64)
        if deps is not None and len(deps):
          dep = rasterio.features.rasterize(
              zip(deps.geometry, range(1, len(codes))), out_shape=data.shape, fill=0,
              transform=src.transform @ affine.Affine.translation(c, r),
              dtype="int32").astype(np.int64)
        counts += np.bincount((dep * 256 + data).ravel(),
                              minlength=counts.size).reshape(counts.shape)
    pixel_ha = abs(src.transform.a * src.transform.e) / 1e4
  by_code: dict = {}
  for d, code in enumerate(codes):   # a département of several polygons: summed
    by_code[code] = by_code.get(code, 0) + counts[d]
  return [dict(departement=code, class_id=k, class_name=names[k], pixels=int(n[k]),
               area_ha=float(n[k] * pixel_ha))
          for code, n in sorted(by_code.items()) for k in range(len(names))
          if names[k] != BACKGROUND and n[k] > 0]


def write_areas(rows: list[dict], path) -> pathlib.Path:
  """areas.csv: the rows of `class_areas` (departement, class_id, class_name,
  pixels, area_ha), written whole."""
  import csv
  import io
  text = io.StringIO()
  w = csv.DictWriter(text, ["departement", "class_id", "class_name", "pixels", "area_ha"],
                     lineterminator="\n")
  w.writeheader()
  w.writerows({**r, "area_ha": f"{r['area_ha']:.2f}"} for r in rows)
  atomic.write_text(path, text.getvalue())
  return pathlib.Path(path)


def write_parcels(gdf, out, *, gpkg: bool = False) -> list[pathlib.Path]:
  """GeoParquet partitioned by département (hive layout), [+ one GeoPackage]."""
  out = pathlib.Path(out)
  written = []
  for dep, part in gdf.groupby("departement", sort=True):
    path = out / "parcels" / f"departement={dep}" / "part-0.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_path(path) as tmp:
      part.drop(columns="departement").reset_index(drop=True).to_parquet(tmp)
    written.append(path)
  if gpkg:
    path = out / "parcels.gpkg"
    with atomic.atomic_path(path) as tmp:
      gdf.to_file(tmp, driver="GPKG", layer="parcels")
    written.append(path)
  return written


def by_utm(maps) -> dict[int, list]:
  groups: dict[int, list] = {}
  for z, folder in maps:
    groups.setdefault(z.epsg, []).append((z, folder))
  return groups
