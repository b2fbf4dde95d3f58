"""Segmentation metrics from a K×K confusion matrix (rows: truth, columns: prediction).

Batches are accumulated on device with `confusion_matrix` (jitted, masked);
scores are computed once from the summed matrix with numpy by `summarize`.

Definitions (per class k, tp = cm[k, k]):
  precision = tp / predicted pixels of k (0 when none predicted),
  recall    = tp / true pixels of k (0 when none true),
  f1 = 2·P·R / (P + R) (0 when P + R = 0),  iou = tp / (true + predicted − tp).
Macro averages are over the classes present in the truth OR the prediction; a
class absent from both has no errors to count and is excluded (reported with
`present: false`), so an evaluation on a region without, say, rice is not
dragged down by rice. `summarize` states the rule (`macro_rule`) and lists the
classes averaged (`macro_classes`), so a macro-F1 can be compared fairly with a
study that averages over another set (e.g. the classes of the test truth only).
overall_accuracy = trace / total.

The background (`cropcontracts.nomenclature.BACKGROUND`, `non_agricultural`, a
class of nomenclature v3 on, its own group and family at tiers 2 and 1) is found
by its name among the class names. With one:
  macro_precision / macro_recall / macro_f1 / miou: over the crop classes only
      (background excluded), so they stay comparable with runs of v2 and before;
  miou_all: PASTIS-style mIoU over every class present, background included;
  background: the background's per-class row (precision, recall, f1, iou, …);
  `agricultural_area(cm, background)`: any crop class vs background, binary:
      precision = crop pixels predicted crop / pixels predicted crop,
      recall = crop pixels predicted crop / crop pixels, iou = tp / (tp + fp + fn).
Without one (v1, v2), `background` is None, `miou_all` equals `miou` and
`agricultural_area` is None: every other score is as before.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from cropcontracts.nomenclature import BACKGROUND
from cropcontracts.zonefolder import NO_LABEL
from jaxcrop.tables import markdown_table

MACRO_RULE = "classes present in the truth or in the prediction"
# The rule where the classes hold a background: it is left out of the macro averages.
CROP_MACRO_RULE = f"crop classes ({BACKGROUND} excluded) present in the truth or in the prediction"


def background_id(class_names) -> int | None:
  """The index of the background class (`nomenclature.BACKGROUND`) in `class_names`
  (the names of any tier: the background is its own group and family), None when
  the classes have none (nomenclatures before v3) or no names are given."""
  names = list(class_names or ())
  return names.index(BACKGROUND) if BACKGROUND in names else None


@functools.partial(jax.jit, static_argnames="num_classes")
def confusion_matrix(label, pred, mask=None, *, num_classes: int):
  """Counts of (true, predicted) pairs over labelled pixels.

  Args:
    label: int [...] true classes, NO_LABEL (255) = unlabelled.
    pred: int [...] predicted classes, same shape.
    mask: optional bool/float [...] or [B] (broadcast over trailing axes); 0 excludes
      (e.g. padding examples of the last eval batch).
    num_classes: K.
  Returns:
    int32 [K, K].
  """
  valid = (label != NO_LABEL) & (label >= 0) & (label < num_classes)
  if mask is not None:
    mask = jnp.reshape(mask, mask.shape + (1,) * (label.ndim - mask.ndim))
    valid &= mask.astype(bool)
  index = jnp.where(valid, label * num_classes + pred, 0).reshape(-1)
  counts = jnp.zeros(num_classes * num_classes, jnp.int32).at[index].add(
      valid.reshape(-1).astype(jnp.int32))
  return counts.reshape(num_classes, num_classes)


def confusion_matrix_np(label, pred, num_classes: int) -> np.ndarray:
  """numpy twin of `confusion_matrix` (no mask): int64 [K, K]."""
  label, pred = np.asarray(label).ravel(), np.asarray(pred).ravel()
  valid = (label != NO_LABEL) & (label < num_classes)
  keys = label[valid].astype(np.int64) * num_classes + pred[valid]
  return np.bincount(keys, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def _div(a, b):
  return np.divide(a, b, out=np.zeros_like(a, dtype=np.float64), where=b > 0)


def summarize(cm, class_names=None, background: int | None = None) -> dict:
  """Overall accuracy, macro P/R/F1, mIoU and a per-class table from cm [K, K].

  `macro_classes` names the classes the macro averages and mIoU run over
  (`macro_rule`: present in the truth or the prediction, the background
  excluded), in class-id order. background: the background's id; by default
  found by name in `class_names` (`background_id`). See the module doc for
  `miou_all` and `background`.
  """
  cm = np.asarray(cm, np.float64)
  tp, true, predicted = np.diag(cm), cm.sum(1), cm.sum(0)
  precision, recall = _div(tp, predicted), _div(tp, true)
  f1 = _div(2 * precision * recall, precision + recall)
  iou = _div(tp, true + predicted - tp)
  present = (true + predicted) > 0
  if background is None:
    background = background_id(class_names)
  averaged = present.copy()
  if background is not None:
    averaged[background] = False
  macro = lambda v, on=averaged: float(v[on].mean()) if on.any() else 0.0
  names = class_names or [str(k) for k in range(len(cm))]
  per_class = [
      dict(class_id=k, name=names[k], support=int(true[k]), predicted=int(predicted[k]),
           present=bool(present[k]), precision=float(precision[k]),
           recall=float(recall[k]), f1=float(f1[k]), iou=float(iou[k]))
      for k in range(len(cm))]
  return dict(overall_accuracy=float(_div(tp.sum(), cm.sum())),
              macro_precision=macro(precision), macro_recall=macro(recall),
              macro_f1=macro(f1), miou=macro(iou), miou_all=macro(iou, present),
              num_pixels=int(cm.sum()),
              macro_rule=MACRO_RULE if background is None else CROP_MACRO_RULE,
              macro_classes=[names[k] for k in np.flatnonzero(averaged)],
              background=None if background is None else per_class[background],
              per_class=per_class)


def agricultural_area(cm, background: int | None) -> dict | None:
  """Any crop class vs the background, from cm [K, K] (rows truth): the binary
  scores of the agricultural area, None without a background.

  Returns {iou, precision, recall, f1, pixels: {crop_as_crop, crop_as_background,
  background_as_crop, background_as_background}} (0 where a denominator is 0).
  """
  if background is None:
    return None
  cm = np.asarray(cm, np.int64)
  crop = np.arange(len(cm)) != background
  tp = int(cm[np.ix_(crop, crop)].sum())
  fn, fp = int(cm[crop, background].sum()), int(cm[background, crop].sum())
  ratio = lambda a, b: a / b if b > 0 else 0.0
  precision, recall = ratio(tp, tp + fp), ratio(tp, tp + fn)
  return dict(iou=ratio(tp, tp + fp + fn), precision=precision, recall=recall,
              f1=ratio(2 * precision * recall, precision + recall),
              pixels=dict(crop_as_crop=tp, crop_as_background=fn, background_as_crop=fp,
                          background_as_background=int(cm[background, background])))


def parcel_class(votes, background: int | None = None) -> np.ndarray:
  """int [G]: the class of each of G parcels from its pixel votes int [G, K]: the
  majority (ties: the lowest id), the background left out while any crop class
  has a vote. A parcel is declared farmland, so its class is a crop; it is the
  background only when no pixel of it is predicted a crop class."""
  votes = np.asarray(votes)
  if background is None or not len(votes):
    return votes.argmax(1)
  crops = votes.copy()
  crops[:, background] = -1
  return np.where(votes[:, background] < votes.sum(1), crops.argmax(1), votes.argmax(1))


def per_class_table(summary: dict, only_present: bool = True) -> str:
  """Markdown table of the per-class scores of `summarize`."""
  return markdown_table(
      ["class", "support", "precision", "recall", "F1", "IoU"],
      ([r["name"], r["support"], *(f"{r[m]:.3f}" for m in ("precision", "recall", "f1", "iou"))]
       for r in summary["per_class"] if r["present"] or not only_present), align="lrrrrr")


def read_metrics(path) -> dict:
  """The metrics.json of `jaxcrop.evaluate`, checked before anyone draws from it.

  A user error (one line naming the file) when it is missing, not JSON, not an
  object, or inconsistent: every `confusion_matrix[...]` must be a K x K table of
  non-negative integers, K the number of classes its level's per-class tables
  list, and each class's `support` must be its row sum. A bare `summarize()`
  dict (no confusion matrix) passes.
  """
  import json
  import pathlib
  from cropcontracts.errors import UserError  # pylint: disable=g-import-not-at-top
  p = pathlib.Path(path)
  fix = "pass W/eval/metrics.json of `python -m jaxcrop.evaluate` (or rerun it)"
  if not p.is_file():
    raise UserError(f"{p}: not found; run `python -m jaxcrop.evaluate` first")
  try:
    m = json.loads(p.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise UserError(f"{p}: not a metrics JSON file ({e}); pass W/eval/metrics.json of "
                    f"`python -m jaxcrop.evaluate`") from None
  if not isinstance(m, dict):
    raise UserError(f"{p}: not a metrics file (a JSON {type(m).__name__}, not an object); "
                    f"{fix}")
  problem = _metrics_problem(m)
  if problem:
    raise UserError(f"{p}: {problem}; {fix}")
  return m


def _per_class(m: dict, level: str, which: str):
  """m[level][which]["per_class"], or None."""
  summary = m.get(level)
  summary = summary.get(which) if isinstance(summary, dict) else None
  rows = summary.get("per_class") if isinstance(summary, dict) else None
  return rows if isinstance(rows, list) else None


def _metrics_problem(m: dict) -> str:
  """What is inconsistent in metrics m (see read_metrics), or ''.

  A matrix whose own level lacks a per-class table is held against the class
  list of pixel.model (the names the figures give it), without support check."""
  cms = m.get("confusion_matrix", {})
  if not isinstance(cms, dict):
    return "confusion_matrix is not an object of matrices"
  for key, cm in cms.items():
    level, _, which = key.partition("_")
    own = _per_class(m, level, which)
    rows = own if own is not None else _per_class(m, "pixel", "model")
    try:
      a = np.asarray(cm)
      ok = (a.ndim == 2 and a.shape[0] == a.shape[1] and a.dtype.kind in "iu"
            and bool((a >= 0).all()))
    except (ValueError, TypeError):
      ok = False
    if not ok:
      return f"confusion_matrix[{key!r}] is not a square table of counts"
    if rows is None:
      continue
    if len(rows) != len(a):
      listed = f"{level}.{which}" if own is not None else "pixel.model"
      return (f"confusion_matrix[{key!r}] is {len(a)} x {len(a)} but {listed} lists "
              f"{len(rows)} classes")
    if own is None:
      continue
    support = [r.get("support") if isinstance(r, dict) else None for r in rows]
    bad = [k for k, s in enumerate(support) if s != int(a[k].sum())]
    if bad:
      k = bad[0]
      return (f"confusion_matrix[{key!r}] row {k} sums to {int(a[k].sum())} but class "
              f"{rows[k].get('name', k)!r} has support {support[k]}")
  return ""
