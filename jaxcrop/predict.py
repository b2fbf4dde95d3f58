"""Crop-type maps of whole zones from a trained model: the command line.

  python -m jaxcrop.predict --workdir W --zone ZONES/chartres_2 --out maps
  python -m jaxcrop.predict --workdir W --zone ZONES --out maps --probs
  python -m jaxcrop.predict --workdir W --zone ZONES --out maps --tiers
  python -m jaxcrop.predict --workdir W --zone ZONES --zones-csv zones_fr.csv --out maps --resume
  python -m jaxcrop.predict --workdir W --zone ZONES/chartres_2 --out maps_june --until june

Many zones: every JAX process maps its share of the zones (`--process-index/--process-count`
override jax.process_index()/process_count()), imagery is read ahead on a thread and
maps written by another while the model runs, and with --resume the zones whose
output folder is complete are skipped (`jaxcrop.maps.runner`).

The parcel product takes its geometries from the zone folder (parcels.gpkg):
predict never reads the RPG. A labelled folder of format jaxcrop-zone/1, written
before prep labels stored them, is refused: rerun `python -m prep labels` for it.

Each zone is cut into fixed-shape overlapping tiles, blended without seams
(`jaxcrop.maps.tiling`), and written to `OUT/<zone_id>/` as Cloud-Optimized
GeoTIFFs with a QGIS style and, for labelled zones, the parcel product
(`jaxcrop.maps.geotiff`, `jaxcrop.maps.parcels`); see docs/predict.md. With
--tiers, also the tier-1 / tier-2 maps (the parents of the tier-3 map:
`jaxcrop.maps.tiling.tier_maps`). A model trained with per-month valid-observation
counts (model.valid_count) is given the zone's valid_count.tif, tiled like the
image. With --until MONTH, an in-season map: the model sees the season up to that
month only (`jaxcrop.in_season.cut_off`: later months masked, earlier gaps filled
again without them); map.json records the last month seen. A zone folder with
imagery and no labels (a season whose RPG is not out yet) gets its maps and no
scores. Everything is checked once, before any model work: the options, every zone
and its output folder, the checkpoint against the zones and the tile shape.
"""
from __future__ import annotations

import dataclasses
import pathlib
import sys

from cropcontracts import cli
from cropcontracts.errors import UserError
from cropcontracts.zonefolder import open_zone
from jaxcrop import calibrate, host_memory, in_season, release, season_shift
from jaxcrop.maps import compatibility, runner
from jaxcrop.maps.geotiff import check_output, write_outputs
from jaxcrop.maps.parcels import check_geometries_source
from jaxcrop.maps.tiling import (DEFAULT_BATCH, DEFAULT_OVERLAP, DEFAULT_TILE, MapSettings,
                                 ZoneMapper, read_imagery, score, zone_shifts)


