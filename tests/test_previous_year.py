"""The previous-year baseline on hand-made parcels (jaxcrop.previous_year)."""
import numpy as np
import pytest

from cropcontracts import zonefolder
from cropcontracts.errors import UserError
from jaxcrop import metrics, previous_year
from prep.demo import zonefolders
from tests.fixtures import make_meta

NAMES = ["wheat", "maize", "non_agricultural"]    # the background last, as in v3
BG = 2


def test_majority_overlap_picks_the_most_covering_parcel_lowest_on_ties():
  cur = np.array([[1, 1, 2], [1, 2, 2]])
  prev = np.array([[5, 5, 5], [3, 3, 0]])
  # parcel 1: prev 5 twice, 3 once -> 5; parcel 2: 5 once, 3 once, none once -> 3 (lower id)
  np.testing.assert_array_equal(previous_year.majority_overlap(cur, prev, 3), [5, 3, 0])


def test_hand_made_parcels_match_by_id_then_overlap_and_score_by_hand():
  cur = np.array([[1, 1, 2, 2],
                  [1, 1, 3, 0]])
  prev = np.array([[1, 1, 2, 2],
                   [1, 1, 0, 2]])
  prev_labels = np.array([[0, 0, 1, 1],
                          [0, 0, 255, 2]], np.uint8)
  # A kept its id (wheat last year); B is new but lies on X (maize); C is new on nothing.
  pred, matched = previous_year.predict_zone(
      cur, ["A", "B", "C"], prev, ["A", "X"], [0, 1], prev_labels, BG)
  np.testing.assert_array_equal(pred, [[0, 0, 1, 1], [0, 0, BG, BG]])
  assert matched == dict(by_id=1, by_overlap=1, unmatched=1)
  # This year A is maize, B wheat (rotated), C maize, the corner background.
  truth = np.array([[1, 1, 0, 0], [1, 1, 1, BG]], np.uint8)
  cm = metrics.confusion_matrix_np(truth, pred, 3)
  np.testing.assert_array_equal(cm, [[0, 2, 0], [4, 0, 1], [0, 0, 1]])
  s = metrics.summarize(cm, NAMES)
  assert s["macro_f1"] == 0.0                          # every crop pixel wrong
  assert s["background"]["f1"] == pytest.approx(2 / 3)   # P 1/2, R 1
  # An `ignore` code last year predicts the background.
  pred, _ = previous_year.predict_zone(cur, ["A", "B", "C"], prev, ["A", "X"], [255, 1],
                                       prev_labels, BG)
  assert (pred[cur == 1] == BG).all()


def _years(root, seed_2023):
  for year, seed in ((2022, 0), (2023, seed_2023)):
    zonefolders.write_zone(root / str(year) / "testz_0", seed=seed,
                           months=zonefolder.month_labels(year)[:3])


def test_the_same_crops_two_years_score_one_and_rotations_score_less(tmp_path):
  meta = make_meta()
  _years(tmp_path / "same", 0)
  out = previous_year.evaluate(tmp_path / "same", 2023, ["testz_0"], meta)
  assert out["parcels"]["by_id"] == 24 and out["parcels"]["unmatched"] == 0
  pixel = out["tiers"]["tier3"]["pixel"]
  assert pixel["macro_f1"] == 1.0 and pixel["overall_accuracy"] == 1.0
  _years(tmp_path / "rotated", 7)
  out = previous_year.evaluate(tmp_path / "rotated", 2023, ["testz_0"], meta)
  assert out["tiers"]["tier3"]["pixel"]["macro_f1"] < 0.3
  assert set(out["tiers"]) == {"tier1", "tier2", "tier3"} and (out["year"], out["previous_year"]) == (2023, 2022)
  with pytest.raises(UserError, match=r"previous-year baseline: .*/2021/testz_0 is not a zone "
                                      r"folder; it needs zone testz_0 in 2021 and 2022"):
    previous_year.evaluate(tmp_path / "rotated", 2022, ["testz_0"], meta)
