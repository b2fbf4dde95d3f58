"""Monthly median and gap filling: hand-computed values and reference equality."""
import itertools
import warnings

import numpy as np
import pytest

from benchmarks.composite import gap_fill_reference
from cropcontracts import gapfill
from prep import composite


def _nanmedian_reference(scenes, valid):
  """numpy.nanmedian on float data, rounded half up like ours; 0 = no data."""
  use = valid & (scenes != 0).all(axis=1)
  f = np.where(use[:, None], scenes.astype(np.float64), np.nan)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    m = np.nanmedian(f, axis=0)
  return np.where(np.isnan(m), 0, np.floor(m + 0.5)).astype(np.uint16), use.sum(0)


@pytest.mark.parametrize("n", range(1, 18))
def test_sorting_network_sorts_every_01_input(n):
  # 0-1 principle: a network sorting all 2**n binary inputs sorts everything.
  if n > 12:
    cases = np.random.default_rng(n).integers(0, 2, (4096, n))
  else:
    cases = np.array(list(itertools.product((0, 1), repeat=n)))
  got = composite.sort_scenes(cases.T.astype(np.uint16))
  np.testing.assert_array_equal(got, np.sort(cases.T, axis=0))


def test_median_hand_computed():
  # One pixel, 1 band: values of 4 scenes, validity per case.
  vals = np.array([10, 40, 20, 31], np.uint16).reshape(4, 1, 1, 1)
  cases = {(1, 1, 1, 1): 26,   # 20, 31 -> 25.5 -> 26 (half up)
           (1, 1, 1, 0): 20,   # odd count
           (1, 0, 0, 1): 21,   # 10, 31 -> 20.5 -> 21
           (0, 1, 0, 0): 40,   # single
           (0, 0, 0, 0): 0}    # nothing valid -> nodata
  for mask, want in cases.items():
    valid = np.array(mask, bool).reshape(4, 1, 1)
    med, count = composite.median_composite(vals, valid)
    assert med[0, 0, 0] == want, mask
    assert count[0, 0] == sum(mask)


def test_zero_reflectance_is_nodata():
  scenes = np.array([[100, 0], [200, 7], [300, 9]], np.uint16).reshape(3, 2, 1, 1)
  med, count = composite.median_composite(scenes, np.ones((3, 1, 1), bool))
  np.testing.assert_array_equal(med[:, 0, 0], [250, 8])   # scene 0 dropped
  assert count[0, 0] == 2


@pytest.mark.parametrize("S", [1, 2, 3, 6, 7, 16])
@pytest.mark.parametrize("p_valid", [0.0, 0.5, 1.0])
def test_median_equals_nanmedian(S, p_valid):
  rng = np.random.default_rng(S)
  scenes = rng.integers(0, 65536, (S, 3, 17, 19), dtype=np.uint16)
  scenes[rng.random(scenes.shape) < 0.02] = 0
  scenes[:, :, 0, 0] = 65535                       # saturated values survive
  valid = rng.random((S, 17, 19)) < p_valid
  med, count = composite.median_composite(scenes, valid)
  want, want_count = _nanmedian_reference(scenes, valid)
  np.testing.assert_array_equal(med, want)
  np.testing.assert_array_equal(count, want_count)
  if p_valid == 1.0:
    assert med[0, 0, 0] == 65535


def test_monthly_median_groups_by_month():
  rng = np.random.default_rng(0)
  scenes = rng.integers(1, 10000, (7, 4, 5, 6), dtype=np.uint16)
  valid = rng.random((7, 5, 6)) < 0.7
  months = np.array([0, 0, 2, 2, 2, 5, 0])
  comp, counts = composite.monthly_median(scenes, valid, months, n_months=12)
  assert comp.shape == (12, 4, 5, 6) and comp.dtype == np.uint16
  assert counts.shape == (12, 5, 6) and counts.dtype == np.uint8
  for t in range(12):
    sel = months == t
    want, want_count = _nanmedian_reference(scenes[sel], valid[sel])
    np.testing.assert_array_equal(comp[t], want)
    np.testing.assert_array_equal(counts[t], want_count)
  assert not comp[[1, 3, 4, 6, 7, 8, 9, 10, 11]].any()


def test_monthly_median_rejects_bad_months():
  with pytest.raises(ValueError, match="month_of_scene must be in"):
    composite.monthly_median(np.ones((1, 4, 2, 2), np.uint16),
                             np.ones((1, 2, 2), bool), [12])


def _series(values):
  """[T] values (0 = missing) -> [T, 1, 1, 1] composite."""
  return np.array(values, np.uint16).reshape(-1, 1, 1, 1)


