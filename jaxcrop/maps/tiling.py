"""A zone's crop-type map from a model: fixed-shape tiles, blended without seams.

A short pipeline of named steps, each a function of arrays: `read_imagery` (the
zone folder's s2.tif [+ valid_count.tif]), `cut_tiles` (tile origins, padding),
`ZoneMapper` (the model over batches of tiles, blended into [H, W, K]) and
`finish` (classes, confidence, probabilities, tier maps). What they are given
is checked before (`MapSettings` when made, `compatibility` for the checkpoint),
so no step checks it again. `ZoneMapper` is built once for many zones (one
compilation); `predict_zone` maps one zone folder.

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

Maps per tier (`tier_maps`): the tier-2 / tier-1 map is the parent of the tier-3
map, pixel by pixel (`hierarchy.to_tier`), for every model. For a flat model this
maps its tier-3 classes up the tree; for a hierarchical model it is its tier
heads' consistent decoding (`heads.tier_outputs`: the best path's group and
family are the parents of the tier-3 argmax), so a tier-3 pixel never has a
parent other than the tier-2 map's. (Summing the probabilities of a group's
classes, `hierarchy.tier_log_probs`, can pick a group other than the tier-3
class's: a map set made that way would contradict itself, so it is not used.)
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Iterator

import numpy as np

from cropcontracts.errors import UserError
from cropcontracts.zonefolder import NO_LABEL, ZoneFolder
from jaxcrop import in_season

NODATA = NO_LABEL   # the maps' nodata: the zone folder's no-label value (255)
# Default tiling: 2 x 2 tiles of 512 cover a 1000-px study zone exactly with 24 px
# of overlap (1.05 M model pixels, against 1.8 M for 5 x 5 tiles of 256 with 32),
# one tile per call keeps the default model within ~3 GB on a laptop. Every
# zone size uses the same [1, T, 512, 512, C] shape: one compilation.
DEFAULT_TILE, DEFAULT_OVERLAP, DEFAULT_BATCH = 512, 24, 1


@dataclasses.dataclass(frozen=True)
class MapSettings:
  """How zones are mapped; a value that cannot work is a UserError when made.

  tile: side in pixels of the one tile shape; overlap: pixels that neighbouring
  tiles share, blended (0 <= overlap < tile); batch: tiles per model call
  (at most the zone's tile count, rounded up to a multiple of the local
  devices); probs: also the per-class probabilities; tiers: also the tier-1 /
  tier-2 maps (`tier_maps`); valid_count: the model also takes the zone's
  valid_count.tif (models trained with model.valid_count != "none"); until: an
  in-season map, of the season's first `until` months (`jaxcrop.in_season.cut_off`:
  the later months masked, the earlier gaps filled again without them; None: the
  whole season).
  """
  tile: int = DEFAULT_TILE
  overlap: int = DEFAULT_OVERLAP
  batch: int = DEFAULT_BATCH
  probs: bool = False
  tiers: bool = False
  valid_count: bool = False
  until: int | None = None
  align_season: bool = False

  def __post_init__(self):
    if self.tile < 1:
      raise UserError(f"--tile {self.tile} must be a positive number of pixels")
    if not 0 <= self.overlap < self.tile:
      raise UserError(f"--overlap {self.overlap} must be in [0, --tile {self.tile})")
    if self.batch < 1:
      raise UserError(f"--batch {self.batch} must be at least 1 tile")


@dataclasses.dataclass
class Prediction:
  """A zone's map. classes, confidence: uint8 [H, W] (255 = nodata);
  probabilities: uint8 [K, H, W] percent (255 = nodata) or None;
  tiers: {1: uint8 [H, W], 2: uint8 [H, W]} tier-1 / tier-2 maps (255 = nodata) or None;
  tier_probabilities: {1: uint8 [K1, H, W], 2: uint8 [K2, H, W]} percent, each tier-t
  class's probability (the sum of its tier-3 classes'), or None; season_shift: the
  months the zone's season was moved (season alignment) or None."""
  classes: np.ndarray
  confidence: np.ndarray
  probabilities: np.ndarray | None = None
  tiers: dict | None = None
  tier_probabilities: dict | None = None
  season_shift: float | None = None


