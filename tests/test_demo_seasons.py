"""The demo's years (prep.demo.seasons): weather, clouds, rotations, RPG editions."""
import dataclasses

import numpy as np
import pytest

from cropcontracts import nomenclature
from prep import cli
from prep.demo import seasons, sensor
from prep.demo.parcels import make_parcels
from prep.demo.region import SMALL
from tests.fixtures import assert_error, run

NOM = nomenclature.load()


@pytest.fixture(scope="module")
def parcels():
  return make_parcels(SMALL, 0)


def test_the_base_year_is_the_single_year_demo(parcels):
  assert seasons.season(2023) == seasons.Season(2023, "base", 0.0, 1.0, 1.0)
  assert seasons.parcels_of_year(parcels, 2023, 0) is parcels
  assert seasons.stream_seed(3, 2023) == 3 and seasons.stream_seed(3, 2022) != 3


@pytest.mark.parametrize("year", [2019, 2020, 2021, 2022, 2024, 2025])
def test_other_years_shift_by_two_to_three_weeks_dry_or_wet(year):
  s = seasons.season(year, seed=0)
  assert 14 <= abs(s.shift_days) <= 21
  assert (s.weather == "dry") == (s.shift_days < 0) == (s.green < 1) == (s.cloudiness < 1)
  assert s == seasons.season(year, seed=0) != seasons.season(year, seed=1)


def test_cloudier_years_have_more_overcast_scenes():
  def overcast(cloudiness):
    rng = np.random.default_rng(0)
    return np.mean([sensor._cover_fraction(rng, m % 12 + 1, cloudiness) > 0.8
                    for m in range(2000)])
  assert overcast(0.6) < overcast(1.0) < overcast(1.6)


def test_crops_rotate_plausibly_on_the_same_parcels(parcels):
  before = seasons.parcels_of_year(parcels, 2022, 0)
  after = seasons.parcels_of_year(parcels, 2024, 0)
  assert before.geometry is parcels.geometry and (before.declared == parcels.declared).all()
  rotation = {(a, b) for a, nxt in seasons.FOLLOWS.items() for b in nxt}
  crops_2022 = seasons.crops_of_year(parcels.code, parcels.region, 2022, 0)
  for y0, y1 in ((crops_2022, parcels.code), (parcels.code, after.code)):
    moved = y0 != y1
    assert moved.mean() > 0.5                      # most fields change crop
    assert all((a, b) in rotation for a, b in zip(y0[moved], y1[moved]))
  # wheat after rapeseed: every 2022 rapeseed field is wheat or barley in 2023
  assert set(parcels.code[crops_2022 == "CZH"]) <= {"BTH", "ORH"}
  assert 14 <= abs(np.median(before.shift - parcels.shift)) <= 21


@pytest.mark.parametrize("year", [2021, 2022, 2023, 2024])
def test_each_rpg_speaks_its_edition(parcels, year):
  codes = seasons.parcels_of_year(parcels, year, 0).code
  assert NOM.unknown_codes(codes, year) == []
  reform = {"JAC", "MCS", "CAH"}
  assert (reform & set(codes)) == set() if year < 2023 else True
  if year < 2023:
    assert {"J5M", "MCR"} & set(codes) or {"MIE"} & set(codes)


def test_cli_years_mistake_is_one_line(tmp_path, capsys):
  rc, _, err = run(cli.main, ["demo", "--out", tmp_path, "--years", "2022,x"], capsys)
  assert_error(rc, err, "argument --years: '2022,x': expected years like 2022,2023")
  rc, _, err = run(cli.main, ["demo", "--out", tmp_path, "--years", "2010,2011"], capsys)
  assert_error(rc, err, "argument --years: '2010,2011': expected years from 2015 on, "
                        "like 2022,2023")
  assert not tmp_path.joinpath("raw").exists()


def test_years_written_in_processes_equal_years_written_one_after_the_other(tmp_path,
                                                                         monkeypatch):
  """make_demo writes the years side by side in processes (one per core): the zone
  folders are byte for byte those of a single process. On the small demo with one
  zone per region and a scene a month (the processes are forked: they see the
  smaller spec too)."""
  from prep import demo
  monkeypatch.setattr(demo, "SMALL", dataclasses.replace(SMALL, zones_per_region=1,
                                                         scene_step_days=30))
  demo.make_demo(tmp_path / "parallel", small=True, years=[2022, 2023], progress=False)
  monkeypatch.setattr(demo.os, "sched_getaffinity", lambda pid: {0})   # one core
  demo.make_demo(tmp_path / "serial", small=True, years=[2022, 2023], progress=False)
  files = sorted(p.relative_to(tmp_path / "serial")
                 for p in (tmp_path / "serial" / "zones").rglob("*.tif"))
  assert len(files) == 2 * 2 * 4    # 2 years x 2 zones x s2, valid_count, labels, parcels
  for f in files:
    assert (tmp_path / "parallel" / f).read_bytes() == (tmp_path / "serial" / f).read_bytes(), f
