"""Figures of maps, scores and data: PNG (matplotlib, Agg) and animated GIF (Pillow).

  python -m jaxcrop.plots all        --zones ZONES [--maps OUT] [--metrics METRICS] --out FIGS
  python -m jaxcrop.plots prediction --zone Z --pred OUT/<zone_id> --out pred.png
  python -m jaxcrop.plots errors     --zone Z --pred OUT/<zone_id> --out errors.png
  python -m jaxcrop.plots confusion  --zone Z --pred OUT/<zone_id> --out cm.png
  python -m jaxcrop.plots confusion  --metrics W/eval/metrics.json [--level parcel] --out cm.png
  python -m jaxcrop.plots f1         --metrics W/eval/metrics.json [--level parcel] --out f1.png
  python -m jaxcrop.plots f1         --metrics W/eval/metrics.json --tier 2 --out f1_groups.png
  python -m jaxcrop.plots confusion  --metrics W/eval/metrics.json --tier all --out cm.png
  python -m jaxcrop.plots distribution --zones ZONES --out classes.png
  python -m jaxcrop.plots gif        --zone Z --out months.gif [--scale 2]

A class has the same colour in every figure: its nomenclature colour
(`prep/data/classes_<version>.csv`, the version the zones, the map or the metrics
name). Scores at tier 1 or 2 (--tier; `all` writes one figure per tier, OUT
with _tier1, _tier2, _tier3 before its extension) come from the `tiers` section
of metrics.json, with the tier's names. Maps are drawn with nearest-neighbour sampling, so the colours in the PNG are
exactly the nomenclature's. Pixels without a class: light grey where the RPG gives no
label, black where the imagery has no observation (no data), in maps and GIFs alike.
"""
from __future__ import annotations

import pathlib
import sys

import numpy as np

from cropcontracts.zonefolder import NO_LABEL
from cropcontracts import cli
from jaxcrop.figures import all_figures
from jaxcrop.figures.distribution import (plot_class_distribution, region_class_counts,
                                          zones_nomenclature)
from jaxcrop.figures.gif import GIF_MIN_WIDTH, monthly_gif
from jaxcrop.figures.readers import map_nomenclature, read_classes, read_metrics
from jaxcrop.figures.maps import plot_errors, plot_prediction
from jaxcrop.figures.scores import (plot_confusion, plot_metrics_confusion, plot_per_class_f1,
                                    tier_metrics)
from cropcontracts.errors import UserError
from cropcontracts.zonefolder import resolve_zones


def build_parser() -> cli.ArgumentParser:
  ap = cli.ArgumentParser(prog="python -m jaxcrop.plots", description=__doc__.split("\n")[0],
                          epilog="examples:\n" + __doc__.split("\n\n")[1])
  sub = ap.add_subparsers(dest="figure", required=True, metavar="figure")
  zone_help = "zone folder (prep), labelled except for prediction and gif"
  pred_help = "prediction folder OUT/<zone_id> of jaxcrop.predict"
  metrics_help = "W/eval/metrics.json of jaxcrop.evaluate"
  level_help = "with --metrics: pixel or parcel scores (default: %(default)s)"
  tier_help = ("with --metrics: the tier scored: 3 (classes), 2 (groups), 1 (families), "
               "or all (one figure per tier: OUT_tier1.png, OUT_tier2.png, OUT_tier3.png; "
               "default: %(default)s)")
  s = sub.add_parser("all", help="every figure: F1, confusion, distribution, per-zone maps "
                     "and GIFs", description="Every figure the inputs allow (what "
                     "./launch.sh demo shows); zones without labels get their GIF and "
                     "prediction map only.")
  s.add_argument("--zones", required=True, nargs="+", help="zone folders or their parent(s)")
  s.add_argument("--maps", help="OUT folder of jaxcrop.predict (per-zone map figures)")
  s.add_argument("--metrics", help=metrics_help + " (F1 and confusion figures)")
  s.add_argument("--out", required=True, help="folder for the figures")
  for name, text in (("prediction", "map of a zone, beside its labels when it has some"),
                     ("errors", "where a zone's map disagrees with its labels"),
                     ("confusion", "row-normalized confusion matrix, of a zone (--zone, "
                                   "--pred) or of an evaluation (--metrics)")):
    s = sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
    s.add_argument("--zone", help=zone_help)
    s.add_argument("--pred", help=pred_help)
    s.add_argument("--out", required=True, help="output PNG")
    if name == "confusion":
      s.add_argument("--metrics", help=metrics_help + " instead of --zone/--pred")
      s.add_argument("--level", default="pixel", choices=("pixel", "parcel"), help=level_help)
      s.add_argument("--tier", default="3", choices=TIER_CHOICES, help=tier_help)
  s = sub.add_parser("f1", help="per-class F1 bars of an evaluation",
                     description="Per-class F1 bars, model vs baseline, of an evaluation.")
  s.add_argument("--metrics", required=True, help=metrics_help)
  s.add_argument("--level", default="pixel", choices=("pixel", "parcel"), help=level_help)
  s.add_argument("--tier", default="3", choices=TIER_CHOICES, help=tier_help)
  s.add_argument("--out", required=True, help="output PNG")
  s = sub.add_parser("distribution", help="labelled pixels per class and region",
                     description="Labelled pixels per class and region of zone folders.")
  s.add_argument("--zones", required=True, nargs="+", help="zone folders or their parent(s)")
  s.add_argument("--out", required=True, help="output PNG")
  s = sub.add_parser("gif", help="animated monthly composites of a zone",
                     description="Animated GIF of a zone's monthly composites (true colour "
                                 "and NDVI).")
  s.add_argument("--zone", required=True, help="zone folder (prep)")
  s.add_argument("--out", required=True, help="output GIF")
  s.add_argument("--scale", type=int, default=None,
                 help=f"integer upscaling of the frames (default: the smallest giving "
                      f"frames of at least {GIF_MIN_WIDTH} px)")
  return ap