@dataclasses.dataclass
class ZoneImagery:
  """What the model sees of a zone: image uint16 [T, H, W, C] (0 = nodata) and,
  for a valid-count model, valid_count uint8 [T, H, W]; season_shift: the months its
  season was moved (`read_imagery` with settings.align_season) or None."""
  zone_id: str
  image: np.ndarray
  valid_count: np.ndarray | None = None
  season_shift: float | None = None


@dataclasses.dataclass
class Tiles:
  """A zone cut into tiles of one shape: the (row, col) origins of the tiles, over
  the image (and valid counts) padded by reflection when the zone is smaller
  than a tile: uint16 [T, H', W', C] (uint8 [T, H', W'])."""
  origins: list
  image: np.ndarray
  valid_count: np.ndarray | None


def read_imagery(zone: ZoneFolder, settings: MapSettings, meta=None,
                 shifts=None) -> ZoneImagery:
  """Step 1, read: the zone folder's s2.tif (+ valid_count.tif when the model takes it),
  cut off after `settings.until` months for an in-season map; with
  settings.align_season, its season moved onto the calendar of the training years
  (`jaxcrop.season_shift`): by `shifts.shift(zone_id, until)` (a `ZoneShifts` of
  the zones mapped together, pooled by region: `zone_shifts`), else by the shift of
  its own valid observations up to the cut-off, against `meta.mean` (the
  checkpoint's DatasetMeta)."""
  cut, align = settings.until is not None, settings.align_season
  counts = zone.read_valid_count() if settings.valid_count or cut or align else None
  image = zone.read_image()
  shift = None
  if align:
    shift = (shifts or zone_shifts([zone], meta, image[None], counts[None])).shift(
        zone.zone_id, settings.until, zone.year)
  if cut:
    image, counts = in_season.cut_off(image, counts, settings.until)
  if align:
    from jaxcrop import season_shift
    image = season_shift.shift_months(image, shift, settings.until)
    counts = season_shift.shift_counts(counts[None], [shift], settings.until)[0]
  return ZoneImagery(zone.zone_id, image, counts if settings.valid_count else None, shift)


def zone_shifts(zones, meta, images=None, counts=None, reference=None):
  """`season_shift.ZoneShifts` of zone folders (their valid observations, pooled by
  year and region) against the training profile of `reference` (a `season_shift.read_reference`
  record; None: `meta.mean`); images / counts: the zones' s2 and valid counts when
  already read (else read here, one zone at a time)."""
  from jaxcrop import season_shift
  out = season_shift.ZoneShifts(meta.mean, meta.std, reference)
  for i, z in enumerate(zones):
    image = z.read_image() if images is None else images[i]
    count = z.read_valid_count() if counts is None else counts[i]
    out.add([z.zone_id], image[None], count[None], [z.zone.region], year=z.year)
  return out


