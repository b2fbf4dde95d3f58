"""Crop-type maps of whole zones from a trained model.

  python -m jaxcrop.predict --workdir W --zone ZONES/chartres_2 --out maps
  python -m jaxcrop.predict --workdir W --zone ZONES --out maps --probs --rpg RPG.gpkg

A zone (any size) is cut into overlapping tiles of ONE fixed shape [tile, tile]
(default 512 with 24 px overlap: 2 x 2 tiles for a 1000-px zone), so the model
compiles once: as few tiles as the overlap allows, spread evenly
from edge to edge (every tile sees real data; a zone smaller than a tile is
padded by reflection). Tiles go through the model in
batches of a fixed size, sharded over the local devices (`data` mesh axis).
Each tile's softmax probabilities are multiplied by a smooth 2D window — a
cosine ramp over the `overlap` pixels of each edge, 1 inside, strictly positive
everywhere — and summed into the zone; dividing by the summed weights gives a
map without seams, in which the centre of a tile counts more than its edges
(where the model sees less context).

Outputs, on the zone's own grid, in `OUT/<zone_id>/` (see docs/predict.md):
  classes.tif        uint8 tier-3 class ids, 255 = nodata, colour table, names.
  classes.qml        QGIS style of classes.tif (palette with class names).
  confidence.tif     uint8 max softmax probability in percent, 255 = nodata.
  probabilities.tif  (--probs) uint8 [K bands] probability in percent.
  parcels.gpkg       (zones with parcels) majority class per parcel.
All rasters are Cloud-Optimized GeoTIFFs (deflate, 256 tiles, overviews).
A zone's folder is assembled under a temporary name and renamed when complete.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import shutil
import sys
import tempfile
from typing import Callable, Sequence

import numpy as np

from jaxcrop import cli
from cropcontracts import atomic
from cropcontracts.errors import UserError
from cropcontracts.zonefolder import ZoneFolder, find_zones, open_zone

NODATA = 255
BLOCK = 256
# Default tiling: 2 x 2 tiles of 512 cover a 1000-px study zone exactly with 24 px
# of overlap (1.05 M model pixels, against 1.8 M for 5 x 5 tiles of 256 with 32),
# one tile per call keeps the default model within ~3 GB on a laptop. Every
# zone size uses the same [1, T, 512, 512, C] shape: one compilation.
DEFAULT_TILE, DEFAULT_OVERLAP, DEFAULT_BATCH = 512, 24, 1


class PredictError(UserError):
  """A zone, checkpoint or output folder that does not fit; the message says why."""


@dataclasses.dataclass
class Prediction:
  """A zone's map. classes, confidence: uint8 [H, W] (255 = nodata);
  probabilities: uint8 [K, H, W] percent (255 = nodata) or None."""
  classes: np.ndarray
  confidence: np.ndarray
  probabilities: np.ndarray | None = None


# --------------------------------------------------------------------------- #
# Tiling and blending.

def tile_starts(size: int, tile: int, overlap: int) -> np.ndarray:
  """int [N] start offsets of the fewest tiles of length `tile` that cover `size`
  with neighbours sharing at least `overlap` pixels, spread evenly: the first
  starts at 0, the last ends at `size` (or at `tile` when size < tile: the
  caller pads)."""
  check_tiling(tile, overlap)
  stride = tile - overlap
  n = 1 + max(0, -(-(size - tile) // stride))
  return np.rint(np.linspace(0, max(size - tile, 0), n)).astype(int)


def check_tiling(tile: int, overlap: int, batch: int = 1) -> None:
  """Raises PredictError on a tile side, overlap or batch that cannot work."""
  if tile < 1:
    raise PredictError(f"--tile {tile} must be a positive number of pixels")
  if not 0 <= overlap < tile:
    raise PredictError(f"--overlap {overlap} must be in [0, --tile {tile})")
  if batch < 1:
    raise PredictError(f"--batch {batch} must be at least 1 tile")


def check_rpg(path) -> None:
  """Fails before any prediction on an RPG file that is missing or unreadable."""
  from prep.labels import find_layer
  p = pathlib.Path(path)
  if not p.exists():
    raise PredictError(f"{p}: RPG file not found (--rpg); pass the RPG file used by prep, "
                       f"or leave --rpg out to polygonize the parcel raster")
  find_layer(p)


def blend_window(tile: int, overlap: int) -> np.ndarray:
  """float32 [tile, tile] weights: cosine ramp over `overlap` pixels per edge.

  Values lie in (0, 1]: no pixel gets weight 0, so zone edges (covered by one
  tile only) keep their prediction after normalization.
  """
  w = np.ones(tile, np.float64)
  if overlap:
    ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(overlap) + 0.5) / overlap)
    w[:overlap] = ramp
    w[tile - overlap:] = np.minimum(w[tile - overlap:], ramp[::-1])
  return np.outer(w, w).astype(np.float32)


def nodata_mask(image: np.ndarray) -> np.ndarray:
  """bool [H, W]: True where every month and band is 0 (no observation)."""
  return ~np.any(image != 0, axis=(0, 3))


def check_compatible(zone: ZoneFolder, meta) -> None:
  """Raises PredictError when the zone's months, bands or nomenclature differ from
  those the checkpoint was trained on."""
  where = f"zone {zone.zone_id} ({zone.path})"
  if len(zone.months) != len(meta.months):
    raise PredictError(
        f"{where} has {len(zone.months)} months, the checkpoint was trained on "
        f"{len(meta.months)} ({meta.months[0]}..{meta.months[-1]}); composite the zone "
        f"with the same months")
  if list(zone.bands) != list(meta.bands):
    raise PredictError(
        f"{where} has bands {list(zone.bands)}, the checkpoint was trained on "
        f"{list(meta.bands)}; composite the zone with the same bands")
  if zone.nomenclature and zone.nomenclature != meta.nomenclature_version:
    raise PredictError(
        f"{where} is labelled with nomenclature {zone.nomenclature}, the checkpoint "
        f"predicts nomenclature {meta.nomenclature_version}; relabel the zone or use a "
        f"checkpoint trained on {zone.nomenclature}")


def make_tile_fn(apply_fn: Callable, window: np.ndarray):
  """Jitted (variables, x [B, T, t, t, C]) → window-weighted softmax [B, t, t, K]."""
  import jax
  import jax.numpy as jnp
  window = jnp.asarray(window)[None, :, :, None]

  @jax.jit
  def tile_fn(variables, x):
    logits = apply_fn(variables, x).astype(jnp.float32)
    return jax.nn.softmax(logits, axis=-1) * window
  return tile_fn


def _device_batch(batch: int):
  """(batch rounded up to a multiple of the local devices, mesh or None).

  With several local devices the tile batch is split over a `data` mesh axis
  and the variables are replicated.
  """
  import jax
  devices = jax.local_devices()
  n = len(devices)
  batch = -(-batch // n) * n
  if n == 1:
    return batch, None
  return batch, jax.sharding.Mesh(np.array(devices), ("data",))


def predict_zone(apply_fn: Callable, variables, zone: ZoneFolder, meta, *,
                 tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP,
                 batch: int = DEFAULT_BATCH,
                 probs: bool = False, progress: bool = False,
                 tile_fn=None) -> Prediction:
  """Blended crop-type map of one zone.

  Args:
    apply_fn: (variables, x float32 [B, T, tile, tile, C]) → logits [B, tile, tile, K].
    variables: the model's variables (params, batch stats).
    zone: the zone folder; s2.tif is read and normalized with meta.mean/std.
    meta: DatasetMeta of the checkpoint (months, bands, mean, std, nomenclature).
    tile, overlap: tile side and overlap in pixels (tile fixed → one compilation).
    batch: tiles per model call (at most the zone's tile count, rounded up to a
      multiple of the local devices).
    probs: also return per-class probabilities.
    tile_fn: a prebuilt `make_tile_fn(apply_fn, blend_window(tile, overlap))`
      to reuse its compilation across zones.
  Returns:
    Prediction with classes/confidence uint8 [H, W] (and probabilities [K, H, W]).
  """
  import jax
  from jaxcrop.input_pipeline import normalize
  check_compatible(zone, meta)
  image = zone.read_image()                                   # uint16 [T, H, W, C]
  T, H, W, C = image.shape
  nodata = nodata_mask(image)
  rows, cols = tile_starts(H, tile, overlap), tile_starts(W, tile, overlap)
  ph, pw = rows[-1] + tile - H, cols[-1] + tile - W
  if ph or pw:                                 # only a zone smaller than a tile
    image = np.pad(image, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="symmetric")
  window = blend_window(tile, overlap)
  tile_fn = tile_fn or make_tile_fn(apply_fn, window)
  origins = [(r, c) for r in rows for c in cols]
  batch, mesh = _device_batch(min(batch, len(origins)))
  if mesh is not None:
    P = jax.sharding.PartitionSpec
    variables = jax.device_put(variables, jax.sharding.NamedSharding(mesh, P()))
  acc = np.zeros((H + ph, W + pw, meta.num_classes), np.float32)
  weight = np.zeros((H + ph, W + pw), np.float32)
  bar = _progress(len(origins), zone.zone_id, progress)
  pending = None
  for i in range(0, len(origins), batch):
    chunk = origins[i:i + batch]
    x = np.zeros((batch, T, tile, tile, C), np.float32)
    for j, (r, c) in enumerate(chunk):
      x[j] = normalize(image[:, r:r + tile, c:c + tile], meta.mean, meta.std)
    if mesh is not None:
      x = jax.device_put(x, jax.sharding.NamedSharding(mesh, P("data")))
    out = tile_fn(variables, x)    # dispatched asynchronously: the device runs it
    if pending:                    # while the host adds up the previous batch
      _accumulate(acc, weight, window, *pending)
      bar.update(len(pending[0]))
    pending = (chunk, out)
  _accumulate(acc, weight, window, *pending)
  bar.update(len(pending[0]))
  bar.close()
  p = acc[:H, :W] / weight[:H, :W, None]                       # [H, W, K]
  classes = np.argmax(p, axis=-1).astype(np.uint8)
  confidence = np.rint(100 * p.max(-1)).astype(np.uint8)
  classes[nodata], confidence[nodata] = NODATA, NODATA
  probabilities = None
  if probs:
    probabilities = np.rint(100 * p).astype(np.uint8).transpose(2, 0, 1)
    probabilities[:, nodata] = NODATA
  return Prediction(classes, confidence, probabilities)


def _accumulate(acc, weight, window, chunk, out) -> None:
  """Adds the weighted tile probabilities out [B, t, t, K] at their origins."""
  out = np.asarray(out)
  t = window.shape[0]
  for j, (r, c) in enumerate(chunk):
    acc[r:r + t, c:c + t] += out[j]
    weight[r:r + t, c:c + t] += window


def _progress(total: int, name: str, enabled: bool):
  from tqdm import tqdm
  return tqdm(total=total, desc=f"predict {name}", unit="tile", disable=not enabled,
              leave=False)


# --------------------------------------------------------------------------- #
# Parcel product.

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


# --------------------------------------------------------------------------- #
# Writing.

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


def class_tags(nomenclature) -> dict:
  """GeoTIFF metadata naming the classes: CLASS_NAMES (JSON list) and CLASS_<k>."""
  tags = {"CLASS_NAMES": json.dumps(list(nomenclature.tier3)),
          "NOMENCLATURE": nomenclature.version}
  tags.update({f"CLASS_{k}": n for k, n in enumerate(nomenclature.tier3)})
  return tags


def qgis_style(nomenclature) -> str:
  """A QGIS layer style (.qml) for classes.tif: a paletted renderer with the
  class names as labels. QGIS applies `<name>.qml` beside a raster as its
  default style, so the map opens with its legend; GDAL's colour table alone
  gives colours but shows values, not names."""
  from xml.sax.saxutils import quoteattr
  entries = "\n".join(
      f'        <paletteEntry value="{k}" color="{color}" alpha="255" label={quoteattr(name)}/>'
      for k, (name, color) in enumerate(zip(nomenclature.tier3, nomenclature.colors)))
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


def colormap(nomenclature) -> dict:
  """GDAL colour table: class id → (r, g, b, 255); nodata transparent."""
  cmap = {k: tuple(int(v) for v in rgb) + (255,) for k, rgb in enumerate(nomenclature.rgb())}
  cmap[NODATA] = (0, 0, 0, 0)
  return cmap


def write_outputs(zone: ZoneFolder, pred: Prediction, nomenclature, out_dir, *,
                  overwrite: bool = False, rpg=None) -> pathlib.Path:
  """Writes OUT/<zone_id>/{classes,confidence[,probabilities]}.tif, classes.qml
  (QGIS style) [+ parcels.gpkg].

  The folder is assembled under a temporary name beside it and renamed into
  place when complete; an existing folder is replaced only with `overwrite`.
  """
  out_dir = pathlib.Path(out_dir)
  final = out_dir / zone.zone_id
  check_output(final, overwrite)
  out_dir.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{zone.zone_id}.", suffix=".partial",
                                      dir=out_dir))
  try:
    os.chmod(tmp, 0o777 & ~atomic.umask())           # mkdtemp makes it private (0700)
    tags = class_tags(nomenclature)
    _cog(tmp, tmp / "classes.tif", zone, pred.classes[None], "nearest",
         ["tier-3 class"], tags, colormap(nomenclature))
    (tmp / "classes.qml").write_text(qgis_style(nomenclature), encoding="utf-8")
    _cog(tmp, tmp / "confidence.tif", zone, pred.confidence[None], "average",
         ["confidence (max probability, %)"])
    if pred.probabilities is not None:
      _cog(tmp, tmp / "probabilities.tif", zone, pred.probabilities, "average",
           [f"P({n}) %" for n in nomenclature.tier3], tags)
    if zone.has_labels:
      gdf = parcel_product(zone, pred, nomenclature, rpg)
      gdf.to_file(tmp / "parcels.gpkg", driver="GPKG", layer="parcels")
    old = tmp.with_name(tmp.name.replace(".partial", ".old")) if final.exists() else None
    if old:
      os.replace(final, old)                    # the old maps go only once the new are in
    os.replace(tmp, final)
    if old:
      shutil.rmtree(old)
  finally:
    if tmp.exists():
      shutil.rmtree(tmp)
  return final


def check_tile(apply_fn, variables, meta, tile: int) -> None:
  """Traces the model on one tile (no compute): a tile the model cannot take (e.g. a
  side not divisible by the U-Net's downsampling) becomes a one-line error."""
  import jax
  x = jax.ShapeDtypeStruct((1, len(meta.months), tile, tile, len(meta.bands)), np.float32)
  try:
    jax.eval_shape(apply_fn, variables, x)
  except ValueError as e:
    raise PredictError(f"--tile {tile} does not fit the model: {e}") from None


def checkpoint_nomenclature(meta, workdir):
  """The nomenclature table of the checkpoint's version, checked against the
  class names and colours the checkpoint was trained with (the maps' names and
  colour table come from the table)."""
  from cropcontracts import nomenclature as nomenclature_lib
  v = meta.nomenclature_version
  try:
    nom = nomenclature_lib.load(v)
  except UserError as e:
    raise PredictError(f"--workdir {workdir}: the checkpoint predicts nomenclature {v}, "
                       f"which this code does not have ({e}); use the jaxcrop version "
                       f"it was trained with") from None
  ours, theirs = list(nom.tier3), list(meta.class_names)
  if ours != theirs:
    k = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b),
             min(len(ours), len(theirs)))
    raise PredictError(
        f"--workdir {workdir}: the checkpoint's classes differ from nomenclature {v} of "
        f"this code from class {k} on ({theirs[k] if k < len(theirs) else 'none'!r} vs "
        f"{ours[k] if k < len(ours) else 'none'!r}); the table was edited without a new "
        f"version: restore it, or retrain")
  return nom


