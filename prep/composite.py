"""Monthly median composites and temporal gap filling, as in the study.

Both routes (local Sentinel-2 scenes, Earth Engine) end here, so that a zone's
imagery does not depend on where its pixels came from:

1. `monthly_median`: per pixel, per month, the median of the valid
   observations (SCL 4-7, reflectance > 0). A median of an even count is the
   mean of the two middle values, rounded half up: `(a + b + 1) // 2`.
2. `gap_fill`: a pixel-month without any valid observation is interpolated
   along time (the study's rule: the mean of the previous and next month,
   linear over a longer run, the nearest value at either end). Its one home is
   `cropcontracts.gapfill`, re-exported here, since in-season maps
   (`jaxcrop.in_season`) fill the same way up to a cut-off month.

Rounding is one rule everywhere: integer means are rounded half up
(`round_half_up_div`). Reflectances are uint16 (x 10000), 0 = nodata.
"""
from __future__ import annotations

import functools

import numpy as np

from cropcontracts.gapfill import gap_fill, missing_months, round_half_up_div  # re-exported
from cropcontracts.zonefolder import NODATA

_BLOCK_BYTES = 2**20          # row blocks of ~1 MB keep the work in cache


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
