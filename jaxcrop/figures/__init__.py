"""Figures of maps, scores and data: PNG (matplotlib, Agg) and animated GIF (Pillow).

  style.py         the look every figure shares: colours of the pixels without a
                   class, the Agg backend, the resolution; the atomic save.
  maps.py          a zone's map beside its labels; the error map.
  scores.py        confusion matrix and per-class F1 of an evaluation.
  distribution.py  labelled pixels per class and region.
  gif.py           the monthly composites as an animated GIF (true colour | NDVI).
  readers.py       reading a prediction folder's classes.tif and a metrics.json.

`all_figures` (below) draws every figure the inputs allow; `python -m jaxcrop.plots`
is the command line.
"""
from __future__ import annotations

import pathlib
import sys

from jaxcrop.figures.distribution import (plot_class_distribution, region_class_counts,
                                          zones_nomenclature)
from jaxcrop.figures.gif import monthly_gif
from jaxcrop.figures.readers import map_nomenclature, read_classes, read_metrics
from jaxcrop.figures.maps import plot_errors, plot_prediction
from jaxcrop.figures.scores import (plot_metrics_confusion, plot_per_class_f1,
                                    tier_metrics)


def score_figures(metrics: dict, out, tiers=(3,)) -> list[pathlib.Path]:
  """Per-class F1 (pixel level) and confusion (pixel, parcel: those the metrics
  hold) figures of each tier in `tiers`: f1_per_class[_tier<t>].png,
  confusion_<level>[_tier<t>].png in `out`; tier 3 keeps the bare names, tiers
  1 and 2 get the suffix."""
  out = pathlib.Path(out)
  written = []
  for tier in tiers:
    m = tier_metrics(metrics, tier)
    tag = "" if tier == 3 else f"_tier{tier}"
    written.append(plot_per_class_f1(m, out / f"f1_per_class{tag}.png"))
    for level in ("pixel", "parcel"):
      if f"{level}_model" in m.get("confusion_matrix", {}):
        written.append(plot_metrics_confusion(m, level, out / f"confusion_{level}{tag}.png"))
  return written


def zone_figures(zone, pred_dir, out) -> list[pathlib.Path]:
  """A zone's monthly GIF and prediction map; with labels, the map beside them and
  the error map too."""
  out = pathlib.Path(out)
  classes, version = read_classes(pred_dir, zone)
  nom = map_nomenclature(version, zone)
  labels = zone.read_labels() if zone.has_labels else None
  written = [monthly_gif(zone.read_image(), zone.bands, zone.months,
                         out / f"{zone.zone_id}_composites.gif"),
             plot_prediction(classes, labels, out / f"{zone.zone_id}_prediction.png",
                             nom=nom, title=zone.zone_id)]
  if labels is not None:
    written.append(plot_errors(classes, labels, out / f"{zone.zone_id}_errors.png",
                               title=zone.zone_id))
  return written


def all_figures(zones, out, *, maps=None, metrics=None) -> list[pathlib.Path]:
  """Every figure that the inputs allow: what `./launch.sh demo` shows a person.

  Args:
    zones: ZoneFolders; the class distribution covers the labelled ones (skipped,
      with a note on stderr, when none is), the per-zone figures (monthly GIF and
      prediction map; errors with labels) those with a map in `maps`.
    out: output folder.
    maps: the OUT folder of `jaxcrop.predict` (maps/<zone_id>/classes.tif).
    metrics: W/eval/metrics.json of `jaxcrop.evaluate`, for F1 bars and confusion
      (of every tier its `tiers` section holds: `score_figures`).
  """
  out = pathlib.Path(out)
  written = []
  if metrics:
    m = read_metrics(metrics)
    tiers = [t for t in (1, 2) if f"tier{t}" in m.get("tiers", {})] + [3]
    written += score_figures(m, out, tiers)
  labelled = [z for z in zones if z.has_labels]
  if labelled:
    regions, counts, _ = region_class_counts(labelled)
    written.append(plot_class_distribution(regions, counts, out / "class_distribution.png",
                                           nom=zones_nomenclature(labelled)))
  else:
    print(f"note: class_distribution.png skipped: no labelled zone among the {len(zones)} "
          f"zone folder(s)", file=sys.stderr)
  for zone in zones:
    pred = pathlib.Path(maps) / zone.zone_id if maps else None
    if pred is not None and (pred / "classes.tif").is_file():
      written += zone_figures(zone, pred, out)
  return written
