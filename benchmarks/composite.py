"""Benchmarks of the composite stage (prep): `python -m benchmarks prep`.

Prints one JSON line per measure (best of `--repeats`, reference run in the
same process on the same synthetic data) and checks that both give identical
results. The data are random (synthetic), so the numbers are speeds, not
findings about Sentinel-2 imagery.

- composite_median: one zone-month, 8 scenes x 4 bands x 1000 x 1000, ~30%
  invalid observations, `median_composite` vs `numpy.nanmedian` on float64
  (rounded half up like ours).
- gap_fill: 12 months x 4 bands x 1000 x 1000 with ~10% of pixel-months
  missing, `prep.composite.gap_fill` vs the per-pixel loop `gap_fill_reference`
  (here: the rule written the plain way; tests check the two equal). The loop is
  timed on a random subsample of 5000 pixels and scaled linearly to the zone
  (said in the line: `reference_timed_pixels`, `reference_scaled_to_pixels`);
  ours always runs on the whole zone. Repeats of ours and of the loop
  alternate, so that both see the same load on a shared machine.
- stac_zone_year: in `python -m benchmarks.stac` (it needs the loopback
  catalogue of tests/, which prep may not import).
"""
from __future__ import annotations

import json
import warnings

import numpy as np

from benchmarks import best_of, load
from cropcontracts import cli
from prep import composite


def _line(name, ours_s, reference, reference_s, identical, **extra):
  rec = dict(name=name, ours_s=round(ours_s, 4), reference=reference,
             reference_s=round(reference_s, 3),
             ratio=round(reference_s / ours_s, 1), identical=bool(identical), **extra)
  print(json.dumps(rec), flush=True)
  return rec


def bench_median(size: int = 1000, scenes: int = 8, repeats: int = 3) -> dict:
  start = load()
  rng = np.random.default_rng(0)
  stack = rng.integers(1, 10000, (scenes, 4, size, size), dtype=np.uint16)
  valid = rng.random((scenes, size, size)) >= 0.3
  ours_s, (med, _) = best_of(lambda: composite.median_composite(stack, valid), repeats)

  def reference():
    f = np.where(valid[:, None], stack.astype(np.float64), np.nan)
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", RuntimeWarning)
      m = np.nanmedian(f, axis=0)
    return np.where(np.isnan(m), 0, np.floor(m + 0.5)).astype(np.uint16)

  ref_s, ref = best_of(reference, repeats)
  return _line("composite_median", ours_s, "numpy.nanmedian", ref_s,
               np.array_equal(med, ref), target_ratio=10.0,
               shape=f"S={scenes} C=4 H=W={size}", invalid_fraction=0.3, **start)


def bench_gap_fill(size: int = 1000, months: int = 12, p_missing: float = 0.1,
                   sample: int = 5000, repeats: int = 5) -> dict:
  start = load()
  rng = np.random.default_rng(1)
  comp = rng.integers(1, 10000, (months, 4, size, size), dtype=np.uint16)
  missing = rng.random((months, size, size)) < p_missing
  comp[np.broadcast_to(missing[:, None], comp.shape)] = 0
  n = min(sample, size * size)
  flat = rng.choice(size * size, n, replace=False)
  pixels = [(int(i) // size, int(i) % size) for i in flat]
  ours_s = ref_s = float("inf")
  for _ in range(repeats):                     # alternated: same load for both
    s, (filled, flags) = best_of(lambda: composite.gap_fill(comp), 1)
    ours_s = min(ours_s, s)
    s, (ref, ref_flags) = best_of(lambda: gap_fill_reference(comp, pixels), 1)
    ref_s = min(ref_s, s)
  rows, cols = np.array(pixels).T
  same = (np.array_equal(filled[:, :, rows, cols], ref[:, :, rows, cols])
          and np.array_equal(flags[:, rows, cols], ref_flags[:, rows, cols]))
  scaled = ref_s * (size * size) / n
  return _line("gap_fill", ours_s, "per-pixel Python loop (gap_fill_reference)",
               scaled, same, target_ratio=500.0, reference_timed_pixels=n,
               reference_scaled_to_pixels=size * size,
               shape=f"T={months} C=4 H=W={size}", missing_fraction=p_missing, **start)


def gap_fill_reference(composite: np.ndarray, pixels=None) -> tuple[np.ndarray, np.ndarray]:
  """The gap-filling rule of `prep.composite` written as a plain per-pixel loop.

  Args:
    composite: uint16 [T, C, H, W].
    pixels: optional iterable of (row, col) to process; others are returned
      unchanged and unfilled (the benchmark times a subsample).
  Returns:
    Same as `gap_fill`.
  """
  composite = np.asarray(composite, np.uint16)
  T, C, H, W = composite.shape
  out = composite.copy()
  filled = np.zeros((T, H, W), bool)
  if pixels is None:
    pixels = ((r, c) for r in range(H) for c in range(W))
  for r, c in pixels:
    series = [[int(v) for v in composite[t, :, r, c]] for t in range(T)]
    ok = [all(v != 0 for v in s) for s in series]
    known = [t for t in range(T) if ok[t]]
    if not known:
      out[:, :, r, c] = 0
      continue
    for t in range(T):
      if ok[t]:
        continue
      before = [u for u in known if u < t]
      after = [u for u in known if u > t]
      if before and after:
        t0, t1 = before[-1], after[0]
        span, k = t1 - t0, t - t0
        vals = [(2 * (x0 * (span - k) + x1 * k) + span) // (2 * span)   # half up
                for x0, x1 in zip(series[t0], series[t1])]
      elif after:
        vals = series[after[0]]
      else:
        vals = series[before[-1]]
      out[t, :, r, c] = vals
      filled[t, r, c] = True
  return out, filled


def main(argv=None) -> int:
  ap = cli.ArgumentParser(prog="python -m benchmarks.composite", description=__doc__)
  ap.add_argument("--size", type=int, default=1000, help="zone side in pixels")
  ap.add_argument("--repeats", type=int, default=3, help="composite_median repeats")
  ap.add_argument("--gap-repeats", type=int, default=5,
                  help="gap_fill repeats (alternating ours / loop; both are short)")
  return cli.main(ap, _run, argv)


def _run(args) -> int:
  results = [bench_median(args.size, repeats=args.repeats),
             bench_gap_fill(args.size, repeats=args.gap_repeats)]
  return 0 if all(r["identical"] for r in results) else 1


if __name__ == "__main__":
  raise SystemExit(main())