def tile_starts(size: int, tile: int, overlap: int) -> np.ndarray:
  """int [N] start offsets of the fewest tiles of length `tile` that cover `size`
  with neighbours sharing at least `overlap` pixels (0 <= overlap < tile, as
  MapSettings checks), spread evenly: the first starts at 0, the last ends at
  `size` (or at `tile` when size < tile: the caller pads)."""
  stride = tile - overlap
  n = 1 + max(0, -(-(size - tile) // stride))
  return np.rint(np.linspace(0, max(size - tile, 0), n)).astype(int)


def cut_tiles(imagery: ZoneImagery, tile: int, overlap: int) -> Tiles:
  """Step 2, tile: the origins of the tiles covering the zone (`tile_starts` per
  axis); only a zone smaller than a tile is padded (symmetric reflection)."""
  _, H, W, _ = imagery.image.shape
  rows, cols = tile_starts(H, tile, overlap), tile_starts(W, tile, overlap)
  ph, pw = rows[-1] + tile - H, cols[-1] + tile - W
  image, counts = imagery.image, imagery.valid_count
  if ph or pw:
    image = np.pad(image, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="symmetric")
    if counts is not None:
      counts = np.pad(counts, ((0, 0), (0, ph), (0, pw)), mode="symmetric")
  return Tiles([(r, c) for r in rows for c in cols], image, counts)


def tile_batches(tiles: Tiles, tile: int, batch: int) -> Iterator[tuple]:
  """Yields (origins of up to `batch` tiles, x uint16 [batch, T, tile, tile, C] the
  tiles' reflectances as read (the tile function normalizes them: `make_tile_fn`),
  inputs: {"valid_count": float32 [batch, T, tile, tile]} or {}); the last batch is
  filled up with zeros (nodata)."""
  T, _, _, C = tiles.image.shape
  for i in range(0, len(tiles.origins), batch):
    chunk = tiles.origins[i:i + batch]
    x = np.zeros((batch, T, tile, tile, C), tiles.image.dtype)
    counts = tiles.valid_count
    inputs = {} if counts is None else {"valid_count": np.zeros((batch, T, tile, tile),
                                                                np.float32)}
    for j, (r, c) in enumerate(chunk):
      x[j] = tiles.image[:, r:r + tile, c:c + tile]
      if counts is not None:
        inputs["valid_count"][j] = counts[:, r:r + tile, c:c + tile]
    yield chunk, x, inputs


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


def make_tile_fn(apply_fn: Callable, window: np.ndarray, meta):
  """Jitted (variables, x uint16 [B, T, t, t, C], **inputs) → window-weighted softmax
  [B, t, t, K] of the model on x normalized with meta.mean/std (on the device, where
  XLA fuses it into the model's first pass: numpy's passes over every tile cost the
  host about as much as the rest of a zone's host work); inputs (e.g. valid_count
  [B, T, t, t]) go to apply_fn."""
  import jax
  import jax.numpy as jnp
  from jaxcrop.input_pipeline import normalize
  window = jnp.asarray(window)[None, :, :, None]

  @jax.jit
  def tile_fn(variables, x, **inputs):
    x = normalize(x, meta.mean, meta.std)
    logits = apply_fn(variables, x, **inputs).astype(jnp.float32)
    return jax.nn.softmax(logits, axis=-1) * window
  return tile_fn


class ZoneMapper:
  """Step 3, blend: a model that maps zones, built once for many (one compilation;
  with several local devices the variables are replicated once and every batch
  of tiles is split over a `data` mesh axis).

  apply_fn: (variables, x float32 [B, T, tile, tile, C][, valid_count=float32
  [B, T, tile, tile]]) → logits [B, tile, tile, K]; meta: the checkpoint's
  DatasetMeta (mean, std, num_classes; its tree for settings.tiers).
  `mapper(imagery)` → Prediction.
  """

  def __init__(self, apply_fn: Callable, variables, meta, settings: MapSettings = MapSettings()):
    import jax
    from jaxcrop.hierarchy import Tree
    self.meta, self.settings = meta, settings
    self.window = blend_window(settings.tile, settings.overlap)
    self.tile_fn = make_tile_fn(apply_fn, self.window, meta)
    self.tree = Tree.of(meta) if settings.tiers else None
    self.devices = jax.local_devices()
    self.mesh = (jax.sharding.Mesh(np.array(self.devices), ("data",))
                 if len(self.devices) > 1 else None)
    self.variables = self._place(variables)

  def __call__(self, imagery: ZoneImagery, *, progress: bool = False) -> Prediction:
    """The zone's map: cut_tiles, the blended probabilities, finish."""
    tiles = cut_tiles(imagery, self.settings.tile, self.settings.overlap)
    p = self.blend(tiles, imagery.image.shape[1:3],
                   _progress(len(tiles.origins), imagery.zone_id, progress))
    pred = finish(p, nodata_mask(imagery.image), probs=self.settings.probs, tree=self.tree)
    pred.season_shift = imagery.season_shift
    return pred

  def blend(self, tiles: Tiles, shape: tuple[int, int], bar) -> np.ndarray:
    """float32 [H, W, K]: each tile's softmax times the window, summed over the
    tiles, divided by the summed windows. The host adds batch i while the device
    runs batch i + 1 (asynchronous dispatch)."""
    (H, W), t = shape, self.settings.tile
    acc = np.zeros(tiles.image.shape[1:3] + (self.meta.num_classes,), np.float32)
    weight = np.zeros(tiles.image.shape[1:3], np.float32)
    pending = None
    for chunk, x, inputs in tile_batches(tiles, t, self._batch(len(tiles.origins))):
      x, inputs = self._place((x, inputs), "data")
      out = self.tile_fn(self.variables, x, **inputs)   # the device runs it asynchronously
      if pending:
        _accumulate(acc, weight, self.window, *pending)
        bar.update(len(pending[0]))
      pending = (chunk, out)
    _accumulate(acc, weight, self.window, *pending)
    bar.update(len(pending[0]))
    bar.close()
    p = acc[:H, :W]
    p /= weight[:H, :W, None]                  # in place: a zone's [H, W, K] once
    return p

  def _batch(self, n_tiles: int) -> int:
    """min(settings.batch, n_tiles) rounded up to a multiple of the local devices."""
    n = len(self.devices)
    return -(-min(self.settings.batch, n_tiles) // n) * n

  def _place(self, tree, *axes):
    """`tree` on the mesh, split over `axes` (replicated for none); as is on one device."""
    if self.mesh is None:
      return tree
    import jax
    spec = jax.sharding.PartitionSpec(*axes)
    return jax.device_put(tree, jax.sharding.NamedSharding(self.mesh, spec))


def nodata_mask(image: np.ndarray) -> np.ndarray:
  """bool [H, W]: True where every month and band is 0 (no observation).

  image: uint16 [T, H, W, C]. The months OR-ed together first (a pass over
  contiguous slabs), then the bands: 6x faster than `any` over axes (0, 3) on a
  1000² zone of 12 months (0.53 -> 0.09 s, 2026-12-06, loaded)."""
  return ~np.bitwise_or.reduce(image, axis=0).any(axis=-1)


def finish(p: np.ndarray, nodata: np.ndarray, *, probs: bool = False, tree=None) -> Prediction:
  """Step 4: the Prediction of blended probabilities p float32 [H, W, K]: argmax
  classes, confidence and (probs) probabilities in percent, 255 where `nodata`
  (bool [H, W]); with a `hierarchy.Tree`, the tier maps (and with probs, the tier
  probabilities: `calibration.tier_probs`)."""
  from jaxcrop.calibration import tier_probs
  classes = np.argmax(p, axis=-1).astype(np.uint8)
  confidence = np.rint(100 * p.max(-1)).astype(np.uint8)
  classes[nodata], confidence[nodata] = NODATA, NODATA
  probabilities = percent(p, nodata) if probs else None
  tier_probabilities = None
  if probs and tree is not None:
    H, W, K = p.shape
    tier_probabilities = {
        t: percent(tier_probs(p.reshape(-1, K), tree.parents(t), tree.sizes[t - 1])
                   .reshape(H, W, -1), nodata) for t in (1, 2)}
  return Prediction(classes, confidence, probabilities,
                    tier_maps(classes, tree) if tree is not None else None, tier_probabilities)


def percent(p: np.ndarray, nodata: np.ndarray) -> np.ndarray:
  """uint8 [K, H, W]: probabilities p float [H, W, K] in percent (0-100), 255 where
  `nodata` (bool [H, W])."""
  out = np.rint(100 * p).astype(np.uint8).transpose(2, 0, 1)
  out[:, nodata] = NODATA
  return out


def tier_maps(classes: np.ndarray, tree) -> dict:
  """{1: uint8 [H, W], 2: uint8 [H, W]}: the parents of the tier-3 map `classes`
  (uint8 [H, W], 255 = nodata stays nodata); see the module doc for why."""
  from jaxcrop.hierarchy import to_tier
  return {t: to_tier(classes, tree.parents(t)).astype(np.uint8) for t in (1, 2)}


def predict_zone(apply_fn: Callable, variables, zone: ZoneFolder, meta,
                 settings: MapSettings = MapSettings()) -> Prediction:
  """One zone folder's map: the zone checked against the checkpoint's `meta`
  (`compatibility.check_compatible`), then read_imagery and a ZoneMapper (to
  map many zones, build one ZoneMapper and check every zone first, as
  `python -m jaxcrop.predict` does).

  Returns Prediction with classes/confidence uint8 [H, W] (and probabilities
  [K, H, W], tier maps, as `settings` asks).
  """
  from jaxcrop.maps.compatibility import check_compatible
  check_compatible(zone, meta)
  return ZoneMapper(apply_fn, variables, meta, settings)(read_imagery(zone, settings, meta))


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
  """Pixel scores of the map against the zone's labels (None without labels):
  `metrics.summarize` + `agricultural_area` (None without a background class)."""
  if not zone.has_labels:
    return None
  from jaxcrop import metrics
  labels = zone.read_labels()
  ok = pred.classes != NODATA
  cm = metrics.confusion_matrix_np(np.where(ok, labels, NODATA), pred.classes,
                                   len(class_names))
  return {**metrics.summarize(cm, list(class_names)),
          "agricultural_area": metrics.agricultural_area(cm, metrics.background_id(class_names))}