TIER_CHOICES = ("1", "2", "3", "all")


def tier_outputs(tier: str, out) -> list[tuple[int, pathlib.Path]]:
  """[(tier, file)] of a --tier choice: one tier → --out itself; all → --out
  with _tier1, _tier2, _tier3 before its extension."""
  out = pathlib.Path(out)
  if tier != "all":
    return [(int(tier), out)]
  return [(t, out.with_name(f"{out.stem}_tier{t}{out.suffix}")) for t in (1, 2, 3)]


def main(argv=None) -> int:
  return cli.main(build_parser(), _main, argv)


def check_out(out, figure: str) -> None:
  """Raises UserError on an --out that cannot take the figure, before any work."""
  out = pathlib.Path(out)
  if figure == "all":
    if out.exists() and not out.is_dir():
      raise UserError(f"{out}: --out is a file; `all` writes its figures into a folder")
    return
  if out.is_dir():
    raise UserError(f"{out}: --out is a folder; pass the figure's file, e.g. "
                    f"{out / (figure + ('.gif' if figure == 'gif' else '.png'))}")
  from matplotlib.figure import Figure
  formats = ["gif"] if figure == "gif" else sorted(Figure().canvas.get_supported_filetypes())
  if out.suffix.lower().lstrip(".") not in formats:
    hint = ".gif" if figure == "gif" else ".png, .pdf or .svg"
    raise UserError(f"{out}: unknown figure format {out.suffix or '(no extension)'}; end "
                    f"--out with {hint}")


def _main(args) -> int:
  check_out(args.out, args.figure)
  if args.figure == "all":
    outs = all_figures(resolve_zones(args.zones), args.out, maps=args.maps,
                       metrics=args.metrics)
    print(f"wrote {len(outs)} figures to {args.out}")
    return 0
  if args.figure in ("f1", "confusion") and args.metrics:
    metrics = read_metrics(args.metrics)
    for tier, out in tier_outputs(args.tier, args.out):
      m = tier_metrics(metrics, tier)
      if args.figure == "f1":
        print(f"wrote {plot_per_class_f1(m, out, level=args.level)}")
      else:
        print(f"wrote {plot_metrics_confusion(m, args.level, out)}")
    return 0
  print(f"wrote {_run(args)}")
  return 0


def _run(args) -> pathlib.Path:
  from cropcontracts.zonefolder import open_zone
  if args.figure == "distribution":
    zones = resolve_zones(args.zones)
    regions, counts, _ = region_class_counts(zones)
    return plot_class_distribution(regions, counts, args.out, nom=zones_nomenclature(zones))
  if not args.zone:
    raise UserError(f"{args.figure}: --zone is required")
  zone = open_zone(args.zone, require_labels=args.figure not in ("gif", "prediction"))
  if args.figure == "gif":
    return monthly_gif(zone.read_image(), zone.bands, zone.months, args.out, scale=args.scale)
  if not args.pred:
    raise UserError(f"{args.figure}: --pred OUT/<zone_id> is required")
  classes, version = read_classes(args.pred, zone)
  labels = zone.read_labels() if zone.has_labels else None
  nom = map_nomenclature(version, zone)
  if args.figure == "prediction":
    return plot_prediction(classes, labels, args.out, nom=nom, title=zone.zone_id)
  if args.figure == "errors":
    return plot_errors(classes, labels, args.out, title=zone.zone_id)
  from jaxcrop import metrics
  cm = metrics.confusion_matrix_np(np.where(classes != NO_LABEL, labels, NO_LABEL), classes,
                                   nom.num_classes)
  return plot_confusion(cm, nom.tier3, args.out, unit="pixels",
                        title=f"{zone.zone_id}, pixel level: confusion (rows: % of the "
                              f"true class)")


if __name__ == "__main__":
  sys.exit(main())
