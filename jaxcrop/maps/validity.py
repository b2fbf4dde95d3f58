"""The evidence behind each pixel of a map: how many clear acquisitions it had.

A map pixel is as good as the observations under it. The zone folder's
valid_count.tif holds, per month, the acquisitions whose SCL class was clear
(4-7); a month without one was gap-filled by prep (interpolated from its
neighbours). `validity.tif`, written beside classes.tif on the same grid, holds
two uint8 bands per pixel:

  band 1  clear_acquisitions   clear acquisitions over the season (sum over the
                               months, capped at 254)
  band 2  gap_filled_months    months without a clear acquisition (0..T)

255 is nodata (where the map is nodata). OSO ships the first beside its maps;
the second says how much of the season the model saw only through the gap fill.
map.json's `validity` summarizes them (`summary`).
"""
from __future__ import annotations

import numpy as np

from jaxcrop.maps.tiling import NODATA

BANDS = ("clear_acquisitions", "gap_filled_months")
FILE = "validity.tif"


def validity_bands(valid_count: np.ndarray, nodata: np.ndarray) -> np.ndarray:
  """The two bands of validity.tif.

  Args:
    valid_count: uint8 [T, H, W] clear acquisitions per month (zone's valid_count.tif).
    nodata: bool [H, W], True where the map is nodata.
  Returns:
    uint8 [2, H, W]: clear acquisitions in the season (capped at 254), months
    without one; 255 where `nodata`.
  """
  counts = np.asarray(valid_count, np.int64)
  clear = np.minimum(counts.sum(0), NODATA - 1)
  gaps = (counts == 0).sum(0)
  out = np.stack([clear, gaps]).astype(np.uint8)
  out[:, nodata] = NODATA
  return out


def summary(bands: np.ndarray) -> dict:
  """map.json's `validity` of validity_bands output uint8 [2, H, W]: per band
  the mean, min, 10th percentile and max over the mapped pixels, and the share
  of mapped pixels with at least one gap-filled month (None values when no
  pixel is mapped)."""
  ok = bands[0] != NODATA
  out = {"bands": list(BANDS), "nodata": NODATA, "pixels": int(ok.sum())}
  for name, band in zip(BANDS, bands):
    v = band[ok].astype(np.float64)
    out[name] = ({"mean": round(float(v.mean()), 3), "min": int(v.min()),
                  "p10": float(np.percentile(v, 10)), "max": int(v.max())}
                 if v.size else None)
  out["share_with_gap_filled_month"] = (round(float((bands[1][ok] > 0).mean()), 4)
                                        if ok.any() else None)
  return out
