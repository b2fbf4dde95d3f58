"""A zone's crop-type map from a model: fixed-shape tiles, blended without seams.

A zone (any size) is cut into overlapping tiles of ONE fixed shape [tile, tile]
(default 512 with 24 px overlap: 2 x 2 tiles for a 1000-px zone), so the model
compiles once: as few tiles as the overlap allows, spread evenly from edge to
edge (every tile sees real data; a zone smaller than a tile is padded by
reflection). Tiles go through the model in batches of a fixed size, sharded over
the local devices (`data` mesh axis). Each tile's softmax probabilities are
multiplied by a smooth 2D window — a cosine ramp over the `overlap` pixels of
each edge, 1 inside, strictly positive everywhere — and summed into the zone;
dividing by the summed weights gives a map without seams, in which the centre of
a tile counts more than its edges (where the model sees less context).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from jaxcrop.maps.checks import check_compatible, check_tiling
from cropcontracts.zonefolder import NO_LABEL, ZoneFolder

NODATA = NO_LABEL   # the maps' nodata: the zone folder's no-label value (255)
# Default tiling: 2 x 2 tiles of 512 cover a 1000-px study zone exactly with 24 px
# of overlap (1.05 M model pixels, against 1.8 M for 5 x 5 tiles of 256 with 32),
# one tile per call keeps the default model within ~3 GB on a laptop. Every
# zone size uses the same [1, T, 512, 512, C] shape: one compilation.
DEFAULT_TILE, DEFAULT_OVERLAP, DEFAULT_BATCH = 512, 24, 1


@dataclasses.dataclass
class Prediction:
  """A zone's map. classes, confidence: uint8 [H, W] (255 = nodata);
  probabilities: uint8 [K, H, W] percent (255 = nodata) or None."""
  classes: np.ndarray
  confidence: np.ndarray
  probabilities: np.ndarray | None = None


def tile_starts(size: int, tile: int, overlap: int) -> np.ndarray:
  """int [N] start offsets of the fewest tiles of length `tile` that cover `size`
  with neighbours sharing at least `overlap` pixels, spread evenly: the first
  starts at 0, the last ends at `size` (or at `tile` when size < tile: the
  caller pads)."""
  check_tiling(tile, overlap)
  stride = tile - overlap
  n = 1 + max(0, -(-(size - tile) // stride))
  return np.rint(np.linspace(0, max(size - tile, 0), n)).astype(int)


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
