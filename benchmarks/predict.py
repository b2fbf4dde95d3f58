"""Benchmark of whole-zone prediction: one JSON line per measure.

  python -m benchmarks predict                      # 1000 x 1000 zone, 12 months
  python -m benchmarks.predict --size 256 --repeats 1   # quick look
  python -m benchmarks predict --tiny               # 64-px zone, tiny model (tests)

The model is `configs/hybrid.py`'s default (random init: speed does not depend
on the weights) on a zone of random reflectances held in memory (`memory_zone`:
the read of s2.tif is not timed, and the timed path needs no rasterio, TensorFlow,
geopandas, pandas or scipy: it runs where only the JAX stack is installed). Measures:

  predict_compile     compilation: ours (one fixed tile shape) against the naive
                      approach (non-overlapping tiles one at a time, edge tiles
                      at their own shape: one compilation per shape).
  predict_zone        warm, best of `repeats`, at the command's default tiling
                      (`jaxcrop.maps.tiling.DEFAULT_*`: 512 px tiles, overlap 24,
                      batch 1): ours (what predict runs: `models.inference_fn`)
                      against the naive approach (model.apply, warm; no blending,
                      so seams, and one compilation per edge shape);
                      km²/s, CPU seconds, XLA GFLOP per zone and, on an
                      accelerator, the hours for 550,000 km² (metropolitan France).
  predict_zone_tile256  ours at the default tiling against ours with --tile 256
                      --overlap 32 --batch 4 (5 x 5 tiles for 1000²).
  predict_zone_encoder_chunks  ours against ours calling model.apply (the temporal
                      encoder over a whole tile at once, the BatchNorms as they are;
                      not `hybrid.chunked_logits`), same tiling.
  predict_zone_host_floor  the same with a model that costs nothing: the host's
                      share per zone (pad, normalize, blend), a floor on any
                      accelerator, and France at that rate in one process.
  write_outputs       the COG writing of classes/confidence/probabilities (a CPU
                      line: `skipped` where rasterio is not installed).
Synthetic input: these are speeds, not accuracies.
"""
from __future__ import annotations

import json
import pathlib
import tempfile
import time

import numpy as np

from benchmarks import stamped, xla_flops
from cropcontracts import cli
from jaxcrop import host_memory

FRANCE_KM2 = 550_000


def memory_zone(size: int, months: int, seed: int = 0):
  """(zone folder, its s2 imagery uint16 [T, H, W, C]): a size² zone of random reflectances
  held in memory. The folder is the record and its valid counts (months, bands, grid;
  nothing on disk):
  the mapper gets the imagery, so the timed path reads no file and needs
  no rasterio (the accelerator machine has none)."""
  from cropcontracts import zonefolder
  from cropcontracts.zone import Zone
  zone = Zone(zone_id="bench_0", region="bench", town="bench", index=0, epsg=32631,
              x0=500000.0, y0=5000000.0, width=size, height=size, source="bench")
  meta = {"imagery": {"months": zonefolder.month_labels(2023, months),
                      "bands": list(zonefolder.BANDS)}}
  image = np.random.default_rng(seed).integers(
      200, 4000, (months, size, size, len(zonefolder.BANDS)), dtype=np.uint16)

  class MemoryZone(zonefolder.ZoneFolder):
    """Valid counts (validity.tif's source) in memory too: two clear observations a month."""

    def read_valid_count(self, window=None) -> np.ndarray:
      h, w = (size, size) if window is None else (window.height, window.width)
      return np.full((months, h, w), 2, np.uint8)

  return MemoryZone(pathlib.Path("bench_0"), meta, zone), image


def _meta(zone, num_classes: int):
  from cropcontracts.dataset_meta import DatasetMeta
  T, C = len(zone.months), len(zone.bands)
  names = [f"c{k}" for k in range(num_classes)]
  return DatasetMeta(
      num_classes=num_classes, class_names=names, tier2_names=names, tier1_names=names,
      tier2_of=np.arange(num_classes), tier1_of=np.arange(num_classes),
      colors=["#000000"] * num_classes, months=zone.months, bands=zone.bands,
      mean=np.full((T, C), 1500, np.float32), std=np.full((T, C), 800, np.float32),
      class_pixel_counts=np.ones(num_classes), nomenclature_version="v1", version="bench")