def check_output(folder: pathlib.Path, overwrite: bool) -> None:
  if folder.exists() and not overwrite:
    raise PredictError(f"{folder}: output folder already exists; pass --overwrite to "
                       f"replace it or choose another --out")


def score(zone: ZoneFolder, pred: Prediction, class_names) -> dict | None:
  """Pixel scores of the map against the zone's labels (None without labels)."""
  if not zone.has_labels:
    return None
  from jaxcrop import metrics
  labels = zone.read_labels()
  ok = pred.classes != NODATA
  cm = metrics.confusion_matrix_np(np.where(ok, labels, NODATA), pred.classes,
                                   len(class_names))
  return metrics.summarize(cm, list(class_names))


# --------------------------------------------------------------------------- #
# Command line.

def resolve_zones(paths: Sequence[str]) -> list[ZoneFolder]:
  """Zone folders from a list of zone folders or folders of zone folders."""
  zones = []
  for p in map(pathlib.Path, paths):
    zones += [open_zone(p)] if (p / "meta.json").is_file() else find_zones(p)
  return zones


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(
      prog="python -m jaxcrop.predict",
      description="Crop-type maps of zone folders: OUT/<zone_id>/classes.tif, "
                  "confidence.tif, [probabilities.tif], [parcels.gpkg] (Cloud-Optimized "
                  "GeoTIFFs on the zone grid; see docs/predict.md).")
  ap.add_argument("--workdir", required=True, help="training workdir (checkpoints)")
  ap.add_argument("--zone", required=True, nargs="+",
                  help="zone folder(s), or folder(s) of zone folders")
  ap.add_argument("--out", required=True, help="output folder: OUT/<zone_id>/")
  ap.add_argument("--checkpoint", default="best", choices=("best", "last"),
                  help="best validation macro-F1 (falls back to last) or the last one "
                       "(default: %(default)s)")
  ap.add_argument("--tile", type=int, default=DEFAULT_TILE,
                  help="tile side in pixels, one shape for all tiles and zones (with the "
                       "default overlap, 2 x 2 tiles cover a 1000-px zone exactly; a zone "
                       "smaller than a tile is padded; default: %(default)s)")
  ap.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP,
                  help="pixels shared by neighbouring tiles, blended with a cosine ramp "
                       "(default: %(default)s)")
  ap.add_argument("--batch", type=int, default=DEFAULT_BATCH,
                  help="tiles per model call; memory grows with batch x tile² (the "
                       "default model needs ~3 GB for one tile of 512²; default: "
                       "%(default)s)")
  ap.add_argument("--probs", action="store_true", help="also write probabilities.tif")
  ap.add_argument("--rpg", default=None,
                  help="RPG file for parcel geometries (else the parcel raster is "
                       "polygonized)")
  ap.add_argument("--overwrite", action="store_true",
                  help="replace existing OUT/<zone_id> folders")
  args = ap.parse_args(argv)
  return cli.run(_run, args)


