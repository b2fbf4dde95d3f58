"""`python -m benchmarks accel`: an accelerator's numbers in one short run.

  python -m benchmarks accel              # whatever device JAX finds (≤ 8 min on one H100)
  python -m benchmarks accel --tiny       # the tiny config on a CPU, in seconds (tests)

One JSON line per measure on stdout, progress on stderr:

  accel_device         the device, jax's version, its memory pool, the matmul precision.
  accel_train_step     the default config (`configs/hybrid.py`, batch 32 of 64 px, 12 months)
                       in float32, then bfloat16 (`config.model.dtype`): steps/s, pixels/s,
                       compile seconds, GFLOP per step (XLA's cost analysis of the compiled
                       step) and MFU against the chip's dense peak for the dtype
                       (`benchmarks.train.PEAK_FLOPS`; null for a chip not in the table).
  accel_predict_zone   a 1000² zone of 12 months at the default tiling (512 px, overlap 24,
                       batch 1): km²/s, compile seconds (`benchmarks.predict.zone_line`).
  accel_torch          per dtype: the PyTorch twin (`benchmarks.torch_twin`) eager and under
                       `torch.compile`, repeats interleaved with ours on the same GPU: ratios
                       (> 1: ours faster). A `skipped` line where JAX runs on no GPU or torch
                       is not installed or sees no CUDA device; `error` (or `compile_error`)
                       with the exception's first line where the reference fails, and the
                       run goes on.
  accel_largest_batch  float32, doubling the batch from the config's until the step runs out of
                       memory (JAX's pool: `memory_pool_bytes`), at most `max_batch`, and only
                       while time is left; the compile seconds of each size tried.
  accel_done           the whole run's seconds.

Bounded for a lent machine: `--budget-s` (default 420, so that start-up and the package
install fit in 8 minutes) is checked before each part; a part that would not fit prints
a `skipped` line naming the budget. Nothing here needs TensorFlow, rasterio, geopandas,
pandas or scipy: jax, flax, optax, numpy, ml-collections (and torch for the ratios).
How to run it on a lent machine, and where its lines go: docs/benchmarks.md.
"""
from __future__ import annotations

import gc
import json
import sys
import time

from benchmarks import stamped
from cropcontracts import cli

# Sizes: the default config's (full) and the tests' (tiny).
FULL = dict(variant="", batch=32, side=64, steps=20, repeats=3, zone=1000, months=12,
            tile=None, overlap=None, max_batch=4096)
TINY = dict(variant="tiny", batch=2, side=16, steps=2, repeats=1, zone=64, months=2,
            tile=32, overlap=8, max_batch=4)
TORCH_COMPILE_S = 150     # what the two torch.compile runs may take, at most (estimate)


class Clock:
  """Seconds since the start, the budget left, progress lines on stderr."""

  def __init__(self, budget_s: float):
    self.t0, self.budget_s = time.monotonic(), budget_s

  def elapsed(self) -> float:
    return time.monotonic() - self.t0

  def left(self) -> float:
    return self.budget_s - self.elapsed()

  def log(self, msg: str) -> None:
    print(f"[accel {self.elapsed():6.1f} s] {msg}", file=sys.stderr, flush=True)


def is_oom(error: BaseException) -> bool:
  """Whether an exception is the device running out of memory (XLA's RESOURCE_EXHAUSTED,
  whatever exception class the jax version raises it as)."""
  text = str(error)
  return "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower()


def largest_batch(fits, start: int, max_batch: int, deadline) -> dict:
  """Doubles the batch from `start` while `fits(batch)` (True, or False on running out of
  memory), at most `max_batch`, while `deadline()` is False.

  Returns {largest: the last batch that fit (None if `start` did not), first_failed: the
  first that did not (None if none failed), stopped_by: "out of memory" | "max batch" |
  "time"}.
  """
  largest, batch = None, start
  while batch <= max_batch:
    if deadline():
      return dict(largest=largest, first_failed=None, stopped_by="time")
    if not fits(batch):
      return dict(largest=largest, first_failed=batch, stopped_by="out of memory")
    largest, batch = batch, 2 * batch
  return dict(largest=largest, first_failed=None, stopped_by="max batch")


