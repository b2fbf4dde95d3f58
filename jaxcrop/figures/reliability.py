"""Reliability diagrams: per confidence bin, the accuracy against the mean confidence,
before and after the temperature (evaluate's `calibration` section,
`jaxcrop.calibrate.evaluation`). A calibrated model lies on the diagonal.
"""
from __future__ import annotations

import pathlib
import tempfile

import numpy as np

from jaxcrop.figures.style import pyplot, save


def plot_reliability(by: dict, out, *, title: str = "") -> pathlib.Path:
  """One tier's diagram from its section {ece_before, ece_after, reliability_before,
  reliability_after} (each curve: edges [B+1], count [B], confidence [B],
  accuracy [B], None in an empty bin): bars of accuracy per bin, the mean
  confidences as points, the diagonal; 6 x 6 in."""
  plt = pyplot()
  fig, ax = plt.subplots(figsize=(6, 6), layout="constrained")
  ax.plot([0, 1], [0, 1], color="0.5", lw=1, ls="--", label="calibrated")
  for when, color in (("before", "tab:red"), ("after", "tab:blue")):
    curve = by[f"reliability_{when}"]
    acc = np.array([np.nan if a is None else a for a in curve["accuracy"]])
    conf = np.array([np.nan if c is None else c for c in curve["confidence"]])
    edges = np.asarray(curve["edges"])
    ok = ~np.isnan(acc)
    ax.bar(edges[:-1][ok], acc[ok], width=np.diff(edges)[ok], align="edge", alpha=0.35,
           color=color, edgecolor=color)
    ax.plot(conf[ok], acc[ok], "o-", color=color, ms=4,
            label=f"{when} temperature: ECE {by[f'ece_{when}']:.3f}")
  ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (bin mean)", ylabel="accuracy",
         title=title)
  ax.legend(loc="upper left")
  return save(fig, out)


def write_figures(out, section: dict, split: str) -> list:
  """out/reliability_tier<t>.png for each tier of evaluate's `calibration` section;
  `out` may be remote (drawn locally, copied whole)."""
  from cropcontracts import atomic
  written = []
  with tempfile.TemporaryDirectory() as tmp:
    for tier, by in section["tiers"].items():
      name = f"reliability_{tier}.png"
      plot_reliability(by, pathlib.Path(tmp) / name,
                       title=f"{tier}, {split} split (temperature "
                             f"{section['temperature']:.2f})")
      atomic.write_bytes(out / name, (pathlib.Path(tmp) / name).read_bytes())
      written.append(out / name)
  return written
