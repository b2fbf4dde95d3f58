"""Temporal gap filling of monthly composites: one rule for prep and in-season maps.

`prep.composite` fills the gaps of a zone's composites with it (re-exported
there as `prep.composite.gap_fill`), and `jaxcrop.in_season` fills them again up
to a cut-off month, so that an in-season map never sees a later month.

A pixel-month without any valid observation is interpolated along time. The
study's rule for a single gap is the mean of the previous and next month; the
first month takes the next available value, the last month the previous one.
For a run of n-1 consecutive missing months between valid months t0 and t1 we
interpolate linearly, `v(t) = v0 + (v1 - v0) * (t - t0) / (t1 - t0)`, rounded
half up, which is the study's mean of neighbours when the run has length 1. A
leading run takes the first valid value, a trailing run the last one. Pixels
with no valid month at all stay 0 (nodata). With a cut-off (`until`), the
season ends there: the months after it are 0 and are never read.

Integer means are rounded half up (`round_half_up_div`). Reflectances are
uint16 (x 10000), 0 = nodata.
"""
from __future__ import annotations

import numpy as np

from cropcontracts.zonefolder import NODATA

_GAP_BLOCK_PIXELS = 2**15     # gap-fill blocks: T * C * 64 KiB (3 MiB at 12 x 4)


def round_half_up_div(num, den):
  """`num / den` rounded half up, for non-negative integer arrays."""
  return (2 * num + den) // (2 * den)


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


def gap_fill(composite: np.ndarray, until: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Fills missing pixel-months by interpolation along time (module docstring).

  A pixel-month is missing where any of its bands is 0; all its bands are then
  filled together from the same valid months t0 < t < t1:
  `round_half_up_div(x0 (t1 - t) + x1 (t - t0), t1 - t0)`, in integers, exact for
  any T. A leading run has only t1 and a trailing run only t0: they take that
  month's value. The output, a copy of the input, is filled `_GAP_BLOCK_PIXELS`
  pixels at a time, each block while it is in cache (`_fill_pixels`).

  The cut-off (`until`, in-season maps): only months 0 .. until-1 exist. The
  later ones are masked (0, not filled) and never read, so no month after the
  cut-off reaches an earlier one: the months after the last valid one before
  the cut-off take its value (a trailing run), as at the end of a season.

  Args:
    composite: uint16 [T, C, H, W] monthly composites, 0 = missing.
    until: the number of months kept, 0..T (None: T, the whole season).
  Returns:
    uint16 [T, C, H, W] filled composites (pixels with no valid month, and every
    month from `until` on, stay 0) and bool [T, H, W], True where a value was filled.
  """
  composite = np.asarray(composite, np.uint16)
  T, C, H, W = composite.shape
  until = T if until is None else int(until)
  if not 0 <= until <= T:
    raise ValueError(f"until={until} must be in [0, {T}]")
  out = np.zeros((T, C, H * W), np.uint16)
  out[:until] = composite[:until].reshape(until, C, H * W)
  filled = np.zeros((T, H * W), bool)
  kept = out[:until]                            # a view: filled in place
  for p0 in range(0, H * W, _GAP_BLOCK_PIXELS) if until else ():
    p1 = min(p0 + _GAP_BLOCK_PIXELS, H * W)
    filled[:until, p0:p1] = _fill_pixels(kept, p0, p1)
  return out.reshape(T, C, H, W), filled.reshape(T, H, W)
