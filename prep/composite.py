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
_BLOCK_BYTES = 2**20          # row blocks of ~1 MB keep the work in cache
_GAP_BLOCK_BYTES = 4 * 2**20      # row blocks of `_gap_fill_walk` (T > 12)


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
  missing = composite[:, 0] == NODATA
  for c in range(1, composite.shape[1]):
    missing |= composite[:, c] == NODATA
  return missing


def _steps_to_valid(pad: np.ndarray, start: np.ndarray, stride: int) -> np.ndarray:
  """Months from each missing entry to the nearest non-missing one, one way.

  Used by `_gap_fill_walk` (series longer than `_TABLE_MAX_MONTHS`). Walks only
  the missing entries (ever fewer at each step).

  Args:
    pad: bool [(T + 2) * P] missing mask with a False row before and after.
    start: int [N] flat positions of missing entries in `pad`.
    stride: -P (towards earlier months) or +P (later months).
  Returns:
    int [N] steps >= 1 to a valid month or to a sentinel row.
  """
  steps = np.ones(start.size, np.int64)
  todo = np.flatnonzero(pad[start + stride])
  k = 1
  while todo.size:
    k += 1
    steps[todo] = k
    todo = todo[pad[start[todo] + k * stride]]
  return steps


_TABLE_MAX_MONTHS = 12        # the float32 rounding bound below needs T <= 12
_GAP_BLOCK_LOG2 = 15          # 2**15 pixels a block: T * C * 64 KiB (3 MiB at 12 x 4)
# An entry is v = x1 + (x0 - x1) * a + 1/2, floored, with a = (t1 - t) / span:
# the linear interpolation rounded half up. In exact arithmetic x1 + (x0 - x1) a
# is a multiple of 1/span, so v is an integer or lies >= 1/(2 span) >= 1/22
# (span <= T - 1 = 11) below the next one. float32 computes it within
# 2**-8 + 3 * 2**-9 < 0.0098 (a rounded, one product and two sums < 65536), so
# adding 3/128 instead of 0 to the 1/2 rounds half-way cases up and moves no
# other: 0.0098 < 3/128 and 3/128 + 0.0098 < 1/22. The bound needs T <= 12.
_HALF_UP = np.float32(0.5 + 3 / 128)