def main(argv=None) -> int:
  ap = cli.ArgumentParser(
      prog="python -m jaxcrop.predict",
      description="Crop-type maps of zone folders: OUT/<zone_id>/classes.tif, "
                  "confidence.tif, [probabilities.tif], [classes_tier1.tif, "
                  "classes_tier2.tif], [parcels.gpkg] (Cloud-Optimized "
                  "GeoTIFFs on the zone grid; see docs/predict.md).")
  ap.add_argument("--workdir", required=True, help="training workdir (checkpoints)")
  ap.add_argument("--zone", required=True, nargs="+",
                  help="zone folder(s), or folder(s) of zone folders")
  ap.add_argument("--out", required=True, help="output folder: OUT/<zone_id>/")
  ap.add_argument("--checkpoint", default="best", choices=("best", "last"),
                  help="best validation macro-F1 (falls back to last) or the last one "
                       "(default: %(default)s)")
  ap.add_argument("--tile", type=int, default=DEFAULT_TILE,
                  help="tile side in pixels, one shape for all tiles and zones (with the "
                       "default overlap, 2 x 2 tiles cover a 1000-px zone exactly; a zone "
                       "smaller than a tile is padded; default: %(default)s)")
  ap.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP,
                  help="pixels shared by neighbouring tiles, blended with a cosine ramp "
                       "(default: %(default)s)")
  ap.add_argument("--batch", type=int, default=DEFAULT_BATCH,
                  help="tiles per model call; memory grows with batch x tile² (the "
                       "default model needs ~3 GB for one tile of 512²; default: "
                       "%(default)s)")
  ap.add_argument("--probs", action="store_true",
                  help="also write probabilities.tif: one uint8 band per class (named), "
                       "percent 0-100, 255 = nodata; with --tiers (a model with tier "
                       "heads) also probabilities_tier{1,2}.tif")
  ap.add_argument("--tiers", action="store_true",
                  help="also write classes_tier1.tif and classes_tier2.tif (+ .qml styles): "
                       "each pixel's tier-1 family / tier-2 group, the parents of its tier-3 "
                       "class in classes.tif (for a hierarchical model, its tier heads' "
                       "consistent decoding)")
  ap.add_argument("--until", metavar="MONTH", default=None,
                  help="an in-season map from the season up to MONTH (a name such as june, "
                       "or 1-12; a month of the season the model was trained on): the later "
                       "months are masked and never gap filled into earlier ones "
                       "(default: the whole season)")
  ap.add_argument("--overwrite", action="store_true",
                  help="replace existing OUT/<zone_id> folders")
  ap.add_argument("--resume", action="store_true",
                  help="skip zones whose OUT/<zone_id> is complete (map.json and its files, "
                       "with the --tiers / --probs files this command asks for; a map "
                       "without them is made again): rerun a killed or preempted run "
                       "with the same command")
  ap.add_argument("--zones-csv", default=None, metavar="CSV",
                  help="map only the zones of this zones table (e.g. `prep zones --country`), "
                       "found as folders <zone_id> under --zone")
  ap.add_argument("--process-index", type=int, default=None,
                  help="this process's share: every --process-count-th zone from this index "
                       "(default: jax.process_index())")
  ap.add_argument("--process-count", type=int, default=None,
                  help="processes sharing the zones (default: jax.process_count())")
  ap.add_argument("--prefetch", type=int, default=2,
                  help="zones read ahead on a thread while the model runs (default: "
                       "%(default)s)")
  return cli.main(ap, host_memory.first(_run), argv)


def _run(args) -> int:
  """Checks everything once (options, zones, output folders, checkpoint), then
  maps the zones: read, tile and blend (`ZoneMapper`), write."""
  settings = _options(args)                         # check: the options,
  month = None if args.until is None else in_season.parse_month(args.until)
  zones, replace = _zones_to_map(args)              # the zones and their output folders,
  trained, nom = _checkpoint(args, zones)           # the checkpoint against them,
  until = None if month is None else in_season.months_kept(trained.meta.months, month)
  settings = dataclasses.replace(
      settings, valid_count=_needs_valid_count(trained), until=until,
      align_season=bool(trained.config.data.get("align_season", False)))
  _check_probs(args, trained)
  temp = calibrate.temperature(args.workdir, getattr(trained, "step", None))
  from jaxcrop.models import inference_fn   # pylint: disable=g-import-not-at-top
  infer = inference_fn(trained.model)        # a flat hybrid: its encoder in pixel chunks
  apply_fn = lambda v, x, **inputs: infer(v, x, **inputs) / temp
  compatibility.check_tile(apply_fn, trained.variables, trained.meta, settings)  # the tile
  mapper = ZoneMapper(apply_fn, trained.variables, trained.meta, settings)
  if temp != 1.0:
    print(f"confidence and probabilities calibrated: temperature {temp:.4f} "
          f"({calibrate.FILE})")

  def write(z, pred):
    folder = write_outputs(z, pred, nom, args.out, overwrite=z.zone_id in replace,
                           model=_model_record(args, trained, temp),
                           until=None if until is None else z.months[until - 1])
    print(f"{z.zone_id}: wrote {', '.join(sorted(p.name for p in folder.iterdir()))} "
          f"in {folder}")
    _print_score(z, pred, trained.meta.class_names)

  shifts = None
  if settings.align_season:    # one shift per year and region of the zones mapped together
    shifts = zone_shifts(zones, trained.meta,
                         reference=season_shift.read_reference(args.workdir))
    print(f"season alignment (jaxcrop.season_shift): {shifts.summary(until)} months")
  runner.run_pipelined(zones, lambda z: read_imagery(z, settings, trained.meta, shifts),
                       lambda z, imagery: mapper(imagery, progress=len(zones) == 1), write,
                       prefetch=args.prefetch)
  return 0