@pytest.mark.parametrize("series, want", [
    ([10, 0, 21, 30], [10, 16, 21, 30]),        # single gap: mean, half up
    ([0, 0, 7, 9], [7, 7, 7, 9]),               # leading: next valid value
    ([5, 9, 0, 0], [5, 9, 9, 9]),               # trailing: previous value
    ([10, 0, 0, 40], [10, 20, 30, 40]),         # two gaps: linear
    ([10, 0, 0, 0, 11], [10, 10, 11, 11, 11]),  # 10.25, 10.5, 10.75 rounded
    ([0, 0, 0, 0], [0, 0, 0, 0]),               # no valid month: stays 0
    ([3, 4, 5], [3, 4, 5]),                     # nothing to fill
])
def test_gap_fill_hand_computed(series, want):
  filled, was_filled = composite.gap_fill(_series(series))
  np.testing.assert_array_equal(filled[:, 0, 0, 0], want)
  expect_filled = [v == 0 and any(series) for v in series]
  np.testing.assert_array_equal(was_filled[:, 0, 0], expect_filled)


def test_gap_fill_all_bands_together():
  # A month where one band is 0 is missing as a whole: every band is refilled.
  comp = np.array([[[100], [200]], [[7], [0]], [[300], [400]]],
                  np.uint16).reshape(3, 2, 1, 1)
  filled, was_filled = composite.gap_fill(comp)
  np.testing.assert_array_equal(filled[1, :, 0, 0], [200, 300])
  assert was_filled[:, 0, 0].tolist() == [False, True, False]


@pytest.mark.parametrize("p_missing", [0.0, 0.3, 0.8, 1.0])
def test_gap_fill_equals_loop_reference(p_missing):
  rng = np.random.default_rng(int(p_missing * 10))
  comp = rng.integers(1, 65536, (12, 4, 13, 11), dtype=np.uint16)
  missing = rng.random((12, 13, 11)) < p_missing
  comp[np.broadcast_to(missing[:, None], comp.shape)] = 0
  comp[3, 2, 0, 0] = 0                 # one band missing
  comp[:, 1, 1, 1] = 0                 # a band missing every month
  got, got_filled = composite.gap_fill(comp)
  want, want_filled = gap_fill_reference(comp)
  np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(got_filled, want_filled)
  assert not got[:, :, 1, 1].any()     # no valid month: stays 0
  has_valid = (~composite.missing_months(comp)).any(axis=0)
  assert (got[:, :, has_valid] > 0).all()   # every such pixel is complete


def test_inputs_are_not_modified():
  comp = np.array([5, 0, 9], np.uint16).reshape(3, 1, 1, 1)
  composite.gap_fill(comp)
  assert comp[:, 0, 0, 0].tolist() == [5, 0, 9]
  scenes = np.array([0, 7], np.uint16).reshape(2, 1, 1, 1)
  composite.median_composite(scenes, np.array([True, False]).reshape(2, 1, 1))
  assert scenes.ravel().tolist() == [0, 7]


def test_row_blocks_give_the_same_result(monkeypatch):
  rng = np.random.default_rng(7)
  comp = rng.integers(0, 3, (12, 4, 23, 9), dtype=np.uint16) * 1000
  scenes = rng.integers(0, 65536, (5, 4, 23, 9), dtype=np.uint16)
  valid = rng.random((5, 23, 9)) < 0.6
  whole = composite.gap_fill(comp), composite.median_composite(scenes, valid)
  monkeypatch.setattr(gapfill, "_GAP_BLOCK_PIXELS", 8)
  monkeypatch.setattr(composite, "_BLOCK_BYTES", 1)                        # 1 row
  blocked = composite.gap_fill(comp), composite.median_composite(scenes, valid)
  for a, b in zip(whole, blocked):
    for x, y in zip(a, b):
      np.testing.assert_array_equal(x, y)
  np.testing.assert_array_equal(blocked[0][0], gap_fill_reference(comp)[0])


