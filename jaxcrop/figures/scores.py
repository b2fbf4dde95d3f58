"""Score figures of an evaluation: the row-normalized confusion matrix and the
per-class F1 bars (model vs baseline) over the class supports, read from the
metrics.json of `jaxcrop.evaluate` or from a confusion matrix.

At any tier: `tier_metrics(metrics, t)` is the `tiers["tier<t>"]` section of
metrics.json (tier-2 groups, tier-1 families) in the layout of the top level,
so the same figure functions draw it, with the tier's names and colours
(`hierarchy.tier_legend`) and the tier in the title.
"""
from __future__ import annotations

import pathlib
from typing import Sequence

import numpy as np

from jaxcrop.hierarchy import TIERS, tier_legend
from cropcontracts import nomenclature as nomenclature_lib
from cropcontracts.errors import UserError
from jaxcrop.figures.style import pyplot, save


def cell_fontsize(k: int) -> float:
  """Points for the numbers in a K x K confusion matrix of 11 x 10 in: as large as
  the cells allow ("100" fits a cell), at most 12; under 6 (K > 30) no numbers."""
  return float(min(12.0, 180.0 / max(k, 1)))


def support_labels(names: Sequence[str], support: np.ndarray) -> list[str]:
  """Row labels 'name  1,234' (support of each true class)."""
  return [f"{n}  {int(s):,}" for n, s in zip(names, support)]


def plot_confusion(cm: np.ndarray, class_names: Sequence[str], out, *,
                   only_present: bool = True, title: str = "",
                   unit: str | None = None) -> pathlib.Path:
  """Row-normalized confusion matrix (rows: truth, % of the true class in the cells),
  class names on both axes, each row label with its support (in `unit`: "pixels",
  "parcels"; None: not named). 11 x 10 in.

  only_present: drop classes absent from both truth and prediction.
  """
  from matplotlib.ticker import PercentFormatter
  plt = pyplot()
  cm = np.asarray(cm, np.float64)
  keep = np.arange(len(cm))
  if only_present:
    keep = np.flatnonzero((cm.sum(0) + cm.sum(1)) > 0)
  cm = cm[np.ix_(keep, keep)]
  rows = cm.sum(1, keepdims=True)
  norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
  names = [class_names[k] for k in keep]
  fig, ax = plt.subplots(figsize=(11, 10), layout="constrained")
  im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
  tick = min(10.0, max(6.0, 200.0 / max(len(names), 1)))
  ax.set_xticks(range(len(names)), names, rotation=90, fontsize=tick)
  ax.set_yticks(range(len(names)), support_labels(names, rows[:, 0]), fontsize=tick)
  ax.set_xlabel("predicted class")
  ax.set_ylabel(f"true class  (support{': ' + unit if unit else ''})")
  size = cell_fontsize(len(names))
  if size >= 6:
    for (i, j), v in np.ndenumerate(norm):
      if v >= 0.005:
        ax.text(j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=size,
                color="white" if v > 0.5 else "black")
  fig.colorbar(im, ax=ax, shrink=0.8, format=PercentFormatter(1.0, decimals=0),
               label="share of the true class")
  ax.set_title(title or "confusion matrix (rows: % of the true class)")
  return save(fig, out)


def level_summary(metrics: dict, level: str = "pixel", which: str = "model") -> dict:
  """`metrics[level][which]` of an evaluation, or a `summarize()` dict itself."""
  m = metrics
  for key in (level, which):
    if isinstance(m, dict) and key in m and "per_class" not in m:
      m = m[key]
  return m


def per_class_rows(metrics: dict, level: str = "pixel", which: str = "model") -> list[dict]:
  """Per-class rows of an evaluation: `metrics[level][which]["per_class"]`, or a
  `summarize()` dict directly. Each row gets `name` (from `name` or `class`)."""
  m = level_summary(metrics, level, which)
  if "per_class" not in m:
    raise UserError("metrics file has no per_class table (expected "
                    "{'pixel': {'model': {'per_class': [...]}}}); rerun jaxcrop.evaluate")
  return [dict(r, name=r.get("name", r.get("class"))) for r in m["per_class"]]


def baseline_f1(metrics: dict, level: str = "pixel") -> dict[str, float] | None:
  """{class name: F1} of the baseline at `level`; None when the evaluation has none
  (`jaxcrop.evaluate --no-baseline`, or a bare `summarize()` dict)."""
  base = metrics.get(level, {}).get("baseline")
  if not isinstance(base, dict) or "per_class" not in base:
    return None
  return {r["name"]: r["f1"] for r in per_class_rows(base)}


def metrics_nomenclature(metrics: dict):
  """The nomenclature named in a metrics file (`nomenclature_version` or
  `nomenclature`), else the default one."""
  version = metrics.get("nomenclature_version") or metrics.get("nomenclature")
  return nomenclature_lib.load(version) if isinstance(version, str) else nomenclature_lib.load()


TIER_WORDS = {1: "tier 1 (families)", 2: "tier 2 (groups)", 3: "tier 3 (classes)"}
# Keys of the top level that a tier section shares (it holds only the scores).
_SHARED_KEYS = ("split", "checkpoint", "step", "dataset", "nomenclature_version",
                "nomenclature")


def tier_metrics(metrics: dict, tier: int) -> dict:
  """The metrics of tier `tier` (1, 2, 3) in the layout of the top level of
  metrics.json, with `tier` set: `metrics["tiers"]["tier<t>"]` plus the split
  and nomenclature of the top level. Tier 3 of a metrics file without a
  `tiers` section is its top level (the classes)."""
  if tier not in TIERS:
    raise UserError(f"--tier {tier}: expected 1, 2, 3 or all")
  section = metrics.get("tiers", {}).get(f"tier{tier}")
  if section is None:
    if tier != 3:
      raise UserError(f"metrics file has no tiers['tier{tier}'] section (written before "
                      f"per-tier scores); rerun jaxcrop.evaluate")
    section = metrics
  out = dict(section, tier=tier)
  out.update({k: metrics[k] for k in _SHARED_KEYS if k in metrics and k not in section})
  return out


