"""The crop nomenclature: RPG CODE_CULTU -> 3-tier classes (after Turkoglu et al. 2021).

Two versioned tables in `cropcontracts/data/`, read only through `load()`:

  classes_<version>.csv      one row per tier-3 class, in class-id order:
                             class_id, tier3, tier2, tier1, color (#rrggbb).
  rpg_codes_<version>.csv    one row per RPG crop code and meaning: CODE_CULTU,
                             first_edition, last_edition (RPG editions, i.e.
                             declaration years; last empty = still in force),
                             label_fr, CODE_GROUP, tier3 (a class name, or
                             `ignore` for codes that are not a crop signal).
                             A code whose meaning changed (CPL, PPH, JNO … in
                             2023) has one row per meaning, ranges disjoint.
                             v1 has no edition columns: each row holds for
                             every edition.

v3 adds the land outside the RPG parcels as a class of its own, `BACKGROUND`
(`non_agricultural` at tiers 3, 2 and 1, the last tier-3 id): no RPG code maps
to it; prep labels it from where no parcel is (`docs/prep-labels.md`).

A code with no row for the edition read is an error that lists the codes: a
silent drop would quietly bias the labels (`prep labels --unknown-codes ignore`
opts out, recorded in meta.json). Any change to either table is a new version,
and every later stage checks the version it was built with.
"""
from __future__ import annotations

import csv
import dataclasses
import functools
import pathlib
from typing import Iterable, Mapping, Sequence

import numpy as np

from cropcontracts.errors import UserError
from cropcontracts.zonefolder import NO_LABEL

DATA_DIR = pathlib.Path(__file__).resolve().parent / "data"
VERSION = "v3"
IGNORE_NAME = "ignore"
# The land outside the RPG parcels (woods, villages, water, roads), from v3 on: a
# class of its own at every tier, the last tier-3 id, never the class of an RPG code.
BACKGROUND = "non_agricultural"
# The RPG edition a code list is read in when none is given: the study's year.
DEFAULT_EDITION = 2023
FIRST_EDITION = 2015  # RPG 2.x; the tables do not cover the older RPG 1.x


def table_path(version: str, kind: str = "rpg_codes") -> str:
  """`cropcontracts/data/rpg_codes_v2.csv`: a table's path as a user finds it in the repo."""
  return f"{DATA_DIR.parent.name}/{DATA_DIR.name}/{kind}_{version}.csv"


def _editions(first: int, last: int | None) -> str:
  return f"{first}–{last}" if last is not None else f"{first} on"


@dataclasses.dataclass(frozen=True)
class CodeRow:
  """One meaning of an RPG code over the editions first..last (None: still in force)."""
  code: str
  first_edition: int
  last_edition: int | None
  label_fr: str
  code_group: str
  tier3: str

  def covers(self, edition: int) -> bool:
    return self.first_edition <= edition and (self.last_edition is None
                                              or edition <= self.last_edition)

  @property
  def editions(self) -> str:
    return _editions(self.first_edition, self.last_edition)


class UnknownCodeError(UserError):
  """RPG codes that the nomenclature does not list for the edition read.

  Attributes:
    codes: the sorted codes.
    details: {code: (parcels, area_ha)} when the caller counted them.
    listing: the message's first part, "N RPG CODE_CULTU value(s) … : codes".
  """

  def __init__(self, codes: Iterable[str], version: str, edition: int | None = None,
               details: Mapping[str, tuple] | None = None,
               elsewhere: Mapping[str, str] | None = None):
    self.codes = sorted(set(codes))
    self.details = dict(details or {})
    elsewhere = dict(elsewhere or {})
    items = []
    for c in self.codes[:40]:
      notes = []
      if c in self.details:
        n, ha = self.details[c]
        notes.append(f"{n} parcel{'s' if n != 1 else ''}, {ha:.2f} ha")
      if c in elsewhere:
        notes.append(f"valid in editions {elsewhere[c]}")
      items.append(f"{c} ({'; '.join(notes)})" if notes else c)
    where = f" for RPG edition {edition}" if edition is not None else ""
    hint = ("; is the RPG edition right? (--rpg-year)" if elsewhere else "")
    self.listing = (f"{len(self.codes)} RPG CODE_CULTU value(s) not in nomenclature "
                    f"{version}{where}: {', '.join(items)}"
                    f"{' …' if len(self.codes) > 40 else ''}")
    super().__init__(
        f"{self.listing}{hint}; "
        f"add them to {table_path(version)} (tier3 `ignore` to skip them) and bump "
        f"the version, or pass --unknown-codes ignore to leave them unlabelled")