def _run(args) -> int:
  check_tiling(args.tile, args.overlap, args.batch)   # every check before any work
  if args.rpg:
    check_rpg(args.rpg)
  if pathlib.Path(args.out).exists() and not pathlib.Path(args.out).is_dir():
    raise PredictError(f"{args.out}: --out is a file; pass a folder (maps go to "
                       f"OUT/<zone_id>/)")
  zones = resolve_zones(args.zone)
  for z in zones:
    check_output(pathlib.Path(args.out) / z.zone_id, args.overwrite)
  from jaxcrop.checkpoint import load_trained
  try:
    trained = load_trained(args.workdir, which=args.checkpoint)
  except FileNotFoundError as e:
    raise PredictError(f"--workdir {args.workdir}: {e}") from None
  meta = trained.meta
  nom = checkpoint_nomenclature(meta, args.workdir)
  for z in zones:
    check_compatible(z, meta)
  apply_fn = lambda v, x: trained.model.apply(v, x, train=False)
  check_tile(apply_fn, trained.variables, meta, args.tile)
  tile_fn = make_tile_fn(apply_fn, blend_window(args.tile, args.overlap))
  for z in zones:
    pred = predict_zone(apply_fn, trained.variables, z, meta, tile=args.tile,
                        overlap=args.overlap, batch=args.batch, probs=args.probs,
                        progress=True, tile_fn=tile_fn)
    folder = write_outputs(z, pred, nom, args.out, overwrite=args.overwrite, rpg=args.rpg)
    print(f"{z.zone_id}: wrote {', '.join(sorted(p.name for p in folder.iterdir()))} "
          f"in {folder}")
    s = score(z, pred, meta.class_names)
    if s:
      print(f"{z.zone_id}: pixel accuracy {s['overall_accuracy']:.3f}, macro-F1 "
            f"{s['macro_f1']:.3f} over {s['num_pixels']} labelled pixels")
  return 0


if __name__ == "__main__":
  sys.exit(main())
