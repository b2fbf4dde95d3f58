"""The previous-year baseline: this year's crop is last year's RPG crop of the parcel.

What a user without a model would map before the RPG of the year is published:
each pixel takes the class that last year's RPG gave the parcel under it. The
parcel of the pixel this year (the zone-year's parcels.tif) is matched to last
year's parcel (the previous zone-year of the same zone, `<root>/<year-1>/<zone_id>/`):

  1. by `ID_PARCEL` when last year's RPG has the same id (the RPG keeps a
     field's id while its outline does not change);
  2. else by overlap: last year's parcel that covers most of the parcel's
     pixels (on the zone grid, parcels.tif of both years);
  3. else (nothing declared there last year): the background class.

A pixel outside every parcel this year takes last year's label there (the
background, or the crop of a parcel that is no longer declared). A previous
parcel whose code is `ignore` (a border, a mixture) predicts the background:
the baseline has nothing to say there. Scored like the model (pixel level,
labelled pixels of this year, crop macro-F1 with the background excluded), at
tiers 3, 2 and 1, and per class. Rotations make it a weak baseline on purpose:
a model worth deploying must beat it by far (the issue's target: 15 points).
"""
from __future__ import annotations

import pathlib

import numpy as np

from cropcontracts import zonefolder
from cropcontracts.errors import UserError
from cropcontracts.zonefolder import NO_LABEL
from jaxcrop import hierarchy, metrics

BY_ID, BY_OVERLAP, UNMATCHED = "by_id", "by_overlap", "unmatched"


def majority_overlap(cur: np.ndarray, prev: np.ndarray, num_cur: int) -> np.ndarray:
  """int [P]: for each current parcel (1..P), the previous parcel (1-based) that
  covers most of its pixels, 0 where none does.

  Args:
    cur, prev: int [H, W] parcel indices of this year and last year, 0 = none.
    num_cur: P, the number of current parcels.
  Ties go to the lowest previous index.
  """
  both = (cur > 0) & (prev > 0)
  c, p = cur[both].astype(np.int64), prev[both].astype(np.int64)
  out = np.zeros(num_cur, np.int64)
  if not c.size:
    return out
  pairs, counts = np.unique(np.stack([c, p]), axis=1, return_counts=True)
  order = np.lexsort((pairs[1], -counts, pairs[0]))      # by parcel, most pixels, lowest id
  first = order[np.r_[True, pairs[0][order][1:] != pairs[0][order][:-1]]]
  out[pairs[0][first] - 1] = pairs[1][first]
  return out


