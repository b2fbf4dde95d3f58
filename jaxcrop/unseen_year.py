"""A model asked about a year it never saw: the unseen-year section of metrics.json.

A year-held-out run (`configs/hybrid.py:…,years`) trains and validates on some
years' zone-years and tests on another year (`cropcontracts.years`). Three
groups of zone-years are scored with the same checkpoint and the same pixel
baseline:

  unseen_year             the test year's test zones (`y2023_test`): unseen in
                          space and in time, the evaluation split itself;
  same_year               the training years' test zones (`y2022_test`):
                          unseen in space only, the reference;
  unseen_year_seen_space  the test year's other zones (`y2023_fold*`): their
                          other years were trained on; reported apart.

`section` puts them side by side per tier and per class (pixel F1), with the
drop = same_year - unseen_year (positive: the model loses on the new year), and
`previous_year_baseline` (`jaxcrop.previous_year`) beside them. `evaluate`
only calls `run`.
"""
from __future__ import annotations

import json
import pathlib

from cropcontracts import years as years_lib
from cropcontracts.errors import UserError

GROUPS = ("same_year", "unseen_year", "unseen_year_seen_space")


def check(cfg_data) -> list[int]:
  """The test years of `cfg_data.test_split` (UserError when one is trained or
  validated on: `years_lib.check_heldout`); [] for a split without years."""
  years_lib.check_heldout(cfg_data.train_split, cfg_data.val_split, cfg_data.test_split)
  return years_lib.years_of(cfg_data.test_split)


def compare(by_group: dict, predictors, tiers=("tier1", "tier2", "tier3")) -> dict:
  """{tier: {predictor: {macro_f1: {group: f1, drop}, per_class: {class: {…}}}}}.

  Args:
    by_group: {group: `evaluate.compute` result with `tiers`}; same_year and
      unseen_year required, unseen_year_seen_space optional.
    predictors: the predictor names (`model`, `baseline`).
  """
  out = {}
  for tier in tiers:
    here = {g: r["tiers"][tier]["pixel"] for g, r in by_group.items()}
    names = by_group["unseen_year"]["tiers"][tier]["class_names"]
    out[tier] = {}
    for p in predictors:
      macro = {g: here[g][p]["macro_f1"] for g in GROUPS if g in here}
      macro["drop"] = macro["same_year"] - macro["unseen_year"]
      per_class = {}
      for k, name in enumerate(names):
        row = {g: here[g][p]["per_class"][k]["f1"] for g in GROUPS if g in here}
        row["drop"] = row["same_year"] - row["unseen_year"]
        row["support_unseen_year"] = here["unseen_year"][p]["per_class"][k]["support"]
        per_class[name] = row
      out[tier][p] = {"macro_f1": macro, "per_class": per_class}
  return out


def zones_root(cfg, dataset_dir) -> pathlib.Path:
  """`config.years.zones`, else the dataset's `zones_root` (metadata.json)."""
  given = cfg.years.get("zones")
  if given:
    return pathlib.Path(given)
  md = pathlib.Path(dataset_dir) / "metadata.json"
  root = json.loads(md.read_text()).get("zones_root") if md.is_file() else None
  if not root:
    raise UserError(f"{md}: no zones_root; pass --config.years.zones=<folder of year "
                    f"folders> for the previous-year baseline")
  return pathlib.Path(root)


def run(cfg, result: dict, score, previous, zone_ids) -> dict:
  """metrics.json's `unseen_year` (and its `previous_year_baseline`).

  Args:
    cfg: the run's config (`years` section: test_year, same_year, seen_space).
    result: the `evaluate.compute` result of the test split (the unseen year).
    score: split -> `evaluate.compute` result of that split.
    previous: (year, zone ids) -> `jaxcrop.previous_year.evaluate` dict, or None
      to leave the baseline out.
    zone_ids: the zones of the test split.
  """
  test_years = check(cfg.data)
  if len(test_years) != 1:
    raise UserError(f"config.data.test_split {cfg.data.test_split!r}: expected the zone-years "
                    f"of one test year (e.g. y2023_test)")
  year = test_years[0]
  by_group = {"unseen_year": result, "same_year": score(cfg.years.same_year)}
  if cfg.years.get("seen_space"):
    by_group["unseen_year_seen_space"] = score(cfg.years.seen_space)
  out = dict(test_year=year,
             train_years=years_lib.years_of(cfg.data.train_split),
             splits=dict(unseen_year=cfg.data.test_split, same_year=cfg.years.same_year,
                         unseen_year_seen_space=cfg.years.get("seen_space") or None),
             level="pixel", tiers=compare(by_group, list(result["pixel"])))
  if previous is not None:
    out["previous_year_baseline"] = previous(year, zone_ids)
  return out


def table(section: dict, tier: str = "tier3") -> str:
  """The unseen-year table `launch.sh demo --years` prints: macro-F1 per tier and
  predictor, same year / unseen year / drop, and the previous-year baseline."""
  rows = [f"{'macro-F1 (pixel)':28s}{'same year':>11s}{'unseen year':>13s}{'drop':>8s}"
          f"{'seen space':>12s}"]
  for t in ("tier3", "tier2", "tier1"):
    for p, v in section["tiers"][t].items():
      m = v["macro_f1"]
      seen = m.get("unseen_year_seen_space")
      rows.append(f"{t + ' ' + p:28s}{m['same_year']:11.4f}{m['unseen_year']:13.4f}"
                  f"{m['drop']:8.4f}{'' if seen is None else f'{seen:12.4f}'}")
  prev = section.get("previous_year_baseline")
  if prev:
    for t in ("tier3", "tier2", "tier1"):
      rows.append(f"{t + ' previous-year RPG':28s}{'':11s}"
                  f"{prev['tiers'][t]['pixel']['macro_f1']:13.4f}")
    rows.append(f"previous-year parcels matched: {prev['parcels']}")
  rows.append(f"test year {section['test_year']} (zones unseen in space and time), "
              f"trained on {section['train_years']}; same year: the training years' test "
              f"zones; seen space: the test year's other zones")
  return "\n".join(rows)
