"""The points folder: labelled points' monthly composites, from prep to the builder.

One folder per point table, written only by `write_points` (`python -m prep
points`) and read only through `open_points`:

  points.npz   image        uint16 [N, T, C] monthly composites of the C bands
                            (B2 B3 B4 B8), reflectance x 10000, gap filled as a
                            zone's are (`prep.composite`); 0 = nodata.
               valid_count  uint8 [N, T] valid observations behind each month
                            (0: a gap-filled month).
               label        uint8 [N] tier-3 class id of the nomenclature.
  points.csv   one row per point, in the arrays' order: point_id, lon, lat
               (WGS84 degrees), group (empty when the table has none),
               class_id, class_name.
  meta.json    `format`, `year`, `months`, `bands`, `nomenclature` (the
               version the labels were mapped with), `source` {table, shape
               long|wide, label column}, `counts` {rows, points, kept,
               dropped_no_valid, dropped_unlabelled, other_years},
               `class_counts` {class_name: points}, `gap_filled_fraction`.

The folder appears whole or not at all (`atomic.atomic_folder`); a rerun
replaces it. Versions (meta.json `format`): `jaxcrop-points/1`; another format is
refused in one line naming the command that rewrites it.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import pathlib

import numpy as np

from cropcontracts import atomic
from cropcontracts.errors import UserError

FORMAT = "jaxcrop-points/1"
FILES = ("points.npz", "points.csv", "meta.json")
TABLE_FIELDS = ("point_id", "lon", "lat", "group", "class_id", "class_name")


@dataclasses.dataclass(frozen=True)
class PointFolder:
  """An opened points folder: its arrays, its table (list of dicts) and meta.json."""
  path: pathlib.Path
  image: np.ndarray         # uint16 [N, T, C]
  valid_count: np.ndarray   # uint8 [N, T]
  label: np.ndarray         # uint8 [N]
  table: list
  meta: dict

  @property
  def point_ids(self) -> list[str]:
    return [r["point_id"] for r in self.table]

  @property
  def groups(self) -> list[str]:
    return [r["group"] for r in self.table]

  @property
  def months(self) -> list[str]:
    return list(self.meta["months"])

  @property
  def bands(self) -> list[str]:
    return list(self.meta["bands"])

  @property
  def nomenclature(self) -> str:
    return self.meta["nomenclature"]


def write_points(folder, image, valid_count, label, table: list, meta: dict) -> pathlib.Path:
  """Writes the points folder `folder` whole (replacing one that is there).

  Args:
    image: uint16 [N, T, C]; valid_count: uint8 [N, T]; label: uint8 [N].
    table: N dicts with the keys of `TABLE_FIELDS`, in the arrays' order.
    meta: meta.json without `format` (added here).
  """
  image = np.asarray(image, np.uint16)
  n = len(image)
  if np.shape(valid_count) != image.shape[:2] or np.shape(label) != (n,) or len(table) != n:
    raise ValueError(f"image {image.shape}, valid_count {np.shape(valid_count)}, label "
                     f"{np.shape(label)} and {len(table)} table rows disagree")
  text = io.StringIO()
  w = csv.DictWriter(text, TABLE_FIELDS, lineterminator="\n")
  w.writeheader()
  w.writerows({k: row[k] for k in TABLE_FIELDS} for row in table)
  folder = pathlib.Path(folder)
  with atomic.atomic_folder(folder, overwrite=True) as tmp:
    np.savez_compressed(tmp / "points.npz", image=image,
                        valid_count=np.asarray(valid_count, np.uint8),
                        label=np.asarray(label, np.uint8))
    (tmp / "points.csv").write_text(text.getvalue(), encoding="utf-8")
    (tmp / "meta.json").write_text(json.dumps({"format": FORMAT, **meta}, indent=1),
                                   encoding="utf-8")
  return folder


def open_points(folder) -> PointFolder:
  """Reads a points folder; UserError naming the folder when it is not one of `FORMAT`."""
  folder = pathlib.Path(folder)
  missing = [f for f in FILES if not (folder / f).is_file()]
  if missing:
    raise UserError(f"{folder}: not a points folder ({', '.join(missing)} missing); write "
                    f"one with `python -m prep points --table T --year Y --out {folder}`")
  meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
  if meta.get("format") != FORMAT:
    raise UserError(f"{folder / 'meta.json'}: points folder format {meta.get('format')!r}, "
                    f"this code reads {FORMAT}: rewrite it with `python -m prep points "
                    f"--table T --year Y --out {folder}`")
  with np.load(folder / "points.npz") as z:
    arrays = {k: z[k] for k in ("image", "valid_count", "label")}
  with (folder / "points.csv").open(encoding="utf-8", newline="") as f:
    table = list(csv.DictReader(f))
  return PointFolder(folder, table=table, meta=meta, **arrays)
