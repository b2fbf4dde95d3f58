"""Season alignment: a year's phenology moved back onto the training years' calendar.

A model trained on some years reads a crop by *when* its canopy greens up and
dies back. Another year's weather moves every crop by weeks (a dry, warm spring
is early; a wet one late), and the model trained on monthly composites reads a
crop two to three weeks late as another crop. Like TimeMatch (Nyborg et al.
2022, cross-region shift), the season of a zone-year is moved in time by the
shift that best matches the training years' calendar, before the model sees it:

  profile   the zone-year's mean reflectance per month and band, over the pixels
            with a valid (cloud-free) observation that month (`valid_count` > 0):
            no gap-filled value, hence with a cut-off no later month, reaches it;
  estimate  the shift (months, a multiple of `STEP` within ±`MAX_SHIFT`) that
            minimizes the squared distance, in units of the training moments'
            std (`meta.std` [T, C]), between the shifted profile and the
            training years' profile of the same region (`season_reference.json`,
            written by training: the same valid-observation means over the
            training split, per region and over all; the checkpoint's `meta.mean`
            for a checkpoint without one), over the months kept (`until`); ties
            go to the smallest |shift|;
  shift     the season read at t - shift (`shift_months`: linear between the two
            months around it, clamped to the first and last month kept).

Unsupervised: it needs the imagery only, so it runs on a season whose RPG is not
published (predict) as on a labelled one (evaluate); the training years are
left as they are (their profile is the reference). One shift per region and
year (`ZoneShifts`): the zones of a region mapped or scored together pool their
profiles, since a year's weather moves a region as a whole and one zone's mean
is dominated by its own crop mix. Turned on by
`data.align_season` (configs/hybrid.py:years); docs/model.md "Years".
NumPy only: predict imports no TensorFlow.
"""
from __future__ import annotations

import json
import os

import numpy as np


FILE = "season_reference.json"            # in a training workdir and a model release
FORMAT = "jaxcrop-season-reference/1"
ALL = "*"                                 # the reference over every training region
MAX_SHIFT = 1.5      # months each way: a phenology up to 6 weeks early or late
STEP = 0.05          # months (about 1.5 days)


def shift_months(image, shift: float, until: int | None = None):
  """The season moved later by `shift` months (earlier when < 0): month t of the
  result is the series read at t - shift, linearly between the two months around
  it, clamped to the first month and to the last kept (`until` - 1); months from
  `until` on are returned as they are (an in-season input's masked months).

  Args:
    image: float or integer [..., T, H, W, C] (integers are rounded back).
    shift: months; until: months kept (None: all T).
  Returns:
    [..., T, H, W, C] of image's dtype.
  """
  image = np.asarray(image)
  T = image.shape[-4]
  n = T if until is None else int(until)
  if shift == 0 or n == 0:
    return image.copy()
  pos = np.clip(np.arange(n) - float(shift), 0.0, n - 1)
  lo = np.floor(pos).astype(int)
  hi = np.minimum(lo + 1, n - 1)
  w = (pos - lo).astype(np.float32)[:, None, None, None]
  x = image.astype(np.float32)
  moved = (1.0 - w) * np.take(x, lo, axis=-4) + w * np.take(x, hi, axis=-4)
  if np.issubdtype(image.dtype, np.integer):
    moved = np.rint(moved)
  out = image.copy()
  out[..., :n, :, :, :] = moved.astype(image.dtype)
  return out


def profile(image, valid_count) -> tuple[np.ndarray, np.ndarray]:
  """(sums float64 [T, C], counts int64 [T]): reflectance summed per month and band
  over the pixels with a valid observation that month, and how many there were
  (add them over a zone's patches; `sums / counts[:, None]` is the profile).

  image: [..., T, H, W, C] as stored (uint16, not normalized); valid_count:
  [..., T, H, W] valid observations per month (0: the month was gap filled or
  masked)."""
  image, valid = np.asarray(image), np.asarray(valid_count) > 0
  T, C = image.shape[-4], image.shape[-1]
  x = np.moveaxis(image, -4, 0).reshape(T, -1, C)               # [T, pixels, C]
  v = np.moveaxis(valid, -3, 0).reshape(T, -1)                  # [T, pixels]
  sums = np.einsum("tpc,tp->tc", x.astype(np.float64), v.astype(np.float64))
  return sums, v.sum(axis=1).astype(np.int64)