def device_line() -> dict:
  import jax
  from benchmarks.train import matmul_precision
  dev = jax.devices()[0]
  stats = dev.memory_stats() if hasattr(dev, "memory_stats") else None
  return dict(name="accel_device", backend=jax.default_backend(),
              device=getattr(dev, "device_kind", dev.platform), devices=jax.device_count(),
              jax=jax.__version__, python=sys.version.split()[0],
              memory_pool_bytes=(stats or {}).get("bytes_limit"),
              matmul_precision=matmul_precision())


def train_line(sizes: dict, dtype: str):
  """(accel_train_step line, the step callable, best seconds per step)."""
  import jax
  from benchmarks import train as bt
  from configs.hybrid import get_config
  config = get_config(sizes["variant"])
  config.model.dtype = dtype
  batch, side = sizes["batch"], sizes["side"]
  run, flops, compile_s = bt.jax_step(config, batch, side)
  sec = bt._best_time(run, sizes["repeats"], sizes["steps"])   # pylint: disable=protected-access
  kind = getattr(jax.devices()[0], "device_kind", "cpu")
  peak = None if jax.default_backend() == "cpu" else bt.peak_flops(kind, dtype,
                                                                    bt.matmul_precision())
  return dict(name="accel_train_step", config=f"configs/hybrid.py {sizes['variant'] or 'default'}",
              dtype=dtype, batch=batch, patch=side, months=bt.T, device=kind,
              steps_per_s=round(1 / sec, 3), pixels_per_s=round(batch * side * side / sec),
              compile_s=round(compile_s, 2), train_step_gflops=round(flops / 1e9, 2),
              mfu=round(bt.mfu(flops, sec, peak[0]), 4) if peak else None,
              peak_flops=peak[0] if peak else None,
              mfu_against=peak[1] if peak else f"no peak known for {kind!r}: MFU null"), run, sec


def predict_line(sizes: dict) -> dict:
  from benchmarks import predict as bp
  from jaxcrop.maps import tiling
  tile = sizes["tile"] or tiling.DEFAULT_TILE
  overlap = tiling.DEFAULT_OVERLAP if sizes["overlap"] is None else sizes["overlap"]
  b = bp.Bench(sizes["zone"], sizes["months"], sizes["variant"])
  row, _, _ = bp.zone_line(b, tile, overlap, tiling.DEFAULT_BATCH, sizes["repeats"])
  return dict(row, name="accel_predict_zone", size=sizes["zone"], months=sizes["months"],
              tile=tile, overlap=overlap, batch=tiling.DEFAULT_BATCH,
              model=f"configs/hybrid.py {sizes['variant'] or 'default'}")


def torch_skip_reason() -> str | None:
  """Why the PyTorch ratios cannot run here, or None. JAX's backend is asked first, so a
  CPU run never imports torch (it crashes in a process that holds TensorFlow)."""
  import jax
  if jax.default_backend() != "gpu":
    return f"JAX runs on {jax.default_backend()}, not a GPU: no CUDA ratio"
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    return "torch not installed"
  return None if torch.cuda.is_available() else "torch sees no CUDA device"


def torch_line(sizes: dict, dtype: str, jax_run, clock: Clock) -> dict:
  """PyTorch twin eager and compiled vs ours (`jax_run`), repeats interleaved."""
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks import train as bt
  from configs.hybrid import get_config
  bt._torch_cuda_setup(torch)                   # pylint: disable=protected-access
  config = get_config(sizes["variant"])
  config.model.dtype = dtype
  batch, side = sizes["batch"], sizes["side"]
  fns, rec = [jax_run, bt.torch_step(config, batch, side, "cuda")], {}
  if clock.left() > TORCH_COMPILE_S / 2:
    compiled = bt.torch_step(config, batch, side, "cuda", compile=True)
    t = time.perf_counter()
    try:
      compiled()                                # compiles forward and backward
      rec["torch_compile_s"] = round(time.perf_counter() - t, 1)
      fns.append(compiled)
    except Exception as e:  # pylint: disable=broad-except
      rec["compile_error"] = _first_line(e)     # one try on a lent machine: keep eager's
  else:
    rec["compile_skipped"] = f"budget: {clock.left():.0f} s left"
  times = bt._best_times(fns, sizes["repeats"], sizes["steps"])   # pylint: disable=protected-access
  rec.update(ours_steps_per_s=round(1 / times[0], 3), eager_steps_per_s=round(1 / times[1], 3),
             ratio_eager=round(times[1] / times[0], 3))
  if len(times) == 3:
    rec.update(compile_steps_per_s=round(1 / times[2], 3),
               ratio_compile=round(times[2] / times[0], 3))
  return dict(name="accel_torch", dtype=dtype, batch=batch, patch=side,
              reference_device=f"cuda ({torch.cuda.get_device_name()})", **rec)


