"""Monthly median composites and temporal gap filling, as in the study.

Both routes (local Sentinel-2 scenes, Earth Engine) end here, so that a zone's
imagery does not depend on where its pixels came from:

1. `monthly_median`: per pixel, per month, the median of the valid
   observations (SCL 4-7, reflectance > 0). A median of an even count is the
   mean of the two middle values, rounded half up: `(a + b + 1) // 2`.
2. `gap_fill`: a pixel-month without any valid observation is interpolated
   along time. The study's rule for a single gap is the mean of the previous
   and next month; the first month takes the next available value, the last
   month the previous one. For a run of n-1 consecutive missing months
   between valid months t0 and t1 we interpolate linearly,
   `v(t) = v0 + (v1 - v0) * (t - t0) / (t1 - t0)`, rounded half up, which is
   the study's mean of neighbours when the run has length 1. A leading run takes
   the first valid value, a trailing run the last one. Pixels with no valid
   month at all stay 0 (nodata).

Rounding is one rule everywhere: integer means are rounded half up
(`round_half_up_div`). Reflectances are uint16 (x 10000), 0 = nodata.
"""
from __future__ import annotations

import functools

import numpy as np

NODATA = 0


def round_half_up_div(num, den):
  """`num / den` rounded half up, for non-negative integer arrays."""
  return (2 * num + den) // (2 * den)


@functools.lru_cache(maxsize=None)
def sorting_network(n: int) -> tuple[tuple[int, int], ...]:
  """Comparators (i, j), i < j, of Batcher's odd-even merge sort for n inputs.

  Built for the next power of two and pruned of comparators touching an index
  >= n: those would only meet +inf padding, which never moves.
  """
  size = 1
  while size < n:
    size *= 2
  pairs = []
  p = 1
  while p < size:
    k = p
    while k >= 1:
      for j in range(k % p, size - k, 2 * k):
        for i in range(min(k, size - j - k)):
          a, b = i + j, i + j + k
          if a // (2 * p) == b // (2 * p) and b < n:
            pairs.append((a, b))
      k //= 2
    p *= 2
  return tuple(pairs)


def _sorted_rows(stack: np.ndarray) -> list[np.ndarray]:
  """Sorts [S, ...] along axis 0 in place with a compare-exchange network.

  Returns the S sorted slices (views of `stack` or fresh buffers).
  """
  rows = list(stack)
  if len(rows) < 2:
    return rows
  buf = np.empty_like(rows[0])
  for i, j in sorting_network(len(rows)):
    np.minimum(rows[i], rows[j], out=buf)
    np.maximum(rows[i], rows[j], out=rows[j])
    rows[i], buf = buf, rows[i]
  return rows


def sort_scenes(stack: np.ndarray) -> np.ndarray:
  """Sorts along axis 0 (a few scenes) with a compare-exchange network.

  For S <= ~32 slices of a large image this is several times faster than
  `np.sort(axis=0)`, which sorts millions of tiny strided rows.

  Args:
    stack: [S, ...] array; not modified.
  Returns:
    [S, ...] sorted ascending along axis 0.
  """
  return np.stack(_sorted_rows(np.array(stack)))


def _pick_rank(rows: list[np.ndarray], rank: np.ndarray) -> np.ndarray:
  """[C, H, W] value of rank `rank` [H, W] from S sorted [C, H, W] rows.

  Bit masks (0 or 65535) select the row of each pixel: a broadcast `&` is
  several times faster than `take_along_axis` or a masked `copyto` here.
  """
  out = np.zeros_like(rows[0])
  tmp = np.empty_like(out)
  for s in range(int(rank.max(initial=0)) + 1):
    mask = np.negative((rank == s).view(np.uint8).astype(np.uint16))
    np.bitwise_and(rows[s], mask, out=tmp)
    out |= tmp
  return out


