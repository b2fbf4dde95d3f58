"""Years in the dataset: the names of its year splits and the year-held-out rules.

A multi-year cropmap dataset (builder configs with `years`, e.g. `demo_years`)
reads the zone-years of `<root>/<year>/<zone_id>/` (`cropcontracts.zonefolder`)
and keeps the study's spatial split within every year: a zone is in the same
spatial split (`test`, `fold0`, …) each year, and each zone-year is in exactly
one split, named `y<year>_<spatial split>` (`y2022_fold0`, `y2023_test`).

Year-held-out experiments pick their splits from these names: test = one year
(`y2023_test`: zones unseen in space and time; `y2023_fold*`: zones seen in
space in other years, unseen in time), validation = the previous year or a
fold, train = the folds of the other years. The training year's own test zones
(`y2022_test`) give the same-year score the unseen year is compared with.
A test year whose zone-years are also trained or validated on is refused
(`check_heldout`): the score would not be of an unseen year.
"""
from __future__ import annotations

import re
from typing import Iterable, Sequence

from cropcontracts.errors import UserError

_SPLIT = re.compile(r"^y(\d{4})_(\w+)$")


def split_name(year: int, spatial: str) -> str:
  """`y2022_fold0`: the split of a year's zone-years in spatial split `spatial`."""
  return f"y{int(year)}_{spatial}"


def parse(name: str) -> tuple[int, str] | None:
  """`y2022_fold0[:50%]` -> (2022, 'fold0'); None for a split without a year."""
  m = _SPLIT.match(re.sub(r"\[.*\]$", "", name.strip()))
  return (int(m.group(1)), m.group(2)) if m else None


def years_of(split: str) -> list[int]:
  """The sorted years named in a `+`-joined split string (`y2022_fold0+y2022_fold1`)."""
  return sorted({p[0] for s in split.split("+") if (p := parse(s))})


def heldout(years: Sequence[int], test_year: int, num_folds: int, *,
            validation: str = "fold") -> dict:
  """The splits of one year-held-out experiment.

  Args:
    years: the dataset's years; test_year: the one held out.
    num_folds: the dataset's spatial folds (fold0..).
    validation: "fold" (the last fold of the training years) or "previous"
      (every zone-year of the year before the test year, which is then not
      trained on).
  Returns:
    {train, val, test, seen_space, same_year}: `+`-joined split strings:
    test the test year's test zones (unseen in space too), seen_space its
    other zones (their other years may be trained on), same_year the training
    years' test zones.
  """
  if test_year not in years:
    raise UserError(f"test year {test_year} is not a year of the dataset "
                    f"({', '.join(map(str, years))})")
  rest = [y for y in years if y != test_year]
  folds = [f"fold{i}" for i in range(num_folds)]
  if validation == "previous":
    if test_year - 1 not in rest or len(rest) < 2:
      raise UserError(f"validation on the previous year needs {test_year - 1} and another "
                      f"training year in the dataset ({', '.join(map(str, years))})")
    val_years, train_years = [test_year - 1], [y for y in rest if y != test_year - 1]
    train = [split_name(y, f) for y in train_years for f in folds]
    val = [split_name(y, f) for y in val_years for f in folds]
  elif validation == "fold":
    train = [split_name(y, f) for y in rest for f in folds[:-1]]
    val = [split_name(y, folds[-1]) for y in rest]
  else:
    raise UserError(f"validation={validation!r}: expected 'fold' or 'previous'")
  if not train:
    raise UserError(f"no training year left besides test year {test_year}")
  return dict(train="+".join(train), val="+".join(val),
              test=split_name(test_year, "test"),
              seen_space="+".join(split_name(test_year, f) for f in folds),
              same_year="+".join(split_name(y, "test") for y in rest))


def check_heldout(train_split: str, val_split: str, test_split: str) -> None:
  """UserError when a year of `test_split` is also in `train_split` or `val_split`."""
  test = years_of(test_split)
  for what, split in (("train_split", train_split), ("val_split", val_split)):
    both = sorted(set(test) & set(years_of(split)))
    if both:
      raise UserError(f"config.data.{what} {split!r} holds test year "
                      f"{', '.join(map(str, both))} of test_split {test_split!r}; train and "
                      f"validate on the other years (an unseen year is never trained on)")


def year_group(year: int, num_folds: int) -> str:
  """`y2022_fold0+y2022_fold1+y2022_fold2`: every training zone-year of a year,
  one fold of leave-one-year-out cross-validation (`jaxcrop.cv`)."""
  return "+".join(split_name(year, f"fold{i}") for i in range(num_folds))


def label(split: str) -> str:
  """`y2022` for a `year_group`, else the split itself: a folder name."""
  ys = years_of(split)
  return f"y{ys[0]}" if len(ys) == 1 and "+" in split else split


def all_splits(years: Iterable[int], spatial: Iterable[str]) -> list[str]:
  """Every split name of a dataset of `years` with spatial splits `spatial`."""
  spatial = list(spatial)
  return [split_name(y, s) for y in sorted(years) for s in spatial]