def naive_predict(f, variables, image, meta, tile: int) -> np.ndarray:
  """Reference: non-overlapping tiles, one per call, edge tiles at their own shape.

  Args:
    f: jitted (variables, x [1, T, h, w, C]) → classes [1, h, w]; it compiles
      once per distinct (h, w).
    image: uint16 [T, H, W, C] the zone's imagery.
  Returns uint8 [H, W] classes (no blending, no nodata handling).
  """
  from jaxcrop.input_pipeline import normalize
  _, H, W, _ = image.shape
  out = np.zeros((H, W), np.uint8)
  for r in range(0, H, tile):
    for c in range(0, W, tile):
      x = normalize(image[:, r:r + tile, c:c + tile], meta.mean, meta.std)[None]
      out[r:r + tile, c:c + tile] = np.asarray(f(variables, x))[0]
  return out


_CPU = {}   # the process CPU seconds of the best run of the last _best call


def _model_pixels(size: int, tile: int, overlap: int, batch: int) -> int:
  """Pixels the model computes for a size² zone (tiles + the last batch's padding)."""
  from jaxcrop.maps.tiling import tile_starts
  n, b = len(tile_starts(size, tile, overlap)) ** 2, _batch(size, tile, overlap, batch)
  return -(-n // b) * b * tile * tile


def _compile_s(fn, variables, shapes, months: int, dtype=np.float32) -> float:
  """Seconds to lower and compile jitted `fn` for inputs `dtype` [B, T, h, w, 4] of `shapes`
  (uint16 for the mapper's tile function, which normalizes; float32 for the naive one)."""
  t = time.perf_counter()
  for b, h, w in shapes:
    fn.lower(variables, np.zeros((b, months, h, w, 4), dtype)).compile()
  return time.perf_counter() - t


def _best_interleaved(fns, repeats: int) -> list[tuple[float, float]]:
  """[(best wall seconds, its process CPU seconds)] of each callable, their `repeats`
  runs interleaved (a, b, a, b, …): both sides get the same share of a noisy, shared
  machine, which timing one after the other does not (as `benchmarks.train`)."""
  times = [[] for _ in fns]
  for _ in range(repeats):
    for i, fn in enumerate(fns):
      t, c = time.perf_counter(), time.process_time()
      fn()
      times[i].append((time.perf_counter() - t, time.process_time() - c))
  return [min(ts) for ts in times]


def _best(fn, repeats: int) -> float:
  """Best wall time of `repeats` runs (its process CPU time goes to _CPU["s"]:
  on a shared machine CPU seconds are steadier than wall seconds)."""
  times = []
  for _ in range(repeats):
    t, c = time.perf_counter(), time.process_time()
    fn()
    times.append((time.perf_counter() - t, time.process_time() - c))
  wall, _CPU["s"] = min(times)
  return wall


class Bench:
  """What every prediction measure shares: the model of `configs/hybrid.py:<variant>`
  (random init: speed does not depend on the weights), a size² in-memory zone of
  `months` months (`memory_zone`), its DatasetMeta, and the nomenclature."""

  def __init__(self, size: int, months: int, variant: str = ""):
    import jax
    from configs import hybrid
    from cropcontracts import nomenclature
    from jaxcrop.models import build_model, inference_fn
    self.nom = nomenclature.load()
    model = build_model(hybrid.get_config(variant).model, self.nom.num_classes)
    self.apply_fn = inference_fn(model)                    # what predict maps with
    self.plain_fn = lambda v, x: model.apply(v, x, train=False)   # a notebook's call
    self.variables = jax.jit(lambda k: model.init(
        k, np.zeros((1, months, 32, 32, 4), np.float32), train=False))(jax.random.key(0))
    self.zone, self.image = memory_zone(size, months)
    self.meta = _meta(self.zone, self.nom.num_classes)
    self.size, self.months, self.km2 = size, months, size * size * 1e-4   # 10 m pixels

  def mapper(self, tile: int, overlap: int, batch: int, probs: bool = False,
             apply_fn=None, variables=None):
    """The command's `tiling.ZoneMapper` at this tiling (one compilation per mapper)."""
    from jaxcrop.maps import tiling
    return tiling.ZoneMapper(apply_fn or self.apply_fn, variables or self.variables, self.meta,
                             tiling.MapSettings(tile=tile, overlap=overlap, batch=batch,
                                                probs=probs))

  def predict(self, mapper):
    """The zone's map through `mapper` (the command's path after the read: the zone's
    imagery is passed in)."""
    from jaxcrop.maps import tiling
    return mapper(tiling.ZoneImagery(self.zone.zone_id, self.image))


def zone_line(b: Bench, tile: int, overlap: int, batch: int, repeats: int, reference=None):
  """(`predict_zone` line without its reference's fields, its unrounded best seconds,
  the reference's (wall, CPU) best or None): compile and best warm seconds, km²/s, XLA
  GFLOP per zone (`python -m benchmarks accel`, `measures`); `reference`, a callable
  (warm), is timed interleaved with ours.

  The tile function is compiled ahead of time, once: timed alone, its cost analysis
  counted, and (on one device) its executable is what the mapper calls."""
  import jax
  from jaxcrop.maps.tiling import tile_starts
  m = b.mapper(tile, overlap, batch)
  fn = m.tile_fn
  calls = -(-len(tile_starts(b.size, tile, overlap)) ** 2 // _batch(b.size, tile, overlap, batch))
  x = np.zeros((_batch(b.size, tile, overlap, batch), b.months, tile, tile, 4), np.uint16)
  t = time.perf_counter()
  compiled = fn.lower(b.variables, x).compile()
  compile_s = time.perf_counter() - t
  if jax.local_device_count() == 1:            # several: the jitted fn takes sharded inputs
    m.tile_fn = compiled
  # XLA's cost analysis counts a loop's body once, and on a CPU ours runs the encoder in a
  # `lax.map` over row blocks: the FLOPs are those of model.apply's tile function.
  flops = xla_flops(b.mapper(tile, overlap, batch, apply_fn=b.plain_fn).tile_fn
                    .lower(b.variables, x).compile())
  first = _best(lambda: b.predict(m), 1)
  fns = [lambda: b.predict(m)] + ([reference] if reference else [])
  (ours_s, ours_cpu), *ref = _best_interleaved(fns, repeats)
  row = dict(name="predict_zone", ours_s=round(ours_s, 3), ours_cpu_s=round(ours_cpu, 2),
             km2_per_s=round(b.km2 / ours_s, 3), compile_s=round(compile_s, 2),
             first_call_s=round(first, 2),
             model_pixels=_model_pixels(b.size, tile, overlap, batch),
             gflop_per_zone=round(flops * calls / 1e9, 1))
  if jax.default_backend() != "cpu":
    row["france_hours"] = round(FRANCE_KM2 / (b.km2 / ours_s) / 3600, 2)
  return row, ours_s, (ref[0] if ref else None)


def _batch(size: int, tile: int, overlap: int, batch: int) -> int:
  """The tiles per model call for a size² zone: at most its tile count."""
  from jaxcrop.maps.tiling import tile_starts
  return min(batch, len(tile_starts(size, tile, overlap)) ** 2)


def _compile_line(b: Bench, tile, overlap, batch, f_naive, base) -> dict:
  """predict_compile: our one tile shape against one compilation per naive tile shape."""
  size = b.size
  ours_c = _compile_s(b.mapper(tile, overlap, batch).tile_fn, b.variables,
                      [(_batch(size, tile, overlap, batch), tile, tile)], b.months, np.uint16)
  shapes = sorted({(1, min(tile, size - r), min(tile, size - c))
                   for r in range(0, size, tile) for c in range(0, size, tile)})
  ref_c = _compile_s(f_naive, b.variables, shapes, b.months)
  return dict(name="predict_compile", ours_s=round(ours_c, 2),
              reference=f"naive: one compilation per tile shape ({len(shapes)} shapes)",
              reference_s=round(ref_c, 2), ratio=round(ref_c / ours_c, 2), **base)


def _host_floor_line(b: Bench, tile, overlap, batch, repeats, base) -> dict:
  """The host's share (pad, normalize, transfer, blend, argmax), with a model that costs
  nothing: a floor per zone however fast the accelerator."""
  def trivial(v, x):
    m = x.mean(axis=(1, 4))[..., None]                   # [B, t, t, 1]
    return m * v["scale"]                                # [B, t, t, K]
  m0 = b.mapper(tile, overlap, batch, apply_fn=trivial,
                variables={"scale": np.ones(b.nom.num_classes, np.float32)})
  b.predict(m0)                                # compile
  host = _best(lambda: b.predict(m0), repeats)
  return dict(name="predict_zone_host_floor", ours_s=round(host, 2),
              ours_cpu_s=round(_CPU["s"], 2),
              france_hours_one_process=round(FRANCE_KM2 / b.km2 * host / 3600, 2),
              note="model replaced by a mean: what a zone costs the host; 550,000 km² "
                   "at this rate in one process", **base)


def write_line(b: Bench, tile, overlap, batch, repeats) -> dict:
  """write_outputs: the COG writing, a CPU line; skipped where rasterio is absent."""
  try:
    import rasterio  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    return dict(name="write_outputs", skipped="rasterio not installed (the COG writing "
                "is a CPU measure; the model and blending lines need no rasterio)")
  from jaxcrop.maps import geotiff
  pred = b.predict(b.mapper(tile, overlap, batch, probs=True))
  with tempfile.TemporaryDirectory() as tmp:
    w = _best(lambda: geotiff.write_outputs(b.zone, pred, b.nom, pathlib.Path(tmp) / "out",
                                            overwrite=True), repeats)
  return dict(name="write_outputs", ours_s=round(w, 2), size=b.size,
              num_classes=b.nom.num_classes, files="classes, confidence, probabilities (COG)")


def measures(size: int = 1000, months: int = 12, repeats: int = 2, tile: int | None = None,
             overlap: int | None = None, batch: int | None = None,
             other=(256, 32, 4), variant: str = ""):
  """Yields one dict per measure (see the module docstring); tiling defaults to
  the command's, `other` = (tile, overlap, batch) it is compared with; `variant`
  the config variant of the model (`tiny` in the tests)."""
  import jax
  from jaxcrop.maps import tiling
  tile = tiling.DEFAULT_TILE if tile is None else tile
  overlap = tiling.DEFAULT_OVERLAP if overlap is None else overlap
  batch = tiling.DEFAULT_BATCH if batch is None else batch
  b = Bench(size, months, variant)
  backend = jax.default_backend()
  base = dict(size=size, months=months, tile=tile, overlap=overlap, batch=batch,
              backend=backend, devices=jax.local_device_count(),
              model=f"configs/hybrid.py {variant or 'default'}", zone="in memory")
  f_naive = jax.jit(lambda v, x: b.plain_fn(v, x).argmax(-1))
  yield _compile_line(b, tile, overlap, batch, f_naive, base)

  naive = lambda: naive_predict(f_naive, b.variables, b.image, b.meta, tile)
  naive()                                      # warm the naive shapes
  row, ours_s, (ref_s, ref_cpu) = zone_line(b, tile, overlap, batch, repeats, naive)
  row.update(reference="naive: model.apply on non-overlapping tiles, batch 1, edge tiles "
                       "at their own shape, no blending (warm; repeats interleaved with ours)",
             reference_s=round(ref_s, 2), reference_cpu_s=round(ref_cpu, 2),
             ratio=round(ref_s / ours_s, 2), target_s=20.0 if backend == "cpu" else None,
             **base)
  yield row

  t2, o2, b2 = other
  m2 = b.mapper(t2, o2, b2)
  b.predict(m2)                                # compile
  s2 = _best(lambda: b.predict(m2), repeats)
  yield dict(name=f"predict_zone_tile{t2}", ours_s=row["ours_s"],
             reference=f"ours, --tile {t2} --overlap {o2} --batch {b2}",
             reference_s=round(s2, 2), reference_cpu_s=round(_CPU["s"], 2),
             ratio=round(s2 / ours_s, 2),
             reference_model_pixels=_model_pixels(size, t2, o2, b2), **base)
  m3 = b.mapper(tile, overlap, batch, apply_fn=b.plain_fn)
  b.predict(m3)                                # compile
  s3 = _best(lambda: b.predict(m3), repeats)
  yield dict(name="predict_zone_encoder_chunks", ours_s=row["ours_s"],
             reference="ours with model.apply, the temporal encoder over the whole tile at "
                       "once, the BatchNorms as they are (not hybrid.chunked_logits)",
             reference_s=round(s3, 2), ratio=round(s3 / ours_s, 2), **base)
  yield _host_floor_line(b, tile, overlap, batch, repeats, base)
  yield write_line(b, tile, overlap, batch, repeats)


def main(argv=None) -> int:
  ap = cli.ArgumentParser(prog="python -m benchmarks.predict")
  ap.add_argument("--size", type=int, default=1000)
  ap.add_argument("--months", type=int, default=12)
  ap.add_argument("--repeats", type=int, default=2)
  ap.add_argument("--tiny", action="store_true",
                  help="a 64-px zone of 2 months, the tiny model, 32-px tiles (tests)")
  return cli.main(ap, host_memory.first(_run), argv)   # as the predict command runs


def _run(args) -> None:
  if args.tiny:
    lines = measures(64, 2, 1, tile=32, overlap=8, batch=1, other=(64, 8, 2), variant="tiny")
  else:
    lines = measures(args.size, args.months, args.repeats)
  for m in stamped(lines):
    print(json.dumps(m), flush=True)


if __name__ == "__main__":
  raise SystemExit(main())
