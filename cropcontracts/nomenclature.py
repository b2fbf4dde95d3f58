"""The crop nomenclature: RPG CODE_CULTU -> 3-tier classes (after Turkoglu et al. 2021).

Two versioned tables in `prep/data/`, read only through `load()`:

  classes_<version>.csv      one row per tier-3 class, in class-id order:
                             class_id, tier3, tier2, tier1, color (#rrggbb).
  rpg_codes_<version>.csv    one row per RPG crop code: CODE_CULTU, label_fr,
                             CODE_GROUP, tier3 (a class name, or `ignore` for
                             codes that are not a crop signal: non-agricultural
                             use, mixtures, unknown).

A code absent from the codes table is an error that lists the codes: a silent
drop would quietly bias the labels. Any change to either table is a new
version, and every later stage checks the version it was built with.
"""
from __future__ import annotations

import csv
import dataclasses
import functools
import pathlib
from typing import Iterable, Sequence

import numpy as np

from cropcontracts.errors import UserError
from cropcontracts.zonefolder import NO_LABEL

DATA_DIR = pathlib.Path(__file__).resolve().parent / "data"
VERSION = "v1"
IGNORE_NAME = "ignore"


class UnknownCodeError(UserError):
  """RPG codes that the nomenclature does not list."""

  def __init__(self, codes: Iterable[str], version: str):
    self.codes = sorted(set(codes))
    super().__init__(
        f"{len(self.codes)} RPG CODE_CULTU value(s) not in nomenclature {version}: "
        f"{', '.join(self.codes[:40])}{' …' if len(self.codes) > 40 else ''}; "
        f"add them to cropcontracts/data/rpg_codes_{version}.csv (tier3 `ignore` to skip "
        f"them) and bump the version")


@dataclasses.dataclass(frozen=True)
class Nomenclature:
  """Tier-3 classes (ids 0..K-1) with their tier-2/tier-1 parents and colours."""
  version: str
  tier3: tuple[str, ...]
  tier2: tuple[str, ...]   # per tier-3 class
  tier1: tuple[str, ...]   # per tier-3 class
  colors: tuple[str, ...]  # per tier-3 class, '#rrggbb'
  code_to_tier3: dict      # CODE_CULTU -> tier-3 name or IGNORE_NAME
  code_labels: dict        # CODE_CULTU -> official French label

  @property
  def num_classes(self) -> int:
    return len(self.tier3)

  @property
  def tier2_names(self) -> tuple[str, ...]:
    return tuple(dict.fromkeys(self.tier2))

  @property
  def tier1_names(self) -> tuple[str, ...]:
    return tuple(dict.fromkeys(self.tier1))

  def tier2_of(self) -> np.ndarray:
    """int [K]: tier-2 index of each tier-3 class."""
    names = self.tier2_names
    return np.array([names.index(t) for t in self.tier2], np.int32)

  def tier1_of(self) -> np.ndarray:
    """int [K]: tier-1 index of each tier-3 class."""
    names = self.tier1_names
    return np.array([names.index(t) for t in self.tier1], np.int32)

  def class_id(self, name: str) -> int:
    return self.tier3.index(name)

  def classes_of_codes(self, codes: Sequence[str]) -> np.ndarray:
    """uint8 [N] tier-3 class ids of RPG codes; NO_LABEL for `ignore` codes.

    Raises UnknownCodeError listing every code the table lacks.
    """
    codes = ["" if c is None else str(c).strip() for c in codes]
    unknown = {c for c in codes if c not in self.code_to_tier3}
    if unknown:
      raise UnknownCodeError(unknown, self.version)
    ids = {n: i for i, n in enumerate(self.tier3)}
    return np.array([ids.get(self.code_to_tier3[c], NO_LABEL) for c in codes],
                    np.uint8)

  def rgb(self) -> np.ndarray:
    """uint8 [K, 3] colours of the tier-3 classes (stable across figures)."""
    return np.array([[int(c[i:i + 2], 16) for i in (1, 3, 5)] for c in self.colors],
                    np.uint8)


@functools.lru_cache(maxsize=None)
def load(version: str = VERSION) -> Nomenclature:
  """Reads the nomenclature tables of `version` and checks their consistency."""
  cpath = DATA_DIR / f"classes_{version}.csv"
  rpath = DATA_DIR / f"rpg_codes_{version}.csv"
  for p in (cpath, rpath):
    if not p.is_file():
      raise UserError(f"nomenclature {version}: {p} not found")
  with cpath.open(encoding="utf-8", newline="") as f:
    classes = list(csv.DictReader(f))
  if [int(r["class_id"]) for r in classes] != list(range(len(classes))):
    raise UserError(f"{cpath}: class_id must run 0..K-1 in order")
  if len(classes) >= NO_LABEL:
    raise UserError(f"{cpath}: at most {NO_LABEL} classes fit in uint8")
  with rpath.open(encoding="utf-8", newline="") as f:
    rows = list(csv.DictReader(f))
  codes = [r["CODE_CULTU"].strip() for r in rows]
  dup = sorted({c for c in codes if codes.count(c) > 1})
  if dup:
    raise UserError(f"{rpath}: duplicate CODE_CULTU {dup}; keep one row per code")
  names = {r["tier3"] for r in classes}
  bad = sorted({r["tier3"] for r in rows} - names - {IGNORE_NAME})
  if bad:
    raise UserError(f"{rpath}: tier3 names {bad} are not in {cpath.name}")
  return Nomenclature(
      version=version,
      tier3=tuple(r["tier3"] for r in classes),
      tier2=tuple(r["tier2"] for r in classes),
      tier1=tuple(r["tier1"] for r in classes),
      colors=tuple(r["color"] for r in classes),
      code_to_tier3={r["CODE_CULTU"].strip(): r["tier3"] for r in rows},
      code_labels={r["CODE_CULTU"].strip(): r["label_fr"] for r in rows})
