"""The demo's years: each its weather, its clouds, its crops and its RPG edition.

The demo region has one set of parcels (the same fields, the same ID_PARCEL every
year); a year changes what grows on them and how the season runs:

  weather   the phenology of every crop shifted by 2-3 weeks (early in a dry,
            warm spring; late in a wet one) and its green peak scaled (a dry
            year's canopies are thinner), on top of each parcel's own draws.
  clouds    the odds of a clear and of an overcast acquisition scaled (a wet
            year is cloudier), and each year its own random streams.
  rotation  each parcel's crop follows the one before (`FOLLOWS`: wheat after
            rapeseed, barley or maize after wheat, rapeseed after barley…);
            grassland, vines and orchards stay. The base year (2023, the
            single-year demo) keeps its draws; a later year steps forward
            through `FOLLOWS`, an earlier one backward through its inverse.
  edition   the RPG of a year speaks its edition's list: before the 2023 reform
            the demo's 2023-only codes are written as the older list had them
            (`BEFORE_2023`: JAC -> J5M, MCS -> ORP, CAH -> MCR; silage maize
            declared as MIE), and CPL, PPH keep their pre-2023 meaning.

The base year's season is neutral (no shift, no scaling): `make_demo` without
years writes exactly the single-year demo. Synthetic: not a result.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from prep.demo.crops import CATCH_AFTER, CATCH_CROPS, CODES, MANAGEMENT, MIX, NIR_OF

BASE_YEAR = 2023       # the year of the single-year demo: its draws are the reference
REFORM = 2023          # the first RPG edition of the list in force since the CAP reform
# The crop after each crop (code -> {next code: weight}), within the region's mix.
# Codes without a row stay (grassland, vines, orchards, borders).
FOLLOWS = {
    "CZH": {"BTH": 0.85, "ORH": 0.15},
    "BTH": {"ORH": 0.25, "MIS": 0.2, "CZH": 0.2, "BTN": 0.1, "TRN": 0.1, "PPR": 0.1,
            "PTC": 0.05},
    "ORH": {"CZH": 0.6, "MIS": 0.2, "TRN": 0.2},
    "ORP": {"BTH": 0.7, "CZH": 0.3},
    "BDH": {"TRN": 0.5, "MIS": 0.3, "CZH": 0.2},
    "MIS": {"BTH": 0.6, "MIS": 0.3, "SOJ": 0.1},
    "MID": {"BTH": 1.0},
    "TRN": {"BTH": 0.6, "BDH": 0.4},
    "SOJ": {"BTH": 0.6, "MIS": 0.4},
    "BTN": {"BTH": 0.8, "ORP": 0.2},
    "PTC": {"BTH": 1.0},
    "PPR": {"BTH": 0.9, "CZH": 0.1},
    "PTR": {"PTR": 0.75, "BTH": 0.25},
    "LUZ": {"LUZ": 0.7, "BTH": 0.3},
    "JAC": {"JAC": 0.5, "BTH": 0.5},
    "MCS": {"BTH": 0.6, "CZH": 0.4},
    "CAH": {"CZH": 0.7, "MIS": 0.3},
    "CPL": {"BTH": 0.7, "MIS": 0.3},
}
# The demo's 2023-only codes as an RPG before the reform declared the same crop.
BEFORE_2023 = {"JAC": "J5M", "MCS": "ORP", "CAH": "MCR"}
SILAGE_BEFORE_2023 = "MIE"      # silage maize had its own code up to 2022


@dataclasses.dataclass(frozen=True)
class Season:
  """How one year's season runs over the demo region.

  Attributes:
    year: the year.
    weather: "dry" (early, thin canopies, clear skies), "wet" (late, lush,
      cloudy) or "base" (the base year: no change).
    shift_days: days added to every phenology date (negative: early).
    green: scale of the green cover peak.
    cloudiness: scale of the odds of overcast acquisitions (> 1: cloudier).
  """
  year: int
  weather: str
  shift_days: float
  green: float
  cloudiness: float


def season(year: int, seed: int = 0) -> Season:
  """The season of `year` (the base year's is neutral), drawn from [seed, 5, year]."""
  if year == BASE_YEAR:
    return Season(year, "base", 0.0, 1.0, 1.0)
  rng = np.random.default_rng([seed, 5, year])
  dry = bool(rng.random() < 0.5)
  days = float(rng.uniform(14, 21))
  if dry:
    return Season(year, "dry", -days, float(rng.uniform(0.82, 0.9)),
                  float(rng.uniform(0.5, 0.7)))
  return Season(year, "wet", days, float(rng.uniform(1.0, 1.05)),
                float(rng.uniform(1.4, 1.7)))


def stream_seed(seed: int, year: int) -> int:
  """The seed of a year's random scene streams: the base year's is `seed` (the
  single-year demo), every other year's its own."""
  return seed if year == BASE_YEAR else 10_000 * (seed + 1) + year


def previous_crops() -> dict:
  """{code: {previous code: weight}}: FOLLOWS inverted (weights of the pairs)."""
  back: dict = {}
  for before, after in FOLLOWS.items():
    for code, w in after.items():
      back.setdefault(code, {})[before] = back.get(code, {}).get(before, 0.0) + w
  return back


def rotate(code: np.ndarray, region: np.ndarray, table: dict,
           rng: np.random.Generator, *, prior: bool = False) -> np.ndarray:
  """str [P]: each parcel's crop one step through `table` ({code: {code: w}}),
  among the codes of its region's mix; a code without a row, or without a
  candidate in its region's mix, stays. prior: weigh each candidate by its share
  of the mix too (a step back in time: P(before | after) ∝ P(before) P(after | before))."""
  out = code.copy()
  for i, (c, r) in enumerate(zip(code, region)):
    mix = MIX.get(r, MIX["demo-north"])
    cand = {k: w * (mix[k] if prior else 1.0) for k, w in table.get(c, {}).items()
            if k in mix}
    if cand:
      names, w = zip(*cand.items())
      out[i] = rng.choice(names, p=np.asarray(w) / sum(w))
  return out


def crops_of_year(code: np.ndarray, region: np.ndarray, year: int, seed: int) -> np.ndarray:
  """str [P] the base year's codes (2023 list) walked to `year`, one rotation a year."""
  code = np.asarray(code).astype(object)
  step, table = (1, FOLLOWS) if year > BASE_YEAR else (-1, previous_crops())
  for y in range(BASE_YEAR + step, year + step, step) if year != BASE_YEAR else ():
    code = rotate(code, region, table, np.random.default_rng([seed, 6, y]), prior=step < 0)
  return code.astype(str)


def edition_codes(code: np.ndarray, pheno: np.ndarray, year: int) -> np.ndarray:
  """str [P]: the codes as the RPG of `year` writes them (module docstring)."""
  if year >= REFORM:
    return code
  old = np.array([BEFORE_2023.get(c, c) for c in code], dtype=object)
  old[(code == "MIS") & (pheno == "silage_maize")] = SILAGE_BEFORE_2023
  return old.astype(str)


def parcels_of_year(parcels, year: int, seed: int):
  """The demo's Parcels as they are in `year`: rotated crops (their phenology,
  management, catch crops and leaf NIR drawn again where the crop changed),
  the season's shift and green scale, the codes of the year's RPG edition.

  Args:
    parcels: the base year's `prep.demo.parcels.Parcels` (P parcels).
  Returns:
    Parcels with code, pheno, catch, catch2, shift, amplitude, nir of `year`;
    the geometry, the land and the declared parcels are the same every year.
  """
  if year == BASE_YEAR:
    return parcels
  s = season(year, seed)
  rng = np.random.default_rng([seed, 7, year])
  p = len(parcels.code)
  code = crops_of_year(parcels.code, parcels.region, year, seed)
  changed = code != parcels.code
  pheno = np.array([CODES[c][1] for c in code], dtype=object)
  for c, choices in MANAGEMENT.items():
    names, probs = zip(*choices)
    pheno[code == c] = rng.choice(names, size=p, p=probs)[code == c]
  pheno = np.where(changed, pheno, parcels.pheno).astype(str)
  nir = np.where(changed, np.vectorize(NIR_OF.get)(pheno, 1.0) * rng.normal(1, 0.04, p),
                 parcels.nir)
  has_catch = np.isin(code, CATCH_AFTER) & (rng.random(p) < 0.3)
  catch = np.where(has_catch, rng.choice(CATCH_CROPS, p), "")
  catch2 = np.where(has_catch & (catch != "PCL") & (rng.random(p) < 0.1), "PCL", "")
  shift = parcels.shift + s.shift_days + rng.normal(0, 3, p)
  return dataclasses.replace(
      parcels, code=edition_codes(code, pheno, year), pheno=pheno, catch=catch,
      catch2=catch2, shift=shift, amplitude=parcels.amplitude * s.green, nir=nir)
