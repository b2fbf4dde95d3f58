"""Zone folders -> spatial splits -> square patches: the builder's pure logic.

Splits are spatial and never cut a zone: in every region the zone whose
`index` is 0 (`TEST_INDEX`) is `test`; the other zones are dealt to
`fold0..fold{n-1}` round-robin, regions in name order and zones in index
order, with one counter running across regions so the folds stay balanced.

Patches lie on a regular grid of side P from the zone's upper-left corner,
without overlap, and cover the whole zone in every split: the last row and
column of patches reach past the zone's right and bottom edges and are padded
with nodata (image 0, valid count 0, parcel 0) and label 255 (ignore), so the
padding never enters a loss or a metric. (With whole patches only, a 1000-px
zone in patches of 64 px would leave out a strip of 40 px, about 8 % of its
labels.) So every labelled pixel of a zone is in exactly one patch. Training
folds keep only the patches that hold at least one labelled pixel; the test
split keeps every patch (`keep_empty`), so a map assembled from test patches
covers every pixel of the zone.

Everything here reads a zone one strip of P rows at a time, so memory stays at
one strip whatever the number or size of zones.
"""
from __future__ import annotations

import collections
import pathlib
from typing import Iterator, Sequence

import affine
import numpy as np

from cropcontracts import moments as moments_lib
from cropcontracts import zonefolder
from cropcontracts.errors import UserError

TEST = "test"
TEST_INDEX = 0      # the zone index of each region that forms the test split


def fold_name(i: int) -> str:
  return f"fold{i}"


def assign_splits(zones: Sequence, num_folds: int = 3) -> dict[str, str]:
  """zone_id -> split name (`test` or `fold<i>`); deterministic, zone-wise.

  Args:
    zones: objects with `zone_id`, `region`, `index` (e.g. cropcontracts.zone.Zone).
  """
  by_region = collections.defaultdict(list)
  for z in zones:
    by_region[z.region].append(z)
  split, dealt = {}, 0
  for region in sorted(by_region):
    for z in sorted(by_region[region], key=lambda z: (z.index, z.zone_id)):
      if z.index == TEST_INDEX:
        split[z.zone_id] = TEST
      else:
        split[z.zone_id] = fold_name(dealt % num_folds)
        dealt += 1
  missing = sorted(r for r in by_region
                   if all(z.index != TEST_INDEX for z in by_region[r]))
  if missing:
    raise UserError(f"regions {missing} have no zone with index {TEST_INDEX} "
                    f"(the test split); prep each region's zone of index {TEST_INDEX} "
                    f"into the zone folders")
  if dealt < num_folds:
    raise UserError(f"only {dealt} non-test zone(s) for {num_folds} folds; "
                    f"add zone folders or use fewer folds")
  return split


def patch_origins(height: int, width: int, patch: int) -> tuple[list[int], list[int]]:
  """Row and column origins of the patch grid covering the whole zone (the last
  row and column of patches padded past the zone's edge)."""
  return list(range(0, height, patch)), list(range(0, width, patch))


def patch_transform(zone_transform, row: int, col: int) -> list[float]:
  """The 6 GDAL-order affine coefficients (a, b, c, d, e, f) of a patch's grid."""
  t = affine.Affine(*list(zone_transform)[:6]) @ affine.Affine.translation(col, row)
  return [float(v) for v in t[:6]]


def _pad(a: np.ndarray, rows: int, cols: int, value, axes=(-2, -1)) -> np.ndarray:
  """Crops or pads the two spatial axes of `a` at their end to (rows, cols)."""
  cut = [slice(None)] * a.ndim
  cut[axes[0]], cut[axes[1]] = slice(0, rows), slice(0, cols)
  a = a[tuple(cut)]
  width = [(0, 0)] * a.ndim
  width[axes[0]] = (0, rows - a.shape[axes[0]])
  width[axes[1]] = (0, cols - a.shape[axes[1]])
  return np.pad(a, width, constant_values=value) if any(w[1] for w in width) else a