def _first_line(error: BaseException) -> str:
  return f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0][:300]}"


def batch_line(sizes: dict, clock: Clock, reserve_s: float, compiled_s: float) -> dict:
  """accel_largest_batch: the float32 step of the config, batch doubled until it fails.
  The config's batch ran in the float32 train line (compiled in `compiled_s`)."""
  from benchmarks import train as bt
  from configs.hybrid import get_config
  config = get_config(sizes["variant"])
  compile_s = {sizes["batch"]: round(compiled_s, 2)}

  def fits(batch: int) -> bool:
    if batch == sizes["batch"]:
      return True                               # ran in the float32 train line
    clock.log(f"largest batch: trying {batch}")
    try:
      run, _, c = bt.jax_step(config, batch, sizes["side"])
      compile_s[batch] = round(c, 2)
      run()
      return True
    except Exception as e:  # pylint: disable=broad-except
      if not is_oom(e):
        raise
      return False
    finally:
      gc.collect()                              # the failed size's buffers go before the next

  found = largest_batch(fits, sizes["batch"], sizes["max_batch"],
                        lambda: clock.left() < reserve_s)
  return dict(name="accel_largest_batch", dtype="float32", patch=sizes["side"],
              max_batch=sizes["max_batch"], compile_s=compile_s,
              memory_pool_bytes=device_line()["memory_pool_bytes"], **found)


def measures(sizes: dict, clock: Clock):
  """Yields the lines of the module docstring, in its order."""
  yield device_line()
  runs, lines = {}, {}
  for dtype in ("float32", "bfloat16"):
    clock.log(f"train step {dtype}: compiling and timing")
    lines[dtype], runs[dtype], _ = train_line(sizes, dtype)
    yield lines[dtype]
  clock.log("whole-zone prediction")
  yield predict_line(sizes)
  reason = torch_skip_reason()
  for dtype in ("float32", "bfloat16"):
    if reason or clock.left() < 60:
      yield dict(name="accel_torch", dtype=dtype,
                 skipped=reason or f"budget: {clock.left():.0f} s left")
      continue
    clock.log(f"PyTorch twin {dtype}: eager and torch.compile")
    try:
      line = torch_line(sizes, dtype, runs[dtype], clock)
    except Exception as e:  # pylint: disable=broad-except
      # The reference failing must not cost the lines after it on a one-try machine.
      line = dict(name="accel_torch", dtype=dtype, error=_first_line(e))
    yield line
  runs.clear()
  gc.collect()
  clock.log("largest batch")
  yield batch_line(sizes, clock, reserve_s=40, compiled_s=lines["float32"]["compile_s"])
  yield dict(name="accel_done", seconds=round(clock.elapsed(), 1), budget_s=clock.budget_s)


def main(argv=None) -> int:
  ap = cli.ArgumentParser(prog="python -m benchmarks accel", description=__doc__)
  ap.add_argument("--tiny", action="store_true",
                  help="the tiny config, batch 2 of 16 px, a 64-px zone: seconds on a CPU")
  ap.add_argument("--budget-s", type=float, default=420.0,
                  help="seconds the run may take; parts that would not fit are skipped")
  return cli.main(ap, _run, argv)


def _run(args) -> int:
  clock = Clock(args.budget_s)
  for line in stamped(measures(TINY if args.tiny else FULL, clock)):
    print(json.dumps(line), flush=True)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