def test_gap_fill_rounding_every_span_and_position():
  # Every run between valid months t0 < t1 of 12, values over the whole uint16
  # range: about 1 in span of them is a half-way case, which must round up.
  rng = np.random.default_rng(3)
  pairs = [(t0, t1) for t0 in range(12) for t1 in range(t0 + 2, 12)]
  n = 400
  comp = np.zeros((12, 1, len(pairs), n), np.uint16)
  x0 = rng.integers(1, 65536, (len(pairs), n))
  x1 = rng.integers(1, 65536, (len(pairs), n))
  x0[:, :4], x1[:, :4] = [1, 65535, 65535, 1], [65535, 1, 65535, 1]
  for i, (t0, t1) in enumerate(pairs):
    comp[t0, 0, i], comp[t1, 0, i] = x0[i], x1[i]
  filled, was_filled = composite.gap_fill(comp)
  for i, (t0, t1) in enumerate(pairs):
    span = t1 - t0
    for t in range(12):
      if t < t0:
        want = x0[i]
      elif t > t1:
        want = x1[i]
      else:
        want = composite.round_half_up_div(x0[i] * (t1 - t) + x1[i] * (t - t0), span)
      np.testing.assert_array_equal(filled[t, 0, i], want, err_msg=f"{t0} {t} {t1}")
      assert was_filled[t, i].all() == (t not in (t0, t1))


def test_gap_fill_empty_zone():
  filled, was_filled = composite.gap_fill(np.zeros((12, 4, 0, 3), np.uint16))
  assert filled.shape == (12, 4, 0, 3) and was_filled.shape == (12, 0, 3)


@pytest.mark.parametrize("p_missing", [0.05, 0.1])
def test_gap_fill_scattered_gaps_small_blocks(monkeypatch, p_missing):
  # Scattered gaps in blocks of 64 pixels (a block boundary inside a row).
  monkeypatch.setattr(gapfill, "_GAP_BLOCK_PIXELS", 64)
  rng = np.random.default_rng(11)
  comp = rng.integers(1, 65536, (12, 4, 31, 17), dtype=np.uint16)
  missing = rng.random((12, 31, 17)) < p_missing
  comp[np.broadcast_to(missing[:, None], comp.shape)] = 0
  got, got_filled = composite.gap_fill(comp)
  want, want_filled = gap_fill_reference(comp)
  np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(got_filled, want_filled)


@pytest.mark.parametrize("months", [12, 15])
def test_gap_fill_random_series_equal_loop_reference(monkeypatch, months):
  """Random gap patterns of 12 and 15 months (any T, one implementation), in blocks of 32
  pixels; runs of every length, leading, trailing and pixels with no valid month."""
  monkeypatch.setattr(gapfill, "_GAP_BLOCK_PIXELS", 32)
  rng = np.random.default_rng(months)
  comp = rng.integers(1, 65536, (months, 3, 19, 13), dtype=np.uint16)
  p_missing = rng.choice([0.1, 0.5, 0.9], (1, 1, 19, 13))      # per pixel
  comp[np.broadcast_to(rng.random((months, 1, 19, 13)) < p_missing, comp.shape)] = 0
  comp[:, :, 18, 12] = 0                                    # no valid month
  comp[:, 1, 18, 11] = 0                                    # one band missing every month
  comp[3, 2, 0, 0] = 0                                      # one band of one month
  got, got_filled = composite.gap_fill(comp)
  want, want_filled = gap_fill_reference(comp)
  np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(got_filled, want_filled)
  assert got_filled.sum() > 0.3 * got_filled.size and not got[:, :, 18, 11:].any()


@pytest.mark.parametrize("series, until, want", [
    ([10, 0, 0, 40, 50], 3, [10, 10, 10, 0, 0]),   # uncut: 20, 30 from month 3's 40
    ([0, 0, 7, 9], 2, [0, 0, 0, 0]),               # uncut: 7, 7 from month 2
    ([5, 0, 9, 0], 3, [5, 7, 9, 0]),               # a gap inside the kept months
    ([5, 0, 9, 0], 0, [0, 0, 0, 0]),
    ([10, 0, 0, 40, 50], 5, [10, 20, 30, 40, 50]),  # the whole season: no cut
])
def test_gap_fill_with_a_cut_off_never_reads_a_later_month(series, until, want):
  filled, was_filled = gapfill.gap_fill(_series(series), until)
  np.testing.assert_array_equal(filled[:, 0, 0, 0], want)
  assert was_filled[until:].sum() == 0
  assert composite.gap_fill is gapfill.gap_fill    # one rule, re-exported by prep


def test_gap_fill_cut_off_equals_the_truncated_season():
  rng = np.random.default_rng(3)
  comp = rng.integers(0, 3, (12, 4, 9, 7), dtype=np.uint16) * 1000
  for until in (1, 6, 11):
    got, got_filled = gapfill.gap_fill(comp, until)
    want, want_filled = gapfill.gap_fill(comp[:until])
    np.testing.assert_array_equal(got[:until], want)
    np.testing.assert_array_equal(got_filled[:until], want_filled)
    assert not got[until:].any()
  with pytest.raises(ValueError, match="until=13"):
    gapfill.gap_fill(comp, 13)
