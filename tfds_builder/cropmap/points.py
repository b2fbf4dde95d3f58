"""The `points` config: a points folder (`prep points`) as 1 x 1 examples.

  tfds build tfds_builder/cropmap --config=points --manual_dir=DIR   # DIR: a points folder

Each labelled point is one example with the zone configs' features, so every
reader (input pipeline, train, evaluate, cv) takes it unchanged: `image` uint16
[T, 1, 1, C], `label` uint8 [1, 1], `valid_count` uint8 [T, 1, 1], `parcels`
[1, 1] = the point's row in points.csv + 1 (each point its own "parcel": the
parcel level scores points like the pixel level), `zone_id` = the point id,
`region` = `points`, row = col = 0, epsg 4326 and `transform` a 10 m-ish cell
at (lon, lat). Key: the point id.

Splits: `test` and `fold0..fold{n-1}`, disjoint, every point in one.
Without groups they are stratified: in each class (in id order) the points,
in a seeded random order, give round(n·TEST_FRACTION) to `test` and the rest are
dealt round-robin to the folds, one counter running across classes, so each
class's count differs by at most one between folds. With a `group` column
(any group non-empty) whole groups are dealt instead, largest first, each to
the split furthest below its share (TEST_FRACTION for test, the rest evenly
over the folds): no group is in two splits. Moments per fold and the
metadata's fields are the zone configs' (`metadata.dataset_metadata`).
"""
from __future__ import annotations

import pathlib

import numpy as np

from cropcontracts import moments as moments_lib
from cropcontracts import nomenclature as nomenclature_lib
from cropcontracts import pointfolder
from cropcontracts.errors import UserError
from tfds_builder.cropmap import metadata
from tfds_builder.cropmap import patching

TEST_FRACTION = 0.2
SEED = 0
# A cell of about 10 m at the point, in degrees (EPSG:4326), GDAL's coefficient order.
_CELL = 1e-4


def open_folder(manual, nomenclature: str) -> pointfolder.PointFolder:
  """The points folder --manual_dir names, labelled with `nomenclature`."""
  if manual is None:
    raise UserError("config points needs --manual_dir=DIR, a points folder written by "
                    "`python -m prep points --table T --year Y --out DIR`")
  pf = pointfolder.open_points(pathlib.Path(manual))
  if pf.nomenclature != nomenclature:
    raise UserError(f"{pf.path / 'meta.json'}: points labelled with nomenclature "
                    f"{pf.nomenclature!r}, the builder config expects {nomenclature!r}; "
                    f"rewrite them with `python -m prep points --table T --year Y "
                    f"--out {pf.path}`")
  return pf


def stratified_splits(labels, num_folds: int, test_fraction: float = TEST_FRACTION,
                      seed: int = SEED) -> np.ndarray:
  """str [N] split of each point: per class a seeded share to `test`, the rest
  round-robin over the folds (module doc)."""
  labels = np.asarray(labels)
  rng = np.random.default_rng(seed)
  out = np.empty(len(labels), object)
  dealt = 0
  for c in np.unique(labels):
    idx = rng.permutation(np.flatnonzero(labels == c))
    n_test = int(np.floor(len(idx) * test_fraction + 0.5))
    out[idx[:n_test]] = patching.TEST
    for i in idx[n_test:]:
      out[i] = patching.fold_name(dealt % num_folds)
      dealt += 1
  return out


def group_splits(groups, num_folds: int, test_fraction: float = TEST_FRACTION,
                 seed: int = SEED) -> np.ndarray:
  """str [N] split of each point: whole groups, largest first, each to the split
  furthest below its share of the points (module doc)."""
  groups = np.asarray(groups, object)
  names, inverse, sizes = np.unique(groups, return_inverse=True, return_counts=True)
  order = np.random.default_rng(seed).permutation(len(names))
  order = order[np.argsort(-sizes[order], kind="stable")]
  splits = [patching.TEST] + [patching.fold_name(i) for i in range(num_folds)]
  share = np.array([test_fraction] + [(1 - test_fraction) / num_folds] * num_folds)
  filled = np.zeros(len(splits))
  of_group = np.empty(len(names), object)
  for g in order:
    s = int(np.argmin(filled / share))
    of_group[g] = splits[s]
    filled[s] += sizes[g]
  return of_group[inverse.reshape(-1)]


def assign_splits(pf: pointfolder.PointFolder, num_folds: int) -> np.ndarray:
  """str [N]: by group when the folder has groups, else stratified; UserError
  when a split would be empty."""
  grouped = any(pf.groups)
  split = (group_splits(pf.groups, num_folds) if grouped
           else stratified_splits(pf.label, num_folds))
  names = [patching.TEST] + [patching.fold_name(i) for i in range(num_folds)]
  empty = [s for s in names if not (split == s).any()]
  if empty:
    what = f"{len(set(pf.groups))} groups" if grouped else f"{len(split)} points"
    raise UserError(f"{pf.path}: {what} are too few for a test split and {num_folds} "
                    f"folds ({', '.join(empty)} would be empty); add points or groups")
  return split


def examples(pf: pointfolder.PointFolder, index):
  """(key, example) of the points `index` (int [n]) as 1 x 1 examples."""
  for i in index:
    row = pf.table[i]
    lon, lat = float(row["lon"]), float(row["lat"])
    yield row["point_id"], dict(
        image=np.ascontiguousarray(pf.image[i][:, None, None, :]),
        label=np.full((1, 1), pf.label[i], np.uint8),
        parcels=np.full((1, 1), i + 1, np.int32),
        valid_count=np.ascontiguousarray(pf.valid_count[i][:, None, None]),
        zone_id=row["point_id"], region="points", row=0, col=0, epsg=4326,
        transform=np.array([_CELL, 0.0, lon, 0.0, -_CELL, lat], np.float64))


def split_generators(builder, manual) -> dict:
  """{split: examples}; sets `builder.info.metadata` (module doc)."""
  cfg = builder.builder_config
  pf = open_folder(manual, cfg.nomenclature)
  nom = nomenclature_lib.load(cfg.nomenclature)
  split = assign_splits(pf, cfg.num_folds)
  names = [patching.TEST] + [patching.fold_name(i) for i in range(cfg.num_folds)]
  index = {s: np.flatnonzero(split == s) for s in names}
  moments = {s: moments_lib.moments_of(pf.image[idx].transpose(1, 0, 2)[:, :, None, :]
                                       ).to_json()
             for s, idx in index.items() if s != patching.TEST}
  builder.info.metadata.update(metadata.dataset_metadata(
      nom, months=pf.months, bands=pf.bands, patch_size=1, num_folds=cfg.num_folds,
      counts={s: np.bincount(pf.label[i], minlength=nom.num_classes).tolist()
              for s, i in index.items()},
      examples={s: len(i) for s, i in index.items()}, dropped={s: 0 for s in names},
      moments=moments, members={s: [pf.table[i]["point_id"] for i in idx]
                                for s, idx in index.items()}))
  return {s: examples(pf, idx) for s, idx in index.items()}
