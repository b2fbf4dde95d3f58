"""The zones table: one CSV row per zone, with the columns of `Zone` (`zone.COLUMNS`).

prep writes it (`prep zones --select`, `prep zones --country`, the demo) and
reads it to know which zones to prepare; predict reads it (`--zones-csv`) to
map only its zones. This module is its only reader and writer, so every stage
takes the same table the same way and names the same mistakes.
"""
from __future__ import annotations

import csv
import pathlib
import re
from typing import Iterable

from cropcontracts.errors import UserError
from cropcontracts.zone import COLUMNS, Zone

_REQUIRED = COLUMNS[:10]
# A zone id names a folder: letters, digits, `_`, `-`, `.`, not starting with `.`.
_PLAIN_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


def read_zones(path: str | pathlib.Path) -> list[Zone]:
  """Reads a zones table (CSV with the columns of `Zone`).

  Every mistake is one UserError naming the table: a missing column (also what
  a `;`-separated table looks like), a value that is not a number, a size that
  is not positive, a zone id that is not a plain name (a folder is made of it
  under --out: `/` or `..` would write elsewhere), a duplicate id.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise UserError(f"{path}: zones table not found")
  with path.open(newline="", encoding="utf-8") as f:
    reader = csv.DictReader(f)
    rows = list(reader)
    header = reader.fieldnames or []
    missing = [c for c in _REQUIRED if c not in header]
    if rows and missing:
      what = ("is ;-separated; write it with commas" if len(header) == 1 and ";" in header[0]
              else f"lacks column(s) {', '.join(missing)}")
      raise UserError(f"{path}: zones table {what} (expected a CSV with columns "
                      f"{', '.join(COLUMNS)})")
    zones = [_zone_of_row(path, line, r) for line, r in enumerate(rows, 2)]
  ids = [z.zone_id for z in zones]
  dup = sorted({i for i in ids if ids.count(i) > 1})
  if dup:
    raise UserError(f"{path}: duplicate zone ids {dup}")
  return zones


def _zone_of_row(path: pathlib.Path, line: int, row: dict) -> Zone:
  """The Zone of one row of table `path` (at `line`), checked."""
  where = f"{path}: line {line}"
  try:
    zone = Zone.from_row(row)
  except UserError as e:
    raise UserError(f"{where}: {e}") from None
  if not _PLAIN_ID.fullmatch(zone.zone_id):
    raise UserError(f"{where}: zone id {zone.zone_id!r} is not a plain name (letters, "
                    f"digits, _ - . and no leading dot); it names the zone's folder")
  bad = [f"{k}={getattr(zone, k)}" for k in ("width", "height", "res")
         if not getattr(zone, k) > 0]
  if bad:
    raise UserError(f"{where}: zone {zone.zone_id}: {', '.join(bad)} must be positive")
  return zone


def write_zones(zones: Iterable[Zone], path: str | pathlib.Path) -> None:
  """Writes a zones table atomically."""
  from cropcontracts.atomic import atomic_path
  with atomic_path(path) as tmp:
    with open(tmp, "w", newline="", encoding="utf-8") as f:
      w = csv.DictWriter(f, fieldnames=COLUMNS)
      w.writeheader()
      for z in zones:
        w.writerow(z.to_row())