def estimate(sums, counts, mean, std, until: int | None = None,
             max_shift: float = MAX_SHIFT, step: float = STEP) -> float:
  """The zone-year's shift in months (see the module doc): `profile`'s sums
  [T, C] and counts [T] against the training moments mean, std [T, C], over the
  first `until` months (None: all). Months without a valid observation are left
  out of the distance (and read as their neighbours when shifted); 0.0 when
  fewer than two months have one."""
  sums, counts = np.asarray(sums, np.float64), np.asarray(counts)
  mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
  n = len(counts) if until is None else int(until)
  seen = counts[:n] > 0
  if seen.sum() < 2:
    return 0.0
  prof = np.zeros_like(sums[:n])
  prof[seen] = sums[:n][seen] / counts[:n][seen, None]
  months = np.arange(n)
  for c in range(prof.shape[1]):        # unseen months: interpolated, for the shifts only
    prof[~seen, c] = np.interp(months[~seen], months[seen], prof[seen, c])
  grid = np.round(np.arange(-max_shift, max_shift + step / 2, step), 6)
  grid = grid[np.argsort(np.abs(grid), kind="stable")]     # ties: the smallest |shift|
  target, scale = mean[:n], std[:n]
  costs = [np.sum((((shift_months(prof[:, None, None, :], s)[:, 0, 0] - target) / scale)
                   ** 2)[seen]) for s in grid]
  return float(grid[int(np.argmin(costs))])


class ZoneShifts:
  """The shifts of the zone-years mapped or scored together: `add` each zone's
  patches (raw image, valid counts, its region), then `shift(zone_id, until)`.

  A zone's shift is estimated on the pooled profile of every zone of its region
  added here (one year's weather moves a region as a whole; a single 10 x 10 km
  zone's mean is dominated by its own crop mix, which made per-zone estimates
  flip sign on the demo: docs/model.md "Years"); without regions, each zone on
  its own. Cached per region and cut-off.
  """

  def __init__(self, mean, std, reference: dict | None = None):
    """mean, std [T, C]: the checkpoint's moments; reference: a `read_reference`
    record (each region's training profile; None: `mean` for every region)."""
    self.mean, self.std = np.asarray(mean), np.asarray(std)
    self.reference = reference
    self.parts: dict = {}           # zone -> (sums [T, C], counts [T])
    self.region: dict = {}          # zone -> region (itself without one)
    self.pool: dict = {}            # zone -> (year, region): the zones estimated together
    self._cache: dict = {}

  def add(self, zone_ids, image, valid_count, regions=None, year=None) -> None:
    """zone_ids [B] (str or bytes); image [B, T, H, W, C] as stored; valid_count
    [B, T, H, W]; regions [B] (str or bytes) or None; year: the zone-years' year
    when zones of several years are added (a zone and a region pool within their
    year), else None."""
    regions = [None] * len(zone_ids) if regions is None else regions
    for z, r, x, v in zip(zone_ids, regions, image, valid_count):
      z = self._key(z, year)
      self.region[z] = z if r is None else _text(r)
      self.pool[z] = (year, self.region[z])
      s, n = profile(x, v)
      old = self.parts.get(z)
      self.parts[z] = (s, n) if old is None else (old[0] + s, old[1] + n)
    self._cache.clear()

  @staticmethod
  def _key(zone_id, year) -> str:
    return _text(zone_id) if year is None else f"{year}/{_text(zone_id)}"

  def shift(self, zone_id, until: int | None = None, year=None) -> float:
    """Months to move `zone_id`'s season (of `year`, when added with one); 0.0 for a
    zone not added (a batch's padding)."""
    z = self._key(zone_id, year)
    if z not in self.parts:
      return 0.0
    return self._pooled(self.pool[z], until)

  def _pooled(self, pool: tuple, until) -> float:
    """The shift of the zones of `pool` ((year, region)), cached per cut-off."""
    if (pool, until) not in self._cache:
      parts = [self.parts[o] for o in self.parts if self.pool[o] == pool]
      self._cache[pool, until] = estimate(sum(p[0] for p in parts), sum(p[1] for p in parts),
                                          self.target(pool[1]), self.std, until)
    return self._cache[pool, until]

  def target(self, region) -> np.ndarray:
    """float [T, C] the training profile a zone of `region` is aligned to: the
    reference's for that region, else its profile over all regions, else the
    checkpoint's mean (months the reference never observed: the mean too)."""
    regions = (self.reference or {}).get("regions", {})
    ref = regions.get(region) or regions.get(ALL)
    if ref is None:
      return self.mean
    sums, counts = np.asarray(ref["sums"], np.float64), np.asarray(ref["counts"])
    seen = counts > 0
    out = np.array(self.mean, np.float64)
    out[seen] = sums[seen] / counts[seen, None]
    return out

  def record(self) -> dict:
    """The `FILE` record of these zones (training: the training split's): each
    region's pooled profile sums and counts, and their total under `ALL`."""
    pooled: dict = {}
    for z, (s, n) in self.parts.items():
      for r in (self.region[z], ALL):
        old = pooled.get(r)
        pooled[r] = (s, n) if old is None else (old[0] + s, old[1] + n)
    return {"format": FORMAT,
            "regions": {r: {"sums": np.round(s, 3).tolist(), "counts": n.tolist()}
                        for r, (s, n) in sorted(pooled.items())}}

  def of(self, zone_ids, until: int | None = None) -> np.ndarray:
    """float32 [B] the shifts of a batch's zones."""
    return np.array([self.shift(z, until) for z in zone_ids], np.float32)

  def summary(self, until: int | None = None) -> dict:
    """{region: shift} (months, rounded to 2 decimals; `year/region` for zones added
    with a year; a zone without a region under its own id), for metrics.json and
    the predict log."""
    pools = sorted(set(self.pool.values()), key=lambda p: (str(p[0]), p[1]))
    return {(r if y is None else f"{y}/{r}"): round(self._pooled((y, r), until), 2)
            for y, r in pools}