def _as_int32(parcels: np.ndarray, zf) -> np.ndarray:
  """Parcel indices as int32: TFDS cannot decode uint32 bytes."""
  if parcels.size and parcels.max() > np.iinfo(np.int32).max:
    raise UserError(f"zone {zf.zone_id}: {zf.path / 'parcels.tif'} holds parcel "
                    f"index {int(parcels.max())} > 2^31-1; rerun `python -m prep labels`")
  return np.ascontiguousarray(parcels).astype(np.int32)


def _strip(zf: zonefolder.ZoneFolder, r0: int, rows: int, cols: int) -> dict:
  """One strip of `rows` rows from r0, padded to (rows, cols): every raster."""
  h, w = zf.zone.shape
  win = ((r0, min(r0 + rows, h)), (0, w))
  return dict(
      image=_pad(zf.read_image(win), rows, cols, 0, axes=(1, 2)),
      valid_count=_pad(zf.read_valid_count(win), rows, cols, 0),
      label=_pad(zf.read_labels(win), rows, cols, zonefolder.NO_LABEL),
      parcels=_pad(zf.read_parcels(win), rows, cols, 0))


def zone_patches(zone_path: str, patch: int, keep_empty: bool,
                 ) -> Iterator[tuple[str, dict]]:
  """(key, example) of every patch kept from one zone folder, strip by strip.

  Example features: image uint16 [T, P, P, C], label uint8 [P, P], parcels
  uint32 [P, P], valid_count uint8 [T, P, P], zone_id, region, row, col (patch
  origin in zone pixels), epsg, transform float64 [6]. Key `<zone_id>_<row>_<col>`.
  Without keep_empty, patches with no labelled pixel are skipped.
  """
  zf = zonefolder.open_zone(zone_path, require_labels=True)
  z = zf.zone
  rows, cols = patch_origins(z.height, z.width, patch)
  width = len(cols) * patch
  for r in rows:
    s = _strip(zf, r, patch, width)
    for c in cols:
      cut = np.s_[..., c:c + patch]
      label = s["label"][:, c:c + patch]
      if not keep_empty and not (label != zonefolder.NO_LABEL).any():
        continue
      yield f"{z.zone_id}_{r}_{c}", dict(
          image=np.ascontiguousarray(s["image"][:, :, c:c + patch]),
          label=np.ascontiguousarray(label),
          parcels=_as_int32(s["parcels"][cut], zf),
          valid_count=np.ascontiguousarray(s["valid_count"][cut]),
          zone_id=z.zone_id, region=z.region, row=r, col=c, epsg=z.epsg,
          transform=np.array(patch_transform(z.transform, r, c), np.float64))


def zone_summary(zf: zonefolder.ZoneFolder, patch: int, keep_empty: bool,
                 num_classes: int, with_moments: bool) -> dict:
  """What the metadata needs from one zone, read strip by strip.

  Returns:
    dict: `moments` (moments_lib.Moments [T, C] of the whole zone, or None),
    `class_pixels` int [K] over the area the split keeps, `patches` kept,
    `dropped` (patches without any labelled pixel, dropped when not
    keep_empty).
  """
  z = zf.zone
  _, cols = patch_origins(z.height, z.width, patch)
  moments = None
  class_pixels = np.zeros(num_classes, np.int64)
  kept = dropped = 0
  for r in range(0, z.height, patch):
    win = ((r, min(r + patch, z.height)), (0, z.width))
    if with_moments:
      m = moments_lib.moments_of(zf.read_image(win))
      moments = m if moments is None else moments_lib.merge(moments, m)
    label = _pad(zf.read_labels(win), patch, len(cols) * patch, zonefolder.NO_LABEL)
    per_patch = label.reshape(patch, len(cols), patch).transpose(1, 0, 2)
    labelled = (per_patch != zonefolder.NO_LABEL).any(axis=(1, 2))
    keep = labelled | keep_empty
    kept += int(keep.sum())
    dropped += int((~keep).sum())
    values = per_patch[keep]
    values = values[values != zonefolder.NO_LABEL]
    if values.size and values.max() >= num_classes:
      raise UserError(f"zone {z.zone_id}: {zf.path / 'labels.tif'} holds class "
                      f"{int(values.max())} >= {num_classes} classes of nomenclature "
                      f"{zf.nomenclature}; rerun `python -m prep labels`")
    class_pixels += np.bincount(values, minlength=num_classes)
  return dict(moments=moments, class_pixels=class_pixels, patches=kept,
              dropped=dropped)


