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
