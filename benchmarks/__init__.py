"""Speed measures of every stage, each line against a reference run in the same process.

`python -m benchmarks` runs them all (benchmarks/cli.py); one module per measured stage:
`composite` (prep: median compositing, gap filling), `data` (the input pipeline), `train`
(the train step against its PyTorch twin, `torch_twin`), `predict` (whole-zone prediction), `stac` (a zone-year through the STAC route against
the local route, on a loopback catalogue).
"""


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