@dataclasses.dataclass(frozen=True)
class Nomenclature:
  """Tier-3 classes (ids 0..K-1) with their tier-2/tier-1 parents and colours."""
  version: str
  tier3: tuple[str, ...]
  tier2: tuple[str, ...]   # per tier-3 class
  tier1: tuple[str, ...]   # per tier-3 class
  colors: tuple[str, ...]  # per tier-3 class, '#rrggbb'
  code_rows: dict          # CODE_CULTU -> tuple of CodeRow, by first_edition

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

  @property
  def background_id(self) -> int | None:
    """The tier-3 id of `BACKGROUND` (the last one), None before v3."""
    return self.tier3.index(BACKGROUND) if BACKGROUND in self.tier3 else None

  @property
  def crop_ids(self) -> tuple[int, ...]:
    """The tier-3 ids of the agricultural classes: all but the background."""
    return tuple(k for k, name in enumerate(self.tier3) if name != BACKGROUND)

  def row(self, code: str, edition: int = DEFAULT_EDITION) -> CodeRow | None:
    """The meaning of `code` in RPG `edition`, None when the table has none."""
    return next((r for r in self.code_rows.get(str(code).strip(), ()) if r.covers(edition)),
                None)

  def codes_of(self, edition: int = DEFAULT_EDITION) -> dict:
    """{CODE_CULTU: CodeRow} of every code valid in `edition`."""
    return {c: r for c in self.code_rows if (r := self.row(c, edition))}

  def unknown_codes(self, codes: Sequence[str], edition: int = DEFAULT_EDITION) -> list:
    """The sorted distinct codes of `codes` without a row for `edition`."""
    valid = self.codes_of(edition)
    return sorted({c for c in ("" if c is None else str(c).strip() for c in codes)
                   if c not in valid})

  def other_editions(self, codes: Iterable[str]) -> dict:
    """{code: 'first–last, …'} for codes the table has in some edition."""
    return {c: ", ".join(r.editions for r in self.code_rows[c])
            for c in codes if c in self.code_rows}

  def classes_of_codes(self, codes: Sequence[str], edition: int = DEFAULT_EDITION, *,
                       unknown: str = "error") -> np.ndarray:
    """uint8 [N] tier-3 class ids of RPG codes read in `edition`; NO_LABEL for `ignore` codes.

    Each code takes the meaning of the row whose edition range holds `edition`
    (CPL is a cereal-dominated forage up to 2022, a multi-species mixture
    from 2023). unknown: "error" raises UnknownCodeError listing every code
    without such a row; "ignore" maps them to NO_LABEL.
    """
    if unknown not in ("error", "ignore"):
      raise ValueError(f"unknown={unknown!r}: expected 'error' or 'ignore'")
    codes = ["" if c is None else str(c).strip() for c in codes]
    valid = self.codes_of(edition)
    missing = self.unknown_codes(codes, edition)
    if missing and unknown == "error":
      raise UnknownCodeError(missing, self.version, edition,
                             elsewhere=self.other_editions(missing))
    ids = {n: i for i, n in enumerate(self.tier3)}
    return np.array([ids.get(valid[c].tier3, NO_LABEL) if c in valid else NO_LABEL
                     for c in codes], np.uint8)

  def rgb(self) -> np.ndarray:
    """uint8 [K, 3] colours of the tier-3 classes (stable across figures)."""
    return np.array([[int(c[i:i + 2], 16) for i in (1, 3, 5)] for c in self.colors],
                    np.uint8)


def _edition(value: str, where: str, *, optional: bool) -> int | None:
  value = (value or "").strip()
  if not value and optional:
    return None
  try:
    return int(value)
  except ValueError:
    raise UserError(f"{where}: edition {value!r} is not a year") from None


def _code_rows(rows: list, rpath) -> dict:
  """{code: (CodeRow, …)} sorted by first edition; UserError on overlapping ranges.

  A table without edition columns (v1) holds each row for every edition.
  """
  dated = bool(rows) and "first_edition" in rows[0]
  by_code: dict = {}
  for i, r in enumerate(rows, start=2):
    where, code = f"{rpath} line {i}", r["CODE_CULTU"].strip()
    first = _edition(r["first_edition"], where, optional=False) if dated else FIRST_EDITION
    last = _edition(r["last_edition"], where, optional=True) if dated else None
    if last is not None and last < first:
      raise UserError(f"{where}: {code} last_edition {last} is before first_edition {first}")
    by_code.setdefault(code, []).append(CodeRow(code, first, last, r["label_fr"],
                                                (r["CODE_GROUP"] or "").strip(), r["tier3"]))
  bad = []
  for code, rs in by_code.items():
    rs.sort(key=lambda r: r.first_edition)
    bad += [(code, a, b) for a, b in zip(rs, rs[1:])
            if a.last_edition is None or a.last_edition >= b.first_edition]
  if bad and not dated:
    raise UserError(f"{rpath}: duplicate CODE_CULTU {sorted({c for c, _, _ in bad})}; "
                    f"keep one row per code")
  if bad:
    code, a, b = bad[0]
    raise UserError(f"{rpath}: CODE_CULTU {code} has overlapping editions ({a.editions} and "
                    f"{b.editions}); keep one row per code and edition")
  return {code: tuple(rs) for code, rs in by_code.items()}


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
  code_rows = _code_rows(rows, rpath)
  names = {r["tier3"] for r in classes}
  bad = sorted({r["tier3"] for r in rows} - names - {IGNORE_NAME})
  if bad:
    raise UserError(f"{rpath}: tier3 names {bad} are not in {cpath.name}")
  if BACKGROUND in {r["tier3"] for r in rows}:
    raise UserError(f"{rpath}: no RPG code maps to {BACKGROUND} (the land outside parcels)")
  if BACKGROUND in names and classes[-1]["tier3"] != BACKGROUND:
    raise UserError(f"{cpath}: {BACKGROUND} must be the last class")
  return Nomenclature(
      version=version,
      tier3=tuple(r["tier3"] for r in classes),
      tier2=tuple(r["tier2"] for r in classes),
      tier1=tuple(r["tier1"] for r in classes),
      colors=tuple(r["color"] for r in classes),
      code_rows=code_rows)
