"""Labelled point tables -> a points folder (`python -m prep points`).

A point table (CSV or Parquet; the format is docs/points.md) holds, per
labelled point, a season of Sentinel-2 values in one of two shapes:

  long   one row per point and date: point_id, lon, lat, date, B02, B03, B04,
         B08 (uint16 reflectance x 10000, 0 or empty = nodata);
  wide   one row per point: point_id, lon, lat and B02_01 … B08_12 (band, month).

and its label, `class_name` (a tier-3 class of the nomenclature) or
`code_cultu` read in `rpg_edition` (default: the year); optional `year` (rows
of other years are left out and counted) and `group` (grouped folds).

Each point's observations become 12 monthly composites by the zones' own code
(`prep.composite`): per month the median of the observations whose bands are
all > 0, then the empty months gap filled along time. A point without any
valid observation is dropped and counted; so is a point whose code maps to
`ignore`. Every mistake in the table is one line naming the file and column.
"""
from __future__ import annotations

import collections
import pathlib

import numpy as np

from cropcontracts import nomenclature as nomenclature_lib
from cropcontracts import pointfolder
from cropcontracts.errors import UserError
from cropcontracts.zonefolder import BANDS, MONTHS_PER_YEAR, NO_LABEL, month_labels
from prep.composite import gap_fill, median_composite

BAND_COLUMNS = tuple(f"B{b[1:]:0>2}" for b in BANDS)   # B02 B03 B04 B08, as prep.scenes
ID_COLUMNS = ("point_id", "lon", "lat")
LONG = ("date",) + BAND_COLUMNS
WIDE = tuple(f"{b}_{m:02d}" for b in BAND_COLUMNS for m in range(1, MONTHS_PER_YEAR + 1))