def check_zones(zones: Sequence[zonefolder.ZoneFolder], nomenclature: str) -> None:
  """Raises UserError unless all zones share months and bands and are labelled
  with `nomenclature`."""
  first = zones[0]
  for zf in zones:
    if zf.nomenclature != nomenclature:
      raise UserError(
          f"zone {zf.zone_id}: {zf.path / 'meta.json'} says nomenclature "
          f"{zf.nomenclature!r}, the builder config expects {nomenclature!r}; "
          f"relabel with `python -m prep labels` or build a config for {zf.nomenclature!r}")
    if zf.months != first.months or zf.bands != first.bands:
      raise UserError(
          f"zone {zf.zone_id}: {zf.path / 's2.tif'} has months {zf.months} bands "
          f"{zf.bands}, zone {first.zone_id} has {first.months} {first.bands}; "
          f"all zones of a dataset must share months and bands — rerun prep for one")


def check_zone_years(by_year: dict, nomenclature: str) -> None:
  """Raises UserError (naming the folder) unless each year's zone-years pass
  `check_zones`, hold their year (meta.json `year`), and have the months of
  the first year's zone-years, in their own year."""
  first = None
  for year, zones in sorted(by_year.items()):
    for zf in zones:
      if zf.year != year:
        raise UserError(f"zone-year {zf.path}: holds {zf.year}, not {year}; move it to "
                        f"{zf.path.parent.parent / str(zf.year) / zf.path.name}")
      of_year = [m[5:] for m in zf.months]
      if first is None:
        first = (zf, of_year)
      if of_year != first[1] or [m[:4] for m in zf.months] != [str(year)] * len(zf.months):
        raise UserError(
            f"zone-year {zf.path}: months {zf.months[0]}..{zf.months[-1]} "
            f"({len(zf.months)}) differ from the dataset's ({first[0].months[0]}.."
            f"{first[0].months[-1]} in {first[0].path}, {len(first[1])} months of each "
            f"year); composite it with the same months of {year}")
    check_zones(zones, nomenclature)


def split_members(by_year: dict, num_folds: int) -> dict:
  """{split name: its zone folders}: the spatial split (`assign_splits` over
  every zone of every year, so a zone keeps its split each year), within each
  year (`cropcontracts.years.split_name`), or alone for a single-year dataset
  (by_year {None: zones}). Every zone-year is in exactly one split."""
  from cropcontracts import years as years_lib
  all_zones = {z.zone_id: z.zone for zs in by_year.values() for z in zs}
  split_of = assign_splits(list(all_zones.values()), num_folds)
  spatial = [TEST] + [fold_name(i) for i in range(num_folds)]
  members = {}
  for year, zones in sorted(by_year.items(), key=lambda kv: kv[0] or 0):
    for s in spatial:
      name = s if year is None else years_lib.split_name(year, s)
      members[name] = [z for z in zones if split_of[z.zone_id] == s]
  assert sum(len(m) for m in members.values()) == sum(map(len, by_year.values()))
  return members


def is_test(split: str) -> bool:
  """Whether `split` (`test`, `y2023_test`) is a test split: every patch, no moments."""
  return split == TEST or split.endswith("_" + TEST)


def find_labelled_zones(root: pathlib.Path) -> list[zonefolder.ZoneFolder]:
  return zonefolder.find_zones(root, require_labels=True)