def median_composite(scenes: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Pixel-wise median of the valid observations of one month.

  An observation is used where `valid` is True and all its bands are > 0
  (0 is nodata in every input). Even counts give the mean of the two middle
  values, rounded half up. Invalid observations are set to 65535 so that they
  sort last; the ranks of the middle values then depend on the count only.

  Args:
    scenes: uint16 [S, C, H, W] reflectance of the month's acquisitions.
    valid: bool [S, H, W], True where the SCL class is 4-7.
  Returns:
    uint16 [C, H, W] composite (0 where no valid observation) and
    uint8 [H, W] valid counts.
  """
  scenes = np.asarray(scenes, np.uint16)
  S, C, H, W = scenes.shape
  if S == 0:
    return np.zeros((C, H, W), np.uint16), np.zeros((H, W), np.uint8)
  use = np.asarray(valid, bool).copy()
  for c in range(C):
    use &= scenes[:, c] != NODATA
  count = use.sum(axis=0, dtype=np.int64)                         # [H, W]
  invalid = np.negative((~use).view(np.uint8).astype(np.uint16))  # 0 or 65535
  rows = _sorted_rows(scenes | invalid[:, None])
  a = _pick_rank(rows, np.maximum(count - 1, 0) // 2)             # middle ranks
  b = _pick_rank(rows, count // 2)
  median = (a >> 1) + (b >> 1) + ((a | b) & 1)                    # (a+b+1)//2
  median[:, count == 0] = NODATA
  return median, np.minimum(count, 255).astype(np.uint8)


def monthly_median(scenes: np.ndarray, valid: np.ndarray, month_of_scene,
                   n_months: int = 12) -> tuple[np.ndarray, np.ndarray]:
  """Pixel-wise median of the valid scenes of each month.

  Args:
    scenes: uint16 [S, C, H, W] reflectance, one entry per acquisition.
    valid: bool [S, H, W], True where the SCL class is 4-7.
    month_of_scene: int [S], 0-based month of each acquisition.
    n_months: T, the number of months of the output.
  Returns:
    uint16 [T, C, H, W] composites (0 where no valid scene) and
    uint8 [T, H, W] valid counts.
  """
  scenes = np.asarray(scenes, np.uint16)
  valid = np.asarray(valid, bool)
  month_of_scene = np.asarray(month_of_scene, np.int64).reshape(-1)
  S, C, H, W = scenes.shape
  if valid.shape != (S, H, W) or month_of_scene.shape != (S,):
    raise ValueError(f"scenes {scenes.shape}, valid {valid.shape} and month_of_scene "
                     f"{month_of_scene.shape} disagree")
  if S and (month_of_scene.min() < 0 or month_of_scene.max() >= n_months):
    raise ValueError(f"month_of_scene must be in [0, {n_months}), got "
                     f"{sorted(set(month_of_scene.tolist()))}")
  composite = np.zeros((n_months, C, H, W), np.uint16)
  counts = np.zeros((n_months, H, W), np.uint8)
  for t in np.unique(month_of_scene):
    sel = month_of_scene == t
    composite[t], counts[t] = median_composite(scenes[sel], valid[sel])
  return composite, counts


def missing_months(composite: np.ndarray) -> np.ndarray:
  """bool [T, H, W]: pixel-months to fill, where any band is nodata (0)."""
  composite = np.asarray(composite)
  missing = composite[:, 0] == NODATA
  for c in range(1, composite.shape[1]):
    missing |= composite[:, c] == NODATA
  return missing


def _nearest_valid(missing: np.ndarray, t: np.ndarray, pix: np.ndarray,
                   step: int) -> np.ndarray:
  """Nearest valid month of each missing pixel-month, walking by `step`.

  Walks only the missing entries (ever fewer at each step), so the cost
  follows the number of gaps rather than T * H * W.

  Args:
    missing: bool [T, P].
    t, pix: int [N] month and pixel of the missing entries.
    step: -1 (previous valid month) or +1 (next valid month).
  Returns:
    int [N] the month found; -1 or T where there is none.
  """
  T, P = missing.shape
  flat = missing.reshape(-1)
  found = t + step
  todo = np.arange(t.size)
  while todo.size:
    cur = found[todo]
    inside = (cur >= 0) & (cur < T)
    todo, cur = todo[inside], cur[inside]
    todo = todo[flat[cur * P + pix[todo]]]
    found[todo] += step
  return found


def gap_fill(composite: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Fills missing pixel-months by interpolation along time (module docstring).

  A pixel-month is missing where any of its bands is 0; all its bands are then
  filled together from the same valid months. Only the missing entries are
  computed, gathered by flat index, so the cost follows the gap count.
  Interpolation runs in float32, which is exact here: numerators are integers
  below 2**24, and a quotient that is not an integer lies at least 1/22 below
  the next one, far beyond float32 rounding (< 2**-8 for values < 65536).

  Args:
    composite: uint16 [T, C, H, W] monthly composites, 0 = missing.
  Returns:
    uint16 [T, C, H, W] filled composites (pixels with no valid month stay 0)
    and bool [T, H, W], True where a value was filled.
  """
  composite = np.asarray(composite, np.uint16)
  T, C, H, W = composite.shape
  P = H * W
  out = composite.copy()
  flat = out.reshape(-1)                   # index (t * C + c) * P + pixel
  missing = missing_months(composite).reshape(T, P)
  filled = missing.copy()
  entries = np.flatnonzero(missing)
  if entries.size:
    t, pix = np.divmod(entries, P)
    t0 = _nearest_valid(missing, t, pix, -1)
    t1 = _nearest_valid(missing, t, pix, +1)
    none = (t0 < 0) & (t1 >= T)            # no valid month at all: stays 0
    t0 = np.where(t0 < 0, t1, t0)          # leading gap: next valid value
    t1 = np.where(t1 >= T, t0, t1)         # trailing gap: previous valid value
    t0[none] = t1[none] = t[none]
    span = np.maximum(t1 - t0, 1)
    k = np.clip(t - t0, 0, span)
    w0 = (2 * (span - k)).astype(np.float32)   # value = (v0 w0 + v1 w1 + span)
    w1 = (2 * k).astype(np.float32)            #         / (2 span), floored
    den = (2 * span).astype(np.float32)
    half = span.astype(np.float32)
    w0[none] = w1[none] = 0
    i0, i1, it = t0 * (C * P) + pix, t1 * (C * P) + pix, t * (C * P) + pix
    idx = np.empty_like(it)                  # buffers reused across bands:
    raw = np.empty(t.size, np.uint16)        # fresh large temporaries cost
    v0, v1 = np.empty_like(w0), np.empty_like(w0)   # page faults
    for c in range(C):
      np.take(flat, np.add(i0, c * P, out=idx), out=raw)
      np.multiply(raw, w0, out=v0)
      np.take(flat, np.add(i1, c * P, out=idx), out=raw)
      np.multiply(raw, w1, out=v1)
      v0 += v1
      v0 += half
      v0 /= den
      np.copyto(raw, v0, casting="unsafe")   # float -> uint16 truncates: floor
      flat[np.add(it, c * P, out=idx)] = raw
    filled.reshape(-1)[entries[none]] = False
  return out, filled.reshape(T, H, W)


def gap_fill_reference(composite: np.ndarray, pixels=None) -> tuple[np.ndarray, np.ndarray]:
  """The gap-filling rule written as a plain per-pixel loop (tests, benchmark).

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
        vals = [(2 * (x0 * (span - k) + x1 * k) + span) // (2 * span)
                for x0, x1 in zip(series[t0], series[t1])]
      elif after:
        vals = series[after[0]]
      else:
        vals = series[before[-1]]
      out[t, :, r, c] = vals
      filled[t, r, c] = True
  return out, filled
