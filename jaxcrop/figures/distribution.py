"""The class distribution figure: the share of each class in each region's labelled
pixels, from the zone folders' meta.json."""
from __future__ import annotations

import pathlib
from typing import Sequence

import numpy as np

from cropcontracts import nomenclature as nomenclature_lib
from cropcontracts.errors import UserError
from jaxcrop.figures.style import pyplot, save, text_color


def zones_nomenclature(zones):
  """The nomenclature of the labelled zones (one version for all of them), else the
  default one. Raises UserError on zones labelled with different versions."""
  versions = sorted({z.nomenclature for z in zones if z.has_labels and z.nomenclature})
  if len(versions) > 1:
    raise UserError(f"zone folders labelled with different nomenclatures {versions}; "
                    f"plot the zones of one version at a time")
  return nomenclature_lib.load(*versions)


def region_class_counts(zones) -> tuple[list[str], np.ndarray, list[str]]:
  """(regions, int [R, K] labelled pixels per region and class, class names) from
  the zone folders' meta.json `labels.class_pixel_counts` ({class name: pixels})."""
  nom = zones_nomenclature(zones)
  by_region: dict[str, np.ndarray] = {}
  for z in zones:
    if not z.has_labels:
      continue
    counts = z.meta["labels"].get("class_pixel_counts", {})
    v = np.array([counts.get(n, 0) for n in nom.tier3], np.int64)
    by_region[z.zone.region] = by_region.get(z.zone.region, 0) + v
  if not by_region:
    raise UserError("no labelled zone folder; run `python -m prep labels` first")
  regions = sorted(by_region)
  return regions, np.stack([by_region[r] for r in regions]), list(nom.tier3)


def plot_class_distribution(regions: Sequence[str], counts: np.ndarray, out, *,
                            nom=None, title: str = "", min_label: float = 0.05) -> pathlib.Path:
  """Stacked bars: share of each class in each region's labelled pixels, shares of at
  least `min_label` written in their segment. 12 x 7 in.

  counts: int [R, K], K classes of `nom` (pass the zones' nomenclature).
  """
  nom = nom or nomenclature_lib.load()
  plt = pyplot()
  counts = np.asarray(counts, np.float64)
  share = counts / np.maximum(counts.sum(1, keepdims=True), 1)
  fig, ax = plt.subplots(figsize=(12, 7), layout="constrained")
  left = np.zeros(len(regions))
  for k in np.flatnonzero(counts.sum(0) > 0):
    ax.barh(regions, share[:, k], left=left, color=nom.colors[k], label=nom.tier3[k])
    for i in np.flatnonzero(share[:, k] >= min_label):
      ax.text(left[i] + share[i, k] / 2, i, f"{100 * share[i, k]:.0f} %", ha="center",
              va="center", fontsize=8, color=text_color(nom.colors[k]))
    left += share[:, k]
  ax.set_xlim(0, 1)
  ax.set_xlabel("share of labelled pixels")
  ax.invert_yaxis()
  for i, n in enumerate(counts.sum(1)):
    ax.text(1.01, i, f"{int(n):,} px", va="center", fontsize=8)
  fig.legend(loc="outside lower center", ncol=6, fontsize=9, frameon=False)
  ax.set_title(title or "class distribution per region")
  return save(fig, out)
