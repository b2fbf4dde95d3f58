"""Speed measures of every stage, each line against a reference run in the same process.

`python -m benchmarks` runs them all (benchmarks/cli.py); one module per measured stage:
`composite` (prep: median compositing, gap filling), `data` (the input pipeline), `train`
(the train step against its PyTorch twin, `torch_twin`), `predict` (whole-zone prediction), `stac` (a zone-year through the STAC route against
the local route, on a loopback catalogue).
"""
import os


def load() -> dict:
  """{load_avg, cpus, loaded}: the 1-minute load average now, the usable cores, and whether
  the load exceeds them (a line measured so is slower than the idle machine would run it).

  Every benchmark line carries it, read at the start of its measure (`stamped`)."""
  load_avg = os.getloadavg()[0]
  cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  return {"load_avg": round(load_avg, 2), "cpus": cpus, "loaded": load_avg > cpus}


def stamped(lines):
  """Yields each dict of the iterable `lines` with `load()` as read before it was computed:
  a generator of measures computes each line when asked for it, so that is the load at the
  start of that line's measure."""
  it = iter(lines)
  while True:
    start = load()
    try:
      line = next(it)
    except StopIteration:
      return
    yield {**line, **start}


def best_of(fn, repeats: int):
  """(best wall seconds over `repeats` calls of fn(), the last result): machines are
  shared and noisy, so every measure reports its best run."""
  import time  # pylint: disable=g-import-not-at-top
  best, out = float("inf"), None
  for _ in range(repeats):
    t = time.perf_counter()
    out = fn()
    best = min(best, time.perf_counter() - t)
  return best, out


def xla_flops(compiled) -> float:
  """XLA's count of the floating-point operations of one call of a compiled executable
  (`jax.jit(f).lower(...).compile()`); NaN where the backend counts none."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost   # a list in older jax
  return float((cost or {}).get("flops", float("nan")))
