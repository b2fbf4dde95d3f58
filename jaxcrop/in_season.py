"""In-season inputs: a season cut off at a month, as a map made before it ends sees it.

The model and the pixel baseline take a whole season of gap-filled composites,
image [..., T, H, W, C]. Made in June, a map has only January to June, and
the composites it has were filled without the months to come. `cut_off` makes
those inputs from a zone's (or a patch's) full season: it undoes the gap filling
(the months without a valid observation, `valid_count == 0`, are missing again),
then fills again with the one rule of `cropcontracts.gapfill` up to the cut-off
only, and masks the later months (0, as nodata: `normalize` makes them 0 too,
and their valid counts are 0). So no month after the cut-off reaches an
earlier one: the last months before it take the last valid value, as at the
end of a season. With the cut-off at the season's last month the input is the
one prep wrote (the same gap filling of the same observations).

A cut-off is a calendar month (a name such as `june` or `jun`, or 1-12), looked
up in the season's month labels (`YYYY-MM`, the dataset's `months`): `until`,
the number of months kept, counts the months up to and including its first
occurrence (`months_kept`). A month outside the season is a UserError.

Used by training (`jaxcrop.input_pipeline`: a random cut-off per example,
`until_choices`), evaluation (`jaxcrop.in_season_eval`: macro-F1 by cut-off month)
and `python -m jaxcrop.predict --until`. NumPy only: the predict path imports no
TensorFlow.
"""
from __future__ import annotations

import calendar

import numpy as np

from cropcontracts.errors import UserError
from cropcontracts.gapfill import gap_fill

# The cut-off months `jaxcrop.evaluate` scores (April … August, and December:
# the full season of a calendar-year dataset).
EVAL_MONTHS = (4, 5, 6, 7, 8, 12)
_NAMES = {name.lower(): i for i, name in enumerate(calendar.month_name) if name}
_NAMES.update({name.lower(): i for i, name in enumerate(calendar.month_abbr) if name})


def parse_month(text, option: str = "--until") -> int:
  """The calendar month 1-12 of `text`: a number 1-12 or an English month name
  (`june`, `Jun`); UserError naming `option` otherwise."""
  s = str(text).strip().lower()
  month = int(s) if s.isdigit() else _NAMES.get(s)
  if month is None or not 1 <= month <= 12:
    raise UserError(f"{option} {text}: not a month; pass a month name (june) or its "
                    f"number 1-12")
  return month


def month_name(month: int) -> str:
  """`6` → `June`."""
  return calendar.month_name[month]


def months_kept(months, month: int, option: str = "--until") -> int:
  """`until`, the number of the season's first months up to and including the
  calendar month `month` (1-12) (its first occurrence in `months`, labels
  `YYYY-MM`); UserError naming `option` and the season when it is not in it."""
  calendar_months = [int(m.split("-")[1]) for m in months]
  if month not in calendar_months:
    raise UserError(f"{option} {month_name(month).lower()}: outside the season "
                    f"{months[0]}..{months[-1]} of the dataset the model was trained on; "
                    f"pass one of its months")
  return calendar_months.index(month) + 1


def cut_off(image, valid, until: int):
  """The inputs of a season cut off after its first `until` months.

  Args:
    image: uint16 [..., T, H, W, C] gap-filled composites (0 = nodata), as the
      model sees them before `normalize` (a batch, a patch or a whole zone).
    valid: integer [..., T, H, W] valid observations per month (valid_count):
      0 where the month was gap filled.
    until: months kept, 0..T.
  Returns:
    (uint16 [..., T, H, W, C], valid [..., T, H, W] of valid's dtype): months
    from `until` on 0; earlier months without a valid observation filled again
    from the kept months only (`cropcontracts.gapfill.gap_fill`).
  """
  image, valid = np.asarray(image, np.uint16), np.asarray(valid)
  *lead, T, H, W, C = image.shape
  if valid.shape != image.shape[:-1]:
    raise ValueError(f"valid {valid.shape} does not match image {image.shape}")
  n = int(np.prod(lead, dtype=np.int64))
  raw = np.where(valid[..., None] > 0, image, np.uint16(0)).reshape(n, T, H, W, C)
  comp = raw.transpose(1, 4, 0, 2, 3).reshape(T, C, n * H, W)   # [T, C, N·H, W]
  filled, _ = gap_fill(comp, until)
  out = filled.reshape(T, C, n, H, W).transpose(2, 0, 3, 4, 1).reshape(image.shape)
  kept = (np.arange(T) < until)[:, None, None]
  return out, np.where(kept, valid, 0).astype(valid.dtype)


def until_choices(months, choices) -> list[int]:
  """`until` of each calendar month of `choices` (training's `data.cut_off_months`,
  drawn uniformly per example by the input pipeline); UserError naming the
  config field for a month outside the season."""
  return [months_kept(months, parse_month(m, "data.cut_off_months"), "data.cut_off_months")
          for m in choices]