def match_parcels(cur_ids, prev_ids, overlap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(previous parcel, 1-based, 0 = none) [P] and how each matched ([P] str).

  Args:
    cur_ids: [P] ID_PARCEL of this year's parcels (row i = parcel index i+1).
    prev_ids: [Q] ID_PARCEL of last year's.
    overlap: int [P] `majority_overlap`, for the parcels whose id is new.
  """
  index = {str(i): k + 1 for k, i in enumerate(prev_ids)}
  by_id = np.array([index.get(str(i), 0) for i in cur_ids], np.int64)
  match = np.where(by_id > 0, by_id, overlap)
  how = np.where(by_id > 0, BY_ID, np.where(overlap > 0, BY_OVERLAP, UNMATCHED))
  return match, how


def predict_zone(cur_parcels, cur_ids, prev_parcels, prev_ids, prev_class, prev_labels,
                 background: int) -> tuple[np.ndarray, dict]:
  """The baseline's classes of one zone-year and how its parcels matched.

  Args:
    cur_parcels, prev_parcels: int [H, W] parcel index (1-based, 0 none) of this
      year and last year.
    cur_ids [P], prev_ids [Q]: their ID_PARCEL; prev_class: int [Q] last year's
      tier-3 class of each previous parcel (NO_LABEL for `ignore` codes).
    prev_labels: uint8 [H, W] last year's labels (the pixel's class last year).
    background: the background class id.
  Returns:
    uint8 [H, W] predicted classes, and {by_id, by_overlap, unmatched}: parcel counts.
  """
  cur_parcels = np.asarray(cur_parcels, np.int64)
  overlap = majority_overlap(cur_parcels, np.asarray(prev_parcels), len(cur_ids))
  match, how = match_parcels(cur_ids, prev_ids, overlap)
  table = np.concatenate([[background], np.asarray(prev_class, np.int64)])   # 0: no match
  parcel_class = table[match]
  parcel_class[parcel_class == NO_LABEL] = background
  outside = np.where(np.asarray(prev_labels) == NO_LABEL, background, prev_labels)
  pred = np.where(cur_parcels > 0, np.concatenate([[background], parcel_class])[cur_parcels],
                  outside)
  return pred.astype(np.uint8), {k: int((how == k).sum()) for k in (BY_ID, BY_OVERLAP,
                                                                     UNMATCHED)}


def zone_confusion(cur: zonefolder.ZoneFolder, prev: zonefolder.ZoneFolder, num_classes: int,
                   background: int) -> tuple[np.ndarray, dict]:
  """(confusion int [K, K] over this year's labelled pixels, parcel match counts)."""
  pred, matched = predict_zone(
      cur.read_parcels(), cur.parcel_table()["ID_PARCEL"].to_numpy(), prev.read_parcels(),
      prev.parcel_table()["ID_PARCEL"].to_numpy(), prev.parcel_table()["class_id"].to_numpy(),
      prev.read_labels(), background)
  label = cur.read_labels()
  return metrics.confusion_matrix_np(label.ravel(), pred.ravel(), num_classes), matched


def evaluate(zones_root, year: int, zone_ids, meta) -> dict:
  """metrics.json's `previous_year_baseline` over the zones `zone_ids` of `year`.

  Args:
    zones_root: the folder of year folders, `<zones_root>/<year>/<zone_id>/`.
    year: the year scored; its previous year's zone-years must exist.
    zone_ids: the zones (the test split's).
    meta: the DatasetMeta (class names, tiers).
  Returns:
    {year, previous_year, zones, parcels {by_id, by_overlap, unmatched},
     tiers {tier1..3: {class_names, pixel: metrics.summarize}}}.
  """
  root = pathlib.Path(zones_root)
  names = list(meta.class_names)
  background = metrics.background_id(names)
  if background is None:
    raise UserError("the previous-year baseline needs a nomenclature with a background "
                    "class (v3 on)")
  cm = np.zeros((len(names), len(names)), np.int64)
  matched = dict.fromkeys((BY_ID, BY_OVERLAP, UNMATCHED), 0)
  for z in sorted(zone_ids):
    folders = [root / str(y) / z for y in (year, year - 1)]
    missing = [f for f in folders if not (f / "meta.json").is_file()]
    if missing:
      raise UserError(f"previous-year baseline: {missing[0]} is not a zone folder; it needs "
                      f"zone {z} in {year - 1} and {year} under {root} (config.years.zones)")
    cur, prev = (zonefolder.open_zone(f, require_labels=True) for f in folders)
    zcm, zm = zone_confusion(cur, prev, len(names), background)
    cm += zcm
    matched = {k: matched[k] + zm[k] for k in matched}
  tree = hierarchy.Tree.of(meta)
  tiers = {}
  for tier in (1, 2, 3):
    parents = tree.parents(tier)
    k = int(parents.max()) + 1
    tcm = np.zeros((k, k), np.int64)
    np.add.at(tcm, (parents[:, None], parents[None, :]), cm)
    tier_names = hierarchy.tier_names(meta, tier)
    tiers[f"tier{tier}"] = {"class_names": tier_names,
                            "pixel": metrics.summarize(tcm, tier_names)}
  return dict(year=int(year), previous_year=int(year) - 1, zones=sorted(zone_ids),
              parcels=matched, tiers=tiers)