def read_table(path) -> "pandas.DataFrame":
  """The table as strings-or-numbers, whatever its file type (.csv, .parquet)."""
  import pandas as pd  # pylint: disable=g-import-not-at-top
  path = pathlib.Path(path)
  if not path.is_file():
    raise UserError(f"{path}: point table not found")
  try:
    if path.suffix.lower() in (".parquet", ".geoparquet", ".pq"):
      df = pd.read_parquet(path)
      if "geometry" in df.columns:   # GeoParquet: lon, lat from the points
        import geopandas  # pylint: disable=g-import-not-at-top
        g = geopandas.read_parquet(path).to_crs(4326)
        df = df.drop(columns="geometry").assign(lon=g.geometry.x, lat=g.geometry.y)
    else:
      df = pd.read_csv(path, dtype=str, keep_default_na=False)
  except (ValueError, OSError, ImportError) as e:
    raise UserError(f"{path}: not a readable CSV or Parquet point table "
                    f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
  df.columns = [str(c).strip() for c in df.columns]
  return df


def table_shape(df, path) -> str:
  """`long` or `wide`; UserError naming the missing columns otherwise."""
  cols = set(df.columns)
  missing = [c for c in ID_COLUMNS if c not in cols]
  shape = "long" if "date" in cols else "wide"
  missing += [c for c in (LONG if shape == "long" else WIDE) if c not in cols]
  if not ({"class_name", "code_cultu"} & cols):
    missing.append("class_name (or code_cultu)")
  if missing:
    raise UserError(f"{path}: {shape} point table lacks column(s) {', '.join(missing)} "
                    f"(docs/points.md)")
  return shape


def _text(df, column) -> np.ndarray:
  return np.array([("" if v is None else str(v)).strip() for v in df[column]], object)


def _numbers(df, column, path, *, low=None, high=None, empty=None) -> np.ndarray:
  """float64 [R] of a numeric column; `empty` fills empty cells (None: an error)."""
  text = _text(df, column)
  out = np.empty(len(text), np.float64)
  for i, v in enumerate(text):
    try:
      out[i] = float(v) if v != "" or empty is None else empty
    except ValueError:
      out[i] = np.nan
    if not np.isfinite(out[i]) or (low is not None and out[i] < low) or \
        (high is not None and out[i] > high):
      span = f" in [{low}, {high}]" if low is not None else ""
      raise UserError(f"{path}: column {column}, row {i + 2}: {v!r} is not a number{span}")
  return out


def _bands(df, columns, path) -> np.ndarray:
  """uint16 [R, len(columns)] reflectances; empty cells are nodata (0)."""
  return np.stack([_numbers(df, c, path, low=0, high=65535, empty=0) for c in columns],
                  -1).round().astype(np.uint16)


def _listing(values) -> str:
  counts = collections.Counter(values)
  return ", ".join(f"{v or '(empty)'} ({n} row{'s' if n != 1 else ''})"
                   for v, n in sorted(counts.items()))


def point_labels(df, path, nom, year: int) -> tuple[np.ndarray, str]:
  """(uint8 [R] tier-3 ids, NO_LABEL for `ignore` codes; the column read).

  `class_name` wins over `code_cultu`; codes are read in their row's
  `rpg_edition` (default `year`). Unknown names or codes: one UserError listing
  each with its row count.
  """
  if "class_name" in df.columns:
    names = _text(df, "class_name")
    bad = [n for n in names if n not in nom.tier3]
    if bad:
      raise UserError(f"{path}: column class_name: {len(set(bad))} name(s) not in "
                      f"nomenclature {nom.version}: {_listing(bad)}; the names are the "
                      f"tier3 column of {nomenclature_lib.table_path(nom.version, 'classes')}")
    ids = {n: i for i, n in enumerate(nom.tier3)}
    return np.array([ids[n] for n in names], np.uint8), "class_name"
  codes = _text(df, "code_cultu")
  editions = (_numbers(df, "rpg_edition", path, empty=year).astype(int)
              if "rpg_edition" in df.columns else np.full(len(codes), year))
  bad = [f"{c} in {e}" for c, e in zip(codes, editions) if nom.row(c, int(e)) is None]
  if bad:
    raise UserError(f"{path}: column code_cultu: {len(set(bad))} code(s) not in "
                    f"nomenclature {nom.version} for their rpg_edition: {_listing(bad)}; add "
                    f"them to {nomenclature_lib.table_path(nom.version)} or fix rpg_edition")
  out = np.full(len(codes), NO_LABEL, np.uint8)
  for e in np.unique(editions):
    sel = editions == e
    out[sel] = nom.classes_of_codes(list(codes[sel]), int(e))
  return out, "code_cultu"


def _duplicates(keys, path, what: str) -> None:
  seen = collections.Counter(keys)
  dup = [k for k, n in seen.items() if n > 1]
  if dup:
    raise UserError(f"{path}: column {what.split(',')[0]}: {len(dup)} duplicate {what} "
                    f"row(s), e.g. {dup[0]!r}; keep one row per {what}")


def _months(df, path, year: int) -> np.ndarray:
  """int [R] 0-based month of each row's `date`; UserError for dates outside `year`."""
  import pandas as pd  # pylint: disable=g-import-not-at-top
  text = _text(df, "date")
  dates = pd.to_datetime(pd.Series(text), errors="coerce", format="mixed")
  bad = np.flatnonzero(dates.isna().to_numpy())
  if len(bad):
    raise UserError(f"{path}: column date, row {bad[0] + 2}: {text[bad[0]]!r} is not a date "
                    f"(YYYY-MM-DD)")
  out = np.flatnonzero((dates.dt.year != year).to_numpy())
  if len(out):
    raise UserError(f"{path}: column date: {len(out)} row(s) outside {year}, e.g. row "
                    f"{out[0] + 2} ({text[out[0]]}); composites are of one year (--year)")
  return dates.dt.month.to_numpy() - 1


def composite_points(point, month, values, n_points: int, n_months: int = MONTHS_PER_YEAR):
  """Monthly composites of points from their observations, as a zone's pixels get theirs.

  Each point is one pixel of a 1 x N image; the observations of a month are
  stacked (padding marked invalid) and go through `prep.composite`'s
  `median_composite` (an observation counts when all its bands are > 0), then
  `gap_fill`.

  Args:
    point: int [M] index of each observation's point, in [0, N).
    month: int [M] 0-based month of each observation.
    values: uint16 [M, C] band values (0 = nodata).
    n_points: N.
  Returns:
    uint16 [N, T, C] filled composites (0 for a point without any valid
    observation) and uint8 [N, T] valid counts.
  """
  point, month = np.asarray(point, np.int64), np.asarray(month, np.int64)
  values = np.asarray(values, np.uint16)
  c = values.shape[1]
  key = point * n_months + month
  order = np.argsort(key, kind="stable")
  key = key[order]
  first = np.r_[0, np.flatnonzero(np.diff(key)) + 1]
  rank = np.arange(len(key)) - np.repeat(first, np.diff(np.r_[first, len(key)]))
  depth = int(rank.max(initial=-1)) + 1
  stack = np.zeros((n_months, depth, c, 1, n_points), np.uint16)
  valid = np.zeros((n_months, depth, 1, n_points), bool)
  p, t = point[order], month[order]
  stack[t, rank, :, 0, p] = values[order]
  valid[t, rank, 0, p] = True
  composite = np.zeros((n_months, c, 1, n_points), np.uint16)
  counts = np.zeros((n_months, 1, n_points), np.uint8)
  for m in range(n_months):
    composite[m], counts[m] = median_composite(stack[m], valid[m])
  filled, _ = gap_fill(composite)
  return filled[:, :, 0].transpose(2, 0, 1), counts[:, 0].T


def _observations(df, shape: str, path, year: int):
  """(point index [M], month [M], values uint16 [M, C], first row of each point [N])."""
  ids = _text(df, "point_id")
  if shape == "long":
    _duplicates(list(zip(ids, _text(df, "date"))), path, "point_id, date")
    month = _months(df, path, year)
    values = _bands(df, BAND_COLUMNS, path)
    uniq, first, point = np.unique(ids, return_index=True, return_inverse=True)
    return point, month, values, first
  _duplicates(list(ids), path, "point_id")
  n = len(ids)
  values = _bands(df, WIDE, path).reshape(n, len(BAND_COLUMNS), MONTHS_PER_YEAR)
  point = np.repeat(np.arange(n), MONTHS_PER_YEAR)
  month = np.tile(np.arange(MONTHS_PER_YEAR), n)
  return point, month, values.transpose(0, 2, 1).reshape(-1, len(BAND_COLUMNS)), np.arange(n)


def _one_value_per_point(df, point, columns, path) -> None:
  """A long table repeats a point's lon, lat, label, group on every row: they must agree."""
  for col in columns:
    text = _text(df, col)
    pairs = set(zip(point.tolist(), text))
    if len(pairs) != point.max(initial=-1) + 1:
      p = collections.Counter(i for i, _ in pairs).most_common(1)[0][0]
      pid = _text(df, "point_id")[np.flatnonzero(point == p)[0]]
      raise UserError(f"{path}: column {col}: point {pid} has several values "
                      f"({sorted({v for i, v in pairs if i == p})}); one per point")


def make_points(table, year: int, out, nomenclature: str = nomenclature_lib.VERSION) -> dict:
  """Reads the point table, composites every point, writes the points folder `out`.

  Returns meta.json's content.
  """
  path = pathlib.Path(table)
  df = read_table(path)
  shape = table_shape(df, path)
  rows = len(df)
  other_years = 0
  if "year" in df.columns:
    years = _numbers(df, "year", path).astype(int)
    other_years = int((years != year).sum())
    df = df[years == year].reset_index(drop=True)
  if not len(df):
    raise UserError(f"{path}: no row of year {year}" + (
        f" (column year holds {sorted(set(years.tolist()))})" if other_years else ""))
  nom = nomenclature_lib.load(nomenclature)
  labels, label_column = point_labels(df, path, nom, year)
  point, month, values, first = _observations(df, shape, path, year)
  has_group = "group" in df.columns
  if shape == "long":
    _one_value_per_point(df, point, ["lon", "lat", label_column]
                         + (["rpg_edition"] if "rpg_edition" in df.columns else [])
                         + (["group"] if has_group else []), path)
  lon = _numbers(df, "lon", path, low=-180, high=180)[first]
  lat = _numbers(df, "lat", path, low=-90, high=90)[first]
  image, counts = composite_points(point, month, values, len(first))
  label = labels[first]
  no_valid = ~(counts > 0).any(axis=1)
  unlabelled = label == NO_LABEL
  keep = ~no_valid & ~unlabelled
  if not keep.any():
    raise UserError(f"{path}: no point has both a valid observation and a label "
                    f"({int(no_valid.sum())} without any valid value, "
                    f"{int(unlabelled.sum())} of an `ignore` code)")
  ids, groups = _text(df, "point_id")[first], (_text(df, "group")[first] if has_group
                                              else np.full(len(first), "", object))
  rows_out = [dict(point_id=ids[i], lon=f"{lon[i]:.7f}", lat=f"{lat[i]:.7f}",
                   group=groups[i], class_id=int(label[i]), class_name=nom.tier3[label[i]])
              for i in np.flatnonzero(keep)]
  kept_counts = counts[keep]
  meta = dict(
      year=year, months=month_labels(year), bands=list(BANDS), nomenclature=nom.version,
      source=dict(table=str(path), shape=shape, label=label_column),
      counts=dict(rows=rows, points=int(len(first)), kept=int(keep.sum()),
                  dropped_no_valid=int(no_valid.sum()),
                  dropped_unlabelled=int((unlabelled & ~no_valid).sum()),
                  other_years=other_years),
      class_counts=dict(collections.Counter(r["class_name"] for r in rows_out)),
      gap_filled_fraction=float((kept_counts == 0).mean()))
  pointfolder.write_points(out, image[keep], kept_counts, label[keep], rows_out, meta)
  return {"format": pointfolder.FORMAT, **meta}