def from_batches(raw_batches, mean, std, reference: dict | None = None) -> ZoneShifts:
  """`ZoneShifts` of the zones of `raw_batches` (dicts of numpy arrays: image [B, T, H,
  W, C] as stored, valid_count [B, T, H, W], zone_id and region [B], mask [B], 0 on
  a batch's padding: `input_pipeline.eval_batches(..., raw=True)`), pooled by region."""
  zones = ZoneShifts(mean, std, reference)
  for b in raw_batches:
    keep = np.asarray(b["mask"]) > 0
    zones.add(np.asarray(b["zone_id"])[keep], np.asarray(b["image"])[keep],
              np.asarray(b["valid_count"])[keep], np.asarray(b["region"])[keep])
  return zones


def read_reference(workdir) -> dict | None:
  """workdir/`FILE` (a training workdir or a model release), None when absent;
  UserError for a file of another format (`atomic.read_record`)."""
  from cropcontracts import atomic
  return atomic.read_record(os.path.join(os.fspath(workdir), FILE), FORMAT,
                            "delete it and rerun `python -m jaxcrop.train` with the same "
                            "--workdir to write it again")


def _text(v) -> str:
  return v.decode() if isinstance(v, bytes) else str(v)


def shift_batch(image, shifts, until: int | None = None):
  """`shift_months` of each example by its own shift: image [B, T, H, W, C], shifts [B]."""
  out = np.asarray(image).copy()
  for i, s in enumerate(np.asarray(shifts)):
    if s:
      out[i] = shift_months(out[i], float(s), until)
  return out


def shift_counts(valid_count, shifts, until: int | None = None):
  """`shift_batch` of valid counts [B, T, H, W] (no band axis; a valid-count model's
  input moves with its image)."""
  return shift_batch(np.asarray(valid_count)[..., None], shifts, until)[..., 0]
