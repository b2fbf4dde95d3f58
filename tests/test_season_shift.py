"""Season alignment (jaxcrop.season_shift): a year's phenology moved onto the training calendar."""
import json

import numpy as np
import pytest

from jaxcrop import season_shift as ss


def _series(values):
  """[T, 1, 1, 1] float32 of a list: one pixel, one band."""
  return np.asarray(values, np.float32)[:, None, None, None]


def test_shift_months_reads_between_the_two_months_around_by_hand():
  x = _series([0, 10, 20, 30, 40])
  # later by 0.5: month t reads t - 0.5 (month 0 clamped to itself)
  np.testing.assert_allclose(ss.shift_months(x, 0.5)[:, 0, 0, 0], [0, 5, 15, 25, 35])
  # earlier by 1.25: month t reads t + 1.25, clamped to the last month
  np.testing.assert_allclose(ss.shift_months(x, -1.25)[:, 0, 0, 0], [12.5, 22.5, 32.5, 40, 40])
  np.testing.assert_array_equal(ss.shift_months(x, 0.0), x)
  ints = ss.shift_months(np.array([[[[1]]], [[[2]]], [[[4]]]], np.uint16), 0.5)
  assert ints.dtype == np.uint16 and ints[:, 0, 0, 0].tolist() == [1, 2, 3]   # 1.5 -> 2, 3


def test_shift_months_never_reads_a_month_after_the_cut_off():
  """until=3: months 0-2 are shifted among themselves, 3-4 (masked) stay as they are."""
  x = _series([0, 10, 20, 0, 0])
  out = ss.shift_months(x, -0.5, until=3)[:, 0, 0, 0]
  np.testing.assert_allclose(out, [5, 15, 20, 0, 0])      # month 2 clamped to itself
  leak = _series([0, 10, 20, 999, 999])
  np.testing.assert_allclose(ss.shift_months(leak, -0.5, until=3)[:3, 0, 0, 0], [5, 15, 20])


def test_profile_averages_the_valid_observations_only():
  image = np.zeros((2, 1, 2, 1), np.uint16)               # [T, H, W, C]
  image[0, 0] = [[100], [300]]
  image[1, 0] = [[500], [700]]
  valid = np.array([[[1, 1]], [[0, 2]]])                  # month 1: pixel 0 gap filled
  sums, counts = ss.profile(image, valid)
  np.testing.assert_array_equal(counts, [2, 1])
  np.testing.assert_allclose(sums[:, 0] / counts, [200, 700])


def _season(shift=0.0, months=12):
  """mean [T, C]: a green-up and die-back of 2 bands peaking mid-season, moved later
  by `shift` months."""
  t = np.arange(months)[:, None] - shift
  return np.concatenate([1000 + 3000 * np.exp(-((t - 5.5) / 2.0) ** 2),
                         800 + 500 * np.exp(-((t - 7) / 2.5) ** 2)], 1)


@pytest.mark.parametrize("moved", [-0.6, -0.25, 0.0, 0.5, 0.75])
def test_estimate_finds_how_far_a_season_was_moved(moved):
  """A year moved later by `moved` months is moved back by -`moved` (to a step)."""
  mean, std = _season(), np.full((12, 2), 500.0)
  sums, counts = _season(moved) * 40, np.full(12, 40)
  assert ss.estimate(sums, counts, mean, std) == pytest.approx(-moved, abs=ss.STEP)


def test_estimate_with_a_cut_off_uses_the_kept_months_only():
  """Up to June (until=6) the green-up alone tells the shift; what comes after the
  cut-off (here nonsense) changes nothing."""
  mean, std = _season(), np.full((12, 2), 500.0)
  year = _season(0.5)
  year[6:] = 99999.0
  assert ss.estimate(year, np.ones(12), mean, std, until=6) == pytest.approx(-0.5, abs=ss.STEP)
  assert ss.estimate(year, np.zeros(12), mean, std) == 0.0        # nothing observed


def _zone(profile_shift, T=12, n=4):
  """(image [1, T, n, n, 2] uint16, valid [1, T, n, n]): every pixel the season moved."""
  image = np.broadcast_to(np.rint(_season(profile_shift, T))[:, None, None, :],
                          (T, n, n, 2)).astype(np.uint16)[None]
  return image, np.ones((1, T, n, n), np.uint8)