def metrics_title(metrics: dict, level: str, what: str) -> str:
  """'<level> level, <split> split[, tier t (…)]: <what>' (no split when the
  metrics lack one; the tier when they are a `tier_metrics` section)."""
  split = metrics.get("split")
  tier = metrics.get("tier")
  return (f"{level} level{f', {split} split' if split else ''}"
          f"{f', {TIER_WORDS[tier]}' if tier else ''}: {what}")


def confusion_from_metrics(metrics: dict, level: str = "pixel"):
  """(int [K, K], class names) of the model at `level` (pixel | parcel) from the
  metrics.json of jaxcrop.evaluate: `confusion_matrix["<level>_model"]`."""
  key = f"{level}_model"
  if key not in metrics.get("confusion_matrix", {}):
    raise UserError(f"metrics file has no confusion_matrix[{key!r}]; rerun "
                    f"jaxcrop.evaluate, or use --zone and --pred")
  names = [r["name"] for r in per_class_rows(metrics)]
  return np.asarray(metrics["confusion_matrix"][key]), names


def plot_metrics_confusion(metrics: dict, level: str, out) -> pathlib.Path:
  """The model's confusion matrix of an evaluation, titled with level and split."""
  cm, names = confusion_from_metrics(metrics, level)
  unit = f"{level}s"                 # pixels | parcels
  return plot_confusion(cm, names, out, unit=unit, title=metrics_title(
      metrics, level, "model confusion (rows: % of the true class)"))


def plot_per_class_f1(metrics: dict, out, *, nom=None, level: str = "pixel",
                      title: str = "") -> pathlib.Path:
  """Per-class F1 of the model (bars in class colours, value above each) and of the
  baseline (black ticks), above the true pixel counts (log scale); classes sorted by
  support: shows how scores follow the class imbalance. 12 x 8 in. With a background
  class (its bar in its neutral colour), a dashed line marks the model's crop
  macro-F1 (the background excluded), named in the legend.

  nom: colours; default the nomenclature the metrics name (see metrics_nomenclature);
  a `tier_metrics` section takes its tier's colours (`hierarchy.tier_legend`).
  """
  import matplotlib.lines as mlines
  import matplotlib.patches as mpatches
  nom = nom or metrics_nomenclature(metrics)
  plt = pyplot()
  rows = [r for r in per_class_rows(metrics, level) if r.get("support", 0) > 0]
  rows.sort(key=lambda r: -r["support"])
  names = [r["name"] for r in rows]
  legend = dict(zip(*tier_legend(nom, metrics.get("tier", 3))))
  colors = [legend.get(n, "#777777") for n in names]
  f1 = np.array([r["f1"] for r in rows], np.float64)
  base = baseline_f1(metrics, level)
  fig, (a1, a2) = plt.subplots(2, 1, figsize=(12, 8), sharex=True, layout="constrained",
                               gridspec_kw=dict(height_ratios=(2, 1)))
  x = np.arange(len(rows))
  a1.bar(x, f1, color=colors)
  top = f1.copy()
  handles = [mpatches.Patch(facecolor="#bbbbbb", label="model (class colour)")]
  if base is not None:
    b = np.array([base.get(n, np.nan) for n in names], np.float64)
    a1.hlines(b, x - 0.42, x + 0.42, colors="black", linewidth=2.5, zorder=3)
    top = np.fmax(top, b)
    handles.append(mlines.Line2D([], [], color="black", linewidth=2.5, label="baseline"))
  background = level_summary(metrics, level).get("background")
  if background:       # the crops' macro-F1, the one comparable with runs before v3
    macro = level_summary(metrics, level)["macro_f1"]
    line = a1.axhline(macro, color="#555555", linestyle="--", linewidth=1, zorder=2,
                      label=f"model crop macro-F1 {macro:.2f} ({background['name']} excluded)")
    a1.add_artist(a1.legend(handles=[line], loc="best", fontsize=9, framealpha=0.9))
  for xi, t, v in zip(x, top, f1):
    a1.text(xi, t + 0.015, f"{v:.2f}", ha="center", va="bottom",
            fontsize=8 if len(rows) <= 30 else 6, rotation=0 if len(rows) <= 30 else 90)
  a1.set_ylim(0, 1.1)
  a1.set_yticks(np.linspace(0, 1, 6))
  a1.set_ylabel("F1")
  a1.grid(axis="y", alpha=0.3)
  a1.legend(handles=handles, loc="lower right", bbox_to_anchor=(1, 1), ncol=2, fontsize=9,
            frameon=False, borderaxespad=0.2)
  unit = f"{level}s"                 # pixels | parcels
  support = np.array([r["support"] for r in rows], np.float64)
  a2.bar(x, support, color=colors)
  a2.set_yscale("log")
  if len(support):
    a2.set_ylim(0.5 * support.min(), 2 * support.max())
    a2.set_xlim(-0.6, len(rows) - 0.4)
  a2.set_ylabel(f"true {unit} (log)")
  a2.set_xticks(x, names, rotation=90, fontsize=9)
  a2.set_xlabel(f"class (sorted by true {unit})")
  what = "per-class F1, model" + (" vs baseline" if base is not None else "")
  a1.set_title(title or metrics_title(metrics, level, what))
  return save(fig, out)