def _options(args) -> MapSettings:
  """The mapping options (MapSettings checks them) and the --out / --resume ones."""
  settings = MapSettings(tile=args.tile, overlap=args.overlap, batch=args.batch,
                         probs=args.probs, tiers=args.tiers)
  if pathlib.Path(args.out).exists() and not pathlib.Path(args.out).is_dir():
    raise UserError(f"{args.out}: --out is a file; pass a folder (maps go to "
                    f"OUT/<zone_id>/)")
  if args.resume and args.overwrite:
    raise UserError("--resume keeps finished zones, --overwrite replaces them: pass one")
  return settings


def _zones_to_map(args) -> tuple[list, set]:
  """(this process's zones to map, opened, by id; the ids whose output folder may be
  replaced): its share of the zones, less those --resume finds complete; each
  zone's output folder and parcel geometries checked."""
  index, count = runner.process_share(args.process_index, args.process_count)
  folders = runner.zone_folders(args.zone, args.zones_csv)
  mine = set(runner.share(folders, index, count))
  out = pathlib.Path(args.out)
  required = runner.expected_files(tiers=args.tiers, probs=args.probs)
  month = None if args.until is None else in_season.parse_month(args.until)
  done = sorted(i for i in mine
                if args.resume and runner.is_complete(out / i, required, until=month))
  zones = [open_zone(folders[i]) for i in sorted(mine - set(done))]
  # --resume: a finished map that lacks what this command asks for (--tiers,
  # --probs, its --until) is mapped again and replaced; an unfinished one never
  # has a folder.
  redo = {z.zone_id for z in zones if args.resume and runner.is_complete(out / z.zone_id)}
  if count > 1 or done or redo:
    lacking = ", ".join(runner.missing_files([out / i for i in sorted(redo)], required)
                        + runner.other_cut_offs([out / i for i in sorted(redo)], month))
    print(f"process {index} of {count}: {len(mine)} of {len(folders)} zones, "
          f"{len(done)} already complete, {len(zones)} to map"
          + (f" ({len(redo)} mapped before without {lacking})" if redo else ""),
          file=sys.stderr)
  replace = {z.zone_id for z in zones} if args.overwrite else redo
  for z in zones:
    check_output(out / z.zone_id, z.zone_id in replace)
    check_geometries_source(z)
  return zones, replace


def _checkpoint(args, zones):
  """(the trained model of --workdir, its nomenclature table), checked against this
  code's table and every zone."""
  from jaxcrop.checkpoint import load_trained
  release.verify(args.workdir)          # a model release (jaxcrop.export): its manifest
  try:
    trained = load_trained(args.workdir, which=args.checkpoint)
  except FileNotFoundError as e:
    raise UserError(f"--workdir {args.workdir}: {e}") from None
  nom = compatibility.checkpoint_nomenclature(trained.meta, args.workdir)
  for z in zones:
    compatibility.check_compatible(z, trained.meta)
  return trained, nom


def _model_record(args, trained, temp: float) -> dict:
  """What map.json and the STAC Item say of the model that made the map."""
  meta = trained.meta
  return {"checkpoint": args.checkpoint, "step": getattr(trained, "step", None),
          "dataset": getattr(meta, "builder_config", "") or None,
          "dataset_version": getattr(meta, "version", None),
          "nomenclature": getattr(meta, "nomenclature_version", None), "temperature": temp}


def _check_probs(args, trained) -> None:
  """--probs with --tiers asks for the tier heads' probabilities: a flat model has none."""
  from jaxcrop.models import head_kind
  kind = head_kind(trained.config.model)
  if args.probs and args.tiers and kind != "hierarchical":
    raise UserError(f"--probs with --tiers: the model of --workdir {args.workdir} has no tier "
                    f"heads (model.head.kind={kind}); pass --probs or --tiers alone, or "
                    f"train with configs/hybrid.py:hierarchical")


def _needs_valid_count(trained) -> bool:
  from jaxcrop.models import needs_valid_count
  return needs_valid_count(trained.config.model)


def _print_score(zone, pred, class_names) -> None:
  s = score(zone, pred, class_names)
  if s:
    print(f"{zone.zone_id}: pixel accuracy {s['overall_accuracy']:.3f}, macro-F1 "
          f"{s['macro_f1']:.3f} over {s['num_pixels']} labelled pixels")
    area = s["agricultural_area"]
    if area:
      print(f"{zone.zone_id}: agricultural area IoU {area['iou']:.3f}, precision "
            f"{area['precision']:.3f}, recall {area['recall']:.3f} (macro-F1 above: the crop "
            f"classes, {s['background']['name']} excluded)")


if __name__ == "__main__":
  sys.exit(main())