def test_zone_shifts_pool_the_zones_of_a_region():
  """Two zones of one region, moved 0.4 and 0.8 later: one shift for both, the pooled
  profile's; a zone of another region keeps its own; a padding zone gets 0."""
  shifts = ss.ZoneShifts(_season(), np.full((12, 2), 500.0))
  for name, region, moved in (("a_0", b"a", 0.4), ("a_1", b"a", 0.8), ("b_0", b"b", -0.5)):
    shifts.add([name.encode()], *_zone(moved), regions=[region])
  assert shifts.shift("a_0") == shifts.shift(b"a_1")
  assert -0.8 <= shifts.shift("a_0") <= -0.4
  assert shifts.shift("b_0") == pytest.approx(0.5, abs=ss.STEP)
  assert shifts.shift(b"") == 0.0
  np.testing.assert_array_equal(shifts.of([b"b_0", b""]), [shifts.shift("b_0"), 0.0])
  assert shifts.summary() == {"a": round(shifts.shift("a_0"), 2),
                              "b": round(shifts.shift("b_0"), 2)}
  assert json.dumps(shifts.summary())               # metrics.json: plain numbers
  alone = ss.ZoneShifts(_season(), np.full((12, 2), 500.0))
  alone.add(["a_0"], *_zone(0.4))                   # no region: the zone on its own
  assert alone.shift("a_0") == pytest.approx(-0.4, abs=ss.STEP)


def test_the_same_zone_in_two_years_is_two_zone_years():
  """Zones added with their year pool within it: a zone and its region in 2022 and in
  2023 get each year's own shift (predict maps zone-years of several years at once)."""
  shifts = ss.ZoneShifts(_season(), np.full((12, 2), 500.0))
  shifts.add(["a_0"], *_zone(0.0), regions=["a"], year=2022)
  shifts.add(["a_0"], *_zone(0.6), regions=["a"], year=2023)
  assert shifts.shift("a_0", year=2022) == pytest.approx(0.0, abs=ss.STEP)
  assert shifts.shift("a_0", year=2023) == pytest.approx(-0.6, abs=ss.STEP)
  assert shifts.summary() == {"2022/a": shifts.shift("a_0", year=2022),
                              "2023/a": shifts.shift("a_0", year=2023)}


def test_shift_batch_moves_each_example_by_its_own_shift():
  x = np.stack([_series([0, 10, 20]), _series([0, 10, 20])])
  out = ss.shift_batch(x, [0.0, 1.0])
  np.testing.assert_allclose(out[:, :, 0, 0, 0], [[0, 10, 20], [0, 0, 10]])


def test_read_imagery_aligns_a_zone_and_records_its_shift(tmp_path):
  """A zone whose every pixel is the training profile moved 0.5 later is read moved
  back (the profile again, where the shift reads inside the season), with its
  shift, as predict's first step; without align_season it is read as stored."""
  import types
  from cropcontracts import zonefolder
  from jaxcrop.maps import tiling
  from prep.demo import zonefolders as zf
  zone = zf.synthetic_zone("al_0")
  T, H, W = 12, zone.height, zone.width
  moved = np.rint(np.concatenate([_season(0.5, T)] * 2, 1)).astype(np.uint16)   # [T, 4]
  zonefolder.write_imagery(tmp_path / "al_0", zone,
                           np.broadcast_to(moved[:, :, None, None], (T, 4, H, W)).copy(),
                           np.ones((T, H, W), np.uint8), zonefolder.month_labels(2024, T))
  folder = zonefolder.open_zone(tmp_path / "al_0")
  mean = np.concatenate([_season(0.0, T)] * 2, 1)
  meta = types.SimpleNamespace(mean=mean, std=np.full((T, 4), 500.0))
  got = tiling.read_imagery(folder, tiling.MapSettings(align_season=True), meta)
  assert got.season_shift == pytest.approx(-0.5, abs=ss.STEP)
  stored = folder.read_image()
  np.testing.assert_array_equal(got.image, ss.shift_months(stored, got.season_shift))
  err = lambda x: np.abs(x[:, 0, 0].astype(float) - mean).mean()
  assert err(got.image) < err(stored) / 2           # back near the training calendar
  plain = tiling.read_imagery(folder, tiling.MapSettings(), meta)
  assert plain.season_shift is None
  np.testing.assert_array_equal(plain.image, folder.read_image())


