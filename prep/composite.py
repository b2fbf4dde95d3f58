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

from cropcontracts.zonefolder import NODATA

_BLOCK_BYTES = 2**20          # row blocks of ~1 MB keep the work in cache
_GAP_BLOCK_PIXELS = 2**15     # gap-fill blocks: T * C * 64 KiB (3 MiB at 12 x 4)


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
  valid = np.asarray(valid, bool)
  S, C, H, W = scenes.shape
  if valid.shape != (S, H, W):
    raise ValueError(f"valid {valid.shape} does not match scenes {scenes.shape}")
  median = np.zeros((C, H, W), np.uint16)
  count = np.zeros((H, W), np.uint8)
  if S == 0:
    return median, count
  # Blocks of rows small enough for the sort to run in cache.
  step = max(1, _BLOCK_BYTES // (S * C * W * 2))
  for r in range(0, H, step):
    median[:, r:r + step], count[r:r + step] = _median_block(
        scenes[:, :, r:r + step], valid[:, r:r + step])
  return median, count


def _median_block(scenes: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """`median_composite` of [S, C, h, W] scenes and [S, h, W] valid."""
  use = valid.copy()
  for c in range(scenes.shape[1]):
    use &= scenes[:, c] != NODATA
  count = use.sum(axis=0, dtype=np.int64)                         # [h, W]
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
  lowest = composite[:, 0].copy()               # a band is 0 <=> the minimum is
  for c in range(1, composite.shape[1]):
    np.minimum(lowest, composite[:, c], out=lowest)
  return lowest == NODATA


def _valid_months_around(missing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per pixel-month, the last valid month at or before it and the first at or after it.

  Args:
    missing: bool [T, P].
  Returns:
    int8 [T, P] (int32 for T > 126) twice: the previous valid month (-1 where
    none) and the next one (T where none); at a valid month both are that month.
  """
  T = missing.shape[0]
  dtype = np.int8 if T <= 126 else np.int32
  before, after = np.empty(missing.shape, dtype), np.empty(missing.shape, dtype)
  before[0] = np.where(missing[0], -1, 0)
  after[T - 1] = np.where(missing[T - 1], T, T - 1)
  for t in range(1, T):
    before[t] = np.where(missing[t], before[t - 1], t)
    u = T - 1 - t
    after[u] = np.where(missing[u], after[u + 1], u)
  return before, after


def _fill_pixels(out: np.ndarray, p0: int, p1: int) -> np.ndarray:
  """Fills pixels [p0, p1) of a contiguous uint16 [T, C, P] array in place; bool [T, p1 - p0].

  Only the missing entries are computed, all months at once, through flat
  indices (much faster than fancy indexing on three axes).
  """
  T, C, P = out.shape
  flat = out.reshape(T * C * P)                 # band c of month t at (t * C + c) * P + p
  missing = missing_months(out[:, :, p0:p1])    # [T, q]
  q = p1 - p0
  nodata = missing.all(axis=0)                  # [q] no valid month in the whole series
  filled = missing & ~nodata
  before, after = _valid_months_around(missing)
  entry = np.flatnonzero(filled)                # t * q + p, the entries to fill
  t0 = before.reshape(-1)[entry].astype(np.intp)
  t1 = after.reshape(-1)[entry].astype(np.intp)
  t, p = np.divmod(entry, q)
  leading, trailing = t0 < 0, t1 == T
  t0[leading] = t1[leading]                     # leading run: the first valid month
  t1[trailing] = t0[trailing]                   # trailing run: the last one
  span = t1 - t0
  single = span == 0                            # leading or trailing: that month's value
  w1 = np.where(single, 0, t - t0)
  span[single] = 1
  w0 = span - w1
  p += p0
  i0, i1, i = t0 * (C * P) + p, t1 * (C * P) + p, t * (C * P) + p   # band 0
  for _ in range(C):
    num = np.take(flat, i0) * w0
    num += np.take(flat, i1) * w1
    flat[i] = round_half_up_div(num, span)
    i0 += P
    i1 += P
    i += P
  out[:, :, p0:p1][:, :, nodata] = NODATA
  return filled


def gap_fill(composite: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Fills missing pixel-months by interpolation along time (module docstring).

  A pixel-month is missing where any of its bands is 0; all its bands are then
  filled together from the same valid months t0 < t < t1:
  `round_half_up_div(x0 (t1 - t) + x1 (t - t0), t1 - t0)`, in integers, exact for
  any T. A leading run has only t1 and a trailing run only t0: they take that
  month's value. The output, a copy of the input, is filled `_GAP_BLOCK_PIXELS`
  pixels at a time, each block while it is in cache (`_fill_pixels`).

  Args:
    composite: uint16 [T, C, H, W] monthly composites, 0 = missing.
  Returns:
    uint16 [T, C, H, W] filled composites (pixels with no valid month stay 0)
    and bool [T, H, W], True where a value was filled.
  """
  composite = np.asarray(composite, np.uint16)
  T, C, H, W = composite.shape
  out = composite.reshape(T, C, H * W).copy()
  filled = np.empty((T, H * W), bool)
  for p0 in range(0, H * W, _GAP_BLOCK_PIXELS):
    p1 = min(p0 + _GAP_BLOCK_PIXELS, H * W)
    filled[:, p0:p1] = _fill_pixels(out, p0, p1)
  return out.reshape(T, C, H, W), filled.reshape(T, H, W)