@functools.lru_cache(maxsize=None)
def _fill_table(T: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Source months and weight of every (month, missing pattern) pair.

  Row `key = t * 2**T + bits`, where bit u of `bits` is set when month u is
  missing, describes the entry at month t: with x0 = x[t + d0], x1 = x[t + d1],
  `v = x1 + (x0 - x1) * a` (then + 1/2, floored). Between valid months
  t0 < t < t1: d0 = t0 - t, d1 = t1 - t, a = (t1 - t) / (t1 - t0). Leading gap:
  both sources the first valid month after t (a = 1, so v = that value);
  trailing: both the last one before. No valid month: both sources t itself,
  a = 0; `gap_fill` then sets such pixels to 0.

  Returns:
    int64 [K] d0, int64 [K] d1, float64 [K] a; K = T * 2**T.
  """
  bits = np.arange(2**T)
  months = np.arange(T)
  valid = (bits[:, None] >> months) & 1 == 0                 # [2**T, T]
  t = np.repeat(months, 2**T)                                # key order
  valid = np.tile(valid, (T, 1))                             # [K, T]
  before = valid & (months < t[:, None])
  after = valid & (months > t[:, None])
  has0, has1 = before.any(1), after.any(1)
  t0 = np.where(has0, T - 1 - np.argmax(before[:, ::-1], 1), t)
  t1 = np.where(has1, np.argmax(after, 1), t)
  t0 = np.where(has0, t0, t1)                                # leading gap
  t1 = np.where(has1, t1, t0)                                # trailing gap
  span = np.maximum(t1 - t0, 1)
  a = np.where(has0 & has1, (t1 - t) / span, (has0 | has1).astype(float))
  return t0 - t, t1 - t, a


def _flatnonzero(mask: np.ndarray, words: np.ndarray) -> np.ndarray:
  """`np.flatnonzero(mask)`, faster on scattered True values at 2-15 %.

  numpy's nonzero takes a branchy path below ~15 % of True, several times
  slower on scattered values (one mispredicted branch per value) than its
  branch-free path above. In that range this runs numpy's on the non-zero
  4-byte words (34 % of them at 10 % of True, scattered), then on the 4 bools
  of each such word (~30 % True).

  Args:
    mask: bool [n], n a multiple of 4.
    words: the same memory viewed as uint32 [n // 4].
  Returns:
    int64 [N] positions of the True values, ascending.
  """
  n_true = np.count_nonzero(mask)
  if not 0.02 * mask.size < n_true < 0.15 * mask.size:
    return np.flatnonzero(mask)
  at = np.flatnonzero(words != 0)
  k = np.flatnonzero(words[at].view(bool))    # word j * 4 + byte within it
  at <<= 2
  byte = k & 3
  k >>= 2
  entries = at[k]
  entries += byte
  return entries


def gap_fill(composite: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Fills missing pixel-months by interpolation along time (module docstring).

  A pixel-month is missing where any of its bands is 0; all its bands are then
  filled together from the same valid months. The input is copied once into
  the output, block of pixels by block of pixels, and each block is filled in
  place while it is in cache. Only the missing entries are computed: their
  source months and weight come from a table indexed by (month, the pixel's
  pattern of missing months, T bits), so no per-entry search is needed, and
  the interpolation runs in float32, exact by the bound at `_HALF_UP`.
  Series longer than 12 months take `_gap_fill_walk` (same results).

  Args:
    composite: uint16 [T, C, H, W] monthly composites, 0 = missing.
  Returns:
    uint16 [T, C, H, W] filled composites (pixels with no valid month stay 0)
    and bool [T, H, W], True where a value was filled.
  """
  composite = np.asarray(composite, np.uint16)
  T, C, H, W = composite.shape
  if T > _TABLE_MAX_MONTHS:
    return _gap_fill_walk(composite)
  out = np.empty((T, C, H, W), np.uint16)
  filled = np.empty((T, H, W), bool)
  if not out.size:
    filled[...] = False
    return out, filled
  HW = H * W
  src, dst = composite.reshape(T, C, HW), out.reshape(T, C, HW)
  flat = out.reshape(-1)
  bands = [flat[c * HW:] for c in range(C)]    # band c of month t at t * C * HW
  Q = 2**_GAP_BLOCK_LOG2
  d0, d1, a = _fill_table(T)
  a32 = a.astype(np.float32)
  # Flat index in a band, from pixel p0, of entry t * Q + p: t * (C HW - Q).
  month_offset = np.arange(T) * (C * HW - Q)
  it_table = np.repeat(month_offset, 2**T)
  i0_table = it_table + d0 * (C * HW)
  i1_table = it_table + d1 * (C * HW)
  mask = np.empty((T, Q), bool)
  mask_flat = mask.reshape(-1)
  mask_words = mask_flat.view(np.uint32)
  lowest = np.empty((T, Q), np.uint16)
  bits = np.empty(Q, np.uint16)
  month_bit = (np.uint16(1) << np.arange(T, dtype=np.uint16))[:, None]
  for p0 in range(0, HW, Q):
    q = min(Q, HW - p0)
    np.copyto(dst[:, :, p0:p0 + q], src[:, :, p0:p0 + q])
    block = dst[:, :, p0:p0 + q]                # [T, C, q], in cache now
    m = mask[:, :q]
    low = lowest[:, :q]                         # a band is 0 <=> the minimum is
    np.minimum(block[:, 0], block[:, min(1, C - 1)], out=low)
    for c in range(2, C):
      np.minimum(low, block[:, c], out=low)
    np.equal(low, NODATA, out=m)
    mask[:, q:] = False
    np.multiply(mask, month_bit, out=lowest)    # reuses the buffer
    np.bitwise_or.reduce(lowest, axis=0, out=bits)
    filled2d = filled.reshape(T, HW)[:, p0:p0 + q]
    filled2d[...] = m
    entries = _flatnonzero(mask_flat, mask_words)   # t * Q + pixel in the block
    if not entries.size:
      continue
    t = entries >> _GAP_BLOCK_LOG2
    key = t << T
    key |= bits[entries & (Q - 1)]
    it = np.take(month_offset, t)
    it += entries
    i0 = np.take(i0_table, key)
    i0 += entries
    i1 = np.take(i1_table, key)
    i1 += entries
    wa = np.take(a32, key)
    x0, x1 = np.empty(entries.size, np.uint16), np.empty(entries.size, np.uint16)
    v = np.empty(entries.size, np.float32)
    for band in bands:
      band = band[p0:]
      np.take(band, i0, out=x0, mode="clip")   # indices are valid; "raise" buffers
      np.take(band, i1, out=x1, mode="clip")
      np.subtract(x0, x1, out=v, dtype=np.float32)
      v *= wa
      v += x1
      v += _HALF_UP
      x0[...] = v                               # float -> uint16 truncates: floor
      band[it] = x0
    # Pixels with no valid month stay 0 and unfilled (their sources were themselves).
    nodata = np.flatnonzero(bits[:q] == (1 << T) - 1)
    if nodata.size:
      block[:, :, nodata] = NODATA
      filled2d[:, nodata] = False
  return out, filled


def _gap_fill_walk(composite: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """`gap_fill` for long series (T > `_TABLE_MAX_MONTHS`): walks to valid months."""
  T, C, H, W = composite.shape
  out = np.empty_like(composite)
  filled = np.empty((T, H, W), bool)
  step = max(1, _GAP_BLOCK_BYTES // max(1, T * C * W * 2))
  for r in range(0, H, step):
    block = composite[:, :, r:r + step].copy()     # contiguous, never the input
    filled[:, r:r + step] = _gap_fill_block(block)
    out[:, :, r:r + step] = block
  return out, filled


def _gap_fill_block(block: np.ndarray) -> np.ndarray:
  """Fills a contiguous uint16 [T, C, h, W] block in place; bool [T, h, W] filled.

  For a missing entry at month t with valid months t - d0 and t + d1, the
  value is (2 d1 v0 + 2 d0 v1 + span) / (2 span), span = d0 + d1, floored:
  the linear interpolation rounded half up. A leading gap uses weights
  (0, 2 span), a trailing one (2 span, 0), which give v1 and v0 exactly.
  This runs in float32 and is exact: numerators are integers below 2**24, and
  a quotient that is not an integer lies at least 1/22 below the next one, far
  beyond float32 rounding (< 2**-8 for values < 65536).
  """
  T, C, h, W = block.shape
  P = h * W
  flat = block.reshape(-1)                     # index (t * C + c) * P + pixel
  missing = missing_months(block).reshape(-1)  # index t * P + pixel
  filled = missing.copy()
  entries = np.flatnonzero(missing)
  if not entries.size:
    return filled.reshape(T, h, W)
  pad = np.zeros((T + 2) * P, bool)            # sentinel rows: month -1 and T
  pad[P:-P] = missing
  d0 = _steps_to_valid(pad, entries + P, -P)
  d1 = _steps_to_valid(pad, entries + P, P)
  t = entries // P
  has0, has1 = d0 <= t, t + d1 < T             # a valid month before / after
  it = entries + t * ((C - 1) * P)             # band 0 of the entry in `flat`
  i0 = np.where(has0, it - d0 * (C * P), it)
  i1 = np.where(has1, it + d1 * (C * P), it)
  span = (d0 + d1).astype(np.float32)
  w0 = np.where(has0, np.where(has1, 2 * d1, 2 * span), 0).astype(np.float32)
  w1 = np.where(has1, np.where(has0, 2 * d0, 2 * span), 0).astype(np.float32)
  den = 2 * span                               # no valid month: 0.5 -> 0
  for c in range(C):
    v = flat[i0 + c * P] * w0
    v += flat[i1 + c * P] * w1
    v += span
    v /= den
    flat[it + c * P] = v                       # float -> uint16 truncates: floor
  filled[entries[~has0 & ~has1]] = False
  return filled.reshape(T, h, W)


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
        vals = [round_half_up_div(x0 * (span - k) + x1 * k, span)
                for x0, x1 in zip(series[t0], series[t1])]
      elif after:
        vals = series[after[0]]
      else:
        vals = series[before[-1]]
      out[t, :, r, c] = vals
      filled[t, r, c] = True
  return out, filled