def test_the_training_reference_aligns_each_region_to_its_own_calendar(tmp_path):
  """Training records each region's profile (and all regions'): a later year is
  moved onto its region's calendar, not onto the mean of regions whose seasons
  differ; a region training never saw goes to the profile over all of them."""
  from cropcontracts.errors import UserError
  mean, std = _season(), np.full((12, 2), 500.0)
  train = ss.ZoneShifts(mean, std)
  train.add(["a_0"], *_zone(0.3), regions=["a"])        # region a: a later calendar
  train.add(["b_0"], *_zone(-0.3), regions=["b"])
  record = json.loads(json.dumps(train.record()))
  assert record["format"] == ss.FORMAT and set(record["regions"]) == {"a", "b", ss.ALL}
  np.testing.assert_allclose(ss.ZoneShifts(mean, std, record).target("a"),
                             np.rint(_season(0.3)), atol=1e-3)
  year = ss.ZoneShifts(mean, std, record)
  year.add(["a_9"], *_zone(0.8), regions=["a"])         # 0.5 later than region a
  year.add(["b_9"], *_zone(-0.3), regions=["b"])        # region b's own calendar
  year.add(["c_9"], *_zone(0.0), regions=["c"])         # unseen region
  assert year.shift("a_9") == pytest.approx(-0.5, abs=ss.STEP)
  assert year.shift("b_9") == pytest.approx(0.0, abs=ss.STEP)
  assert abs(year.shift("c_9")) <= 0.1
  np.testing.assert_array_equal(ss.ZoneShifts(mean, std).target("a"), mean)   # no record
  assert ss.read_reference(tmp_path) is None
  (tmp_path / ss.FILE).write_text(json.dumps(record))
  assert ss.read_reference(tmp_path) == record
  (tmp_path / ss.FILE).write_text('{"format": "other"}')
  with pytest.raises(UserError, match=r"season_reference.json: not a jaxcrop-season-"
                                      r"reference/1 record; delete it and rerun"):
    ss.read_reference(tmp_path)


def test_predict_aligns_each_region_and_records_the_shift(tmp_path, capsys):
  """A model that aligns seasons: predict estimates one shift per region of the zones
  it maps (against the workdir's season_reference.json: here the zones' own profile
  moved 0.5 month later), prints it and writes it to map.json; with --until, from
  the months kept."""
  import re
  from cropcontracts import zonefolder
  from jaxcrop import predict
  from prep.demo import zonefolders as zf
  from tests import fixtures
  fixtures.write_workdir(tmp_path / "W")                       # 3 months: 2023-01..03
  config = json.loads((tmp_path / "W" / "config.json").read_text())
  config["data"]["align_season"] = True
  (tmp_path / "W" / "config.json").write_text(json.dumps(config))
  zones = tmp_path / "zones"
  sums, counts = 0.0, 0
  for i in range(2):
    zf.write_zone(zones / f"al_{i}", zf.synthetic_zone(f"al_{i}", index=i), labels=False)
    folder = zonefolder.open_zone(zones / f"al_{i}")
    s_, n_ = ss.profile(folder.read_image(), folder.read_valid_count())
    sums, counts = sums + s_, counts + n_
  later = ss.shift_months((sums / counts[:, None])[:, None, None, :], 0.5)[:, 0, 0] * counts[:, None]
  (tmp_path / "W" / ss.FILE).write_text(json.dumps({"format": ss.FORMAT, "regions": {
      "Testland": {"sums": later.tolist(), "counts": counts.tolist()}}}))
  for until in (None, "february"):
    out = tmp_path / f"maps_{until}"
    rc, stdout, err = fixtures.run(predict.main, [
        "--workdir", tmp_path / "W", "--zone", zones, "--out", out, "--tile", "16",
        "--overlap", "4", *(["--until", until] if until else [])], capsys)
    assert rc == 0, err
    shift = float(re.search(r"season alignment \(jaxcrop.season_shift\): "
                            r"\{'2023/Testland': (-?[0-9.]+)\} months", stdout).group(1))
    assert 0.3 <= shift <= 0.7, shift
    for i in range(2):
      assert json.loads((out / f"al_{i}" / "map.json").read_text())[
          "season_shift_months"] == shift
