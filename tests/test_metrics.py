"""Confusion-matrix metrics against hand-computed numbers."""
import numpy as np
import pytest

from jaxcrop import metrics


def test_confusion_matrix_masks_ignore_and_padding():
  label = np.array([[0, 0, 1, 255], [2, 2, 2, 1]])
  pred = np.array([[0, 1, 1, 0], [2, 0, 0, 1]])
  mask = np.array([1.0, 0.0])           # second example is padding
  cm = np.asarray(metrics.confusion_matrix(label, pred, mask, num_classes=4))
  assert cm.tolist() == [[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
  full = np.asarray(metrics.confusion_matrix(label, pred, num_classes=4))
  np.testing.assert_array_equal(full, metrics.confusion_matrix_np(label, pred, 4))
  assert full.sum() == 7


def test_summarize_by_hand():
  # truth 0: 3 px (2 right, 1 → class 1); truth 1: 1 px (right); truth 2: 2 px (both → 0);
  # class 3 absent from truth and prediction → excluded from macro averages.
  cm = np.array([[2, 1, 0, 0], [0, 1, 0, 0], [2, 0, 0, 0], [0, 0, 0, 0]])
  s = metrics.summarize(cm, ["a", "b", "c", "d"])
  assert s["overall_accuracy"] == pytest.approx(3 / 6)
  p = [2 / 4, 1 / 2, 0.0]
  r = [2 / 3, 1 / 1, 0.0]
  f1 = [2 * p[0] * r[0] / (p[0] + r[0]), 2 * 0.5 * 1 / 1.5, 0.0]
  iou = [2 / (3 + 4 - 2), 1 / (1 + 2 - 1), 0.0]
  assert s["macro_precision"] == pytest.approx(np.mean(p))
  assert s["macro_recall"] == pytest.approx(np.mean(r))
  assert s["macro_f1"] == pytest.approx(np.mean(f1))
  assert s["miou"] == pytest.approx(np.mean(iou))
  assert [c["present"] for c in s["per_class"]] == [True, True, True, False]
  assert s["per_class"][2]["support"] == 2 and s["per_class"][0]["predicted"] == 4
  assert "| d |" not in metrics.per_class_table(s)


def test_macro_averages_name_their_rule_and_classes():
  """Class c only predicted (a false positive) enters; d, in neither, does not;
  the list is what a comparison with another study's macro-F1 needs."""
  cm = np.array([[3, 0, 1, 0], [0, 2, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
  s = metrics.summarize(cm, ["a", "b", "c", "d"])
  assert s["macro_rule"] == "classes present in the truth or in the prediction"
  assert s["macro_classes"] == ["a", "b", "c"]
  assert s["macro_f1"] == pytest.approx((2 * 1 * .75 / 1.75 + 1 + 0) / 3)
  assert metrics.summarize(np.zeros((2, 2)), ["a", "b"])["macro_classes"] == []


def test_summarize_perfect_and_empty():
  assert metrics.summarize(np.eye(3) * 5)["macro_f1"] == 1.0
  assert metrics.summarize(np.zeros((3, 3)))["macro_f1"] == 0.0


# --- a background class (nomenclature v3: non_agricultural), by hand ---------
# Rows truth, columns prediction: wheat, maize, vines, non_agricultural.
CM_BG = np.array([[1, 0, 0, 2], [1, 1, 0, 0], [0, 0, 1, 2], [0, 0, 1, 2]])
NAMES_BG = ["wheat", "maize", "vines", "non_agricultural"]


def test_background_is_found_by_name_at_every_tier():
  from cropcontracts import nomenclature
  v3, v2 = nomenclature.load("v3"), nomenclature.load("v2")
  assert metrics.background_id(v3.tier3) == v3.background_id == 23
  assert metrics.background_id(v3.tier2_names) == len(v3.tier2_names) - 1
  assert metrics.background_id(v3.tier1_names) == len(v3.tier1_names) - 1
  assert metrics.background_id(v2.tier3) is None and metrics.background_id(None) is None


def test_summarize_leaves_the_background_out_of_the_crop_averages():
  s = metrics.summarize(CM_BG, NAMES_BG)
  # F1: wheat P 1/2 R 1/3 → 0.4; maize P 1 R 1/2 → 2/3; vines 0.4; background P 1/3
  # R 2/3 → 4/9. IoU: 1/4, 1/2, 1/4, 2/7.
  assert s["macro_f1"] == pytest.approx((0.4 + 2 / 3 + 0.4) / 3)
  assert s["macro_precision"] == pytest.approx((0.5 + 1 + 0.5) / 3)
  assert s["macro_recall"] == pytest.approx((1 / 3 + 1 / 2 + 1 / 3) / 3)
  assert s["miou"] == pytest.approx(1 / 3)
  assert s["miou_all"] == pytest.approx((1 / 4 + 1 / 2 + 1 / 4 + 2 / 7) / 4)
  assert s["overall_accuracy"] == pytest.approx(5 / 11)
  assert s["macro_classes"] == ["wheat", "maize", "vines"]
  assert s["macro_rule"] == ("crop classes (non_agricultural excluded) present in the truth "
                             "or in the prediction")
  bg = s["background"]
  assert (bg["name"], bg["support"], bg["predicted"]) == ("non_agricultural", 3, 6)
  assert bg["f1"] == pytest.approx(4 / 9) and bg["iou"] == pytest.approx(2 / 7)
  assert s["per_class"][3] == bg                 # the per-class table keeps its row


def test_without_background_every_class_is_averaged_as_before():
  s = metrics.summarize(CM_BG, ["wheat", "maize", "vines", "rapeseed"])
  assert s["macro_f1"] == pytest.approx((0.4 + 2 / 3 + 0.4 + 4 / 9) / 4)
  assert s["miou_all"] == s["miou"] == pytest.approx((1 / 4 + 1 / 2 + 1 / 4 + 2 / 7) / 4)
  assert s["background"] is None and s["macro_rule"] == metrics.MACRO_RULE
  assert metrics.agricultural_area(CM_BG, None) is None
  # an explicit id (a tier confusion has no names) does what the name does
  assert metrics.summarize(CM_BG, background=3)["macro_f1"] == pytest.approx(
      metrics.summarize(CM_BG, NAMES_BG)["macro_f1"])


def test_agricultural_area_is_any_crop_against_the_background():
  a = metrics.agricultural_area(CM_BG, 3)
  # crop truth predicted a crop (any): 1 + 1 + 1 + 1 (maize → wheat counts) = 4;
  # crop → background 2 + 0 + 2 = 4; background → crop 1; background → background 2
  assert a["pixels"] == dict(crop_as_crop=4, crop_as_background=4, background_as_crop=1,
                             background_as_background=2)
  assert (a["precision"], a["recall"]) == (pytest.approx(4 / 5), pytest.approx(1 / 2))
  assert a["iou"] == pytest.approx(4 / 9) and a["f1"] == pytest.approx(8 / 13)
  none = metrics.agricultural_area(np.zeros((4, 4), int), 3)
  assert (none["iou"], none["precision"], none["recall"]) == (0.0, 0.0, 0.0)


def test_parcel_class_is_a_crop_while_any_pixel_votes_one():
  votes = np.array([[1, 0, 0, 2],      # background majority → wheat, its only crop vote
                    [1, 1, 0, 0],      # tie → the lowest id
                    [0, 0, 0, 3],      # no crop vote → background
                    [0, 2, 1, 0]])
  assert metrics.parcel_class(votes, 3).tolist() == [0, 0, 3, 1]
  assert metrics.parcel_class(votes, None).tolist() == [3, 0, 3, 1]   # plain majority
  assert metrics.parcel_class(np.zeros((0, 4), int), 3).tolist() == []
